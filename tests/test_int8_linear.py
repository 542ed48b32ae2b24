"""Weight-only int8 linear (kernels/int8_linear.py) against an fp64 reference on the dequantized weight.

Tolerance rule (as the other kernel tests): the kernel's max error vs fp64 may be at most 2x the error of
PyTorch's ``F.linear`` on the dequantized weight in the same dtype, plus a small atol scaled by the output's
magnitude. The output buffer is poisoned with NaN, so an element nobody writes fails.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch
import torch.nn.functional as F
from linear_reference import tf32

from tritongpt.kernels import int8_linear, launch
from tritongpt.kernels.interpreter import interpreter_enabled

pytestmark = pytest.mark.kernel

# The package exports the function under the module's name: fetch the module itself.
il = importlib.import_module("tritongpt.kernels.int8_linear")

ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DT_IDS = ["float32", "float16", "bfloat16"]


@pytest.fixture(autouse=True)
def _poison(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "alloc", lambda shape, dtype, device: torch.full(shape, float("nan"), dtype=dtype,
                                                                                   device=device))


def _make(m, n, k, dtype, device, bias=True):
    x = torch.randn(m, k, dtype=dtype, device=device)
    w8 = torch.randint(-127, 128, (n, k), dtype=torch.int8, device=device)
    scale = (torch.rand(n, device=device) + 0.5) / (127 * k**0.5)  # outputs of order 1
    b = torch.randn(n, dtype=dtype, device=device) if bias else None
    return x, w8, scale, b


def check(y, x, w8, scale, b):
    w = w8.double() * scale.double()[:, None]
    ref = F.linear(x.double(), w, None if b is None else b.double())
    with tf32(x.dtype == torch.float32):  # the kernel's fp32 runs on TF32 tensor cores on GPUs
        low = F.linear(x, w.to(x.dtype), b)
    assert y.dtype == x.dtype and y.shape == ref.shape
    assert not torch.isnan(y).any(), "NaN (unwritten or bad) elements"
    if ref.numel() == 0:
        return
    err, torch_err = (y.double() - ref).abs().max().item(), (low.double() - ref).abs().max().item()
    atol = ATOL[x.dtype] * max(1.0, ref.abs().max().item())
    assert err <= 2 * torch_err + atol, f"max error {err:.3g} vs PyTorch {torch_err:.3g}"


# Deliberately odd shapes: M = 1 (decode), primes, K below / past one reduction block, N not a tile multiple.
SHAPES = [(1, 37, 45), (1, 64, 64), (5, 70, 99), (17, 33, 130), (40, 50, 64)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("m, n, k", SHAPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_matches_reference(m, n, k, bias, dtype, device):
    x, w8, scale, b = _make(m, n, k, dtype, device, bias)
    check(int8_linear(x, w8, scale, b), x, w8, scale, b)


def test_leading_dims_strides_and_empty(device):
    x, w8, scale, b = _make(6, 20, 24, torch.float16, device)
    x3 = x.view(2, 3, 24)
    y = int8_linear(x3, w8, scale, b)
    assert y.shape == (2, 3, 20)
    check(y.view(6, 20), x, w8, scale, b)
    # A row-strided view (rows not a multiple of 16 elements: the unaligned form) and a strided weight.
    wide = torch.randn(6, 31, dtype=torch.float16, device=device)
    w_wide = torch.randint(-127, 128, (20, 29), dtype=torch.int8, device=device)
    check(int8_linear(wide[:, :24], w_wide[:, 5:], scale, b), wide[:, :24], w_wide[:, 5:], scale, b)
    empty = int8_linear(x[:0], w8, scale, b)
    assert empty.shape == (0, 20)


def test_backward_through_x_and_bias(device):
    x, w8, scale, b = _make(7, 12, 40, torch.float32, device)
    x.requires_grad_()
    b.requires_grad_()
    dy = torch.randn(7, 12, device=device)
    int8_linear(x, w8, scale, b).backward(dy)
    w = (w8.double() * scale.double()[:, None])
    torch.testing.assert_close(x.grad.double(), dy.double() @ w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.grad, dy.sum(0))


def test_opcheck(device):
    x, w8, scale, b = _make(5, 16, 32, torch.float32, device)
    torch.library.opcheck(torch.ops.tritongpt.int8_linear.default, (x.requires_grad_(), w8, scale, b),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


def test_torch_compile_fullgraph(device):
    x, w8, scale, b = _make(3, 16, 32, torch.float16, device)
    out = torch.compile(lambda *a: int8_linear(*a) * 2, fullgraph=True, backend="aot_eager")(x, w8, scale, b)
    check(out / 2, x, w8, scale, b)


def _bad_cases(device):
    x, w8, scale, b = _make(3, 8, 16, torch.float32, device)
    return [
        ((x.long(), w8, scale, b), TypeError, r"x: expected dtype in"),
        ((x, w8.float(), scale, b), TypeError, r"weight_int8: expected dtype in \(int8\)"),
        ((x, w8[:, :8], scale, b), ValueError, r"weight_int8: expected shape \(N, 16\)"),
        ((x, w8[0], scale, b), ValueError, r"weight_int8: expected a 2-D tensor"),
        ((x, w8, scale.half(), b), TypeError, r"scale: expected dtype in \(float32\)"),
        ((x, w8, scale[:5], b), ValueError, r"scale: expected shape \(8,\)"),
        ((x, w8, scale, b.half()), TypeError, r"bias: dtype torch.float16 does not match x dtype"),
        ((x, w8, scale, b[:3]), ValueError, r"bias: expected shape \(8,\)"),
        ((x.t().contiguous().t(), w8, scale, b), ValueError, r"x: the last dimension must be contiguous"),
        ((x[:, :0], w8[:, :0], scale, b), ValueError, r"x: the reduction dim K must be >= 1"),
        ((x, w8, scale.clone().requires_grad_(), b), ValueError, r"scale: int8_linear is differentiable in x"),
        (("x", w8, scale, b), TypeError, r"x: expected a torch.Tensor, got str"),
    ]


@pytest.mark.parametrize("case", range(12))
def test_bad_input(case, device):
    args, exc, msg = _bad_cases(device)[case]
    with pytest.raises(exc, match=msg):
        int8_linear(*args)


@pytest.mark.parametrize("bucket, want", [(1, {16}), (16, {16}), (32, {16, 32}), (64, {16, 32, 64}),
                                          (128, {64, 128}), (4096, {64, 128})])
def test_tiles_per_m_bucket(bucket, want):
    """Decode buckets keep tiles no taller than the bucket (16 at least), prefill buckets the 64/128-row ones."""
    got = {c.block_m for c in il.CONFIGS if c.form == "aligned" and il._bucket_fits(c, bucket)}
    assert got == want


def test_variants_cover_every_shipped_tile():
    # The table as shipped by the newest Triton: an older one's spill entries prune it (tested with spills).
    vs = getattr(il.variants, "__wrapped__", il.variants)()
    assert len({v.name for v in vs}) == len(vs)
    for cfg in il.CONFIGS:
        for dt in ("fp16", "bf16", "fp32"):
            mine = [v for v in vs if v.constexprs["BLOCK_N"] == cfg.block_n and v.constexprs["BLOCK_M"] == cfg.block_m
                    and v.constexprs["BLOCK_K"] == cfg.block_k and v.tags["dtype"] == dt]
            assert len(mine) == 1
            es = 4 if dt == "fp32" else 2
            assert set(mine[0].archs) == {cc for cc in (80, 89, 90) if cfg.ships(cc, dt)
                                          and il.smem_estimate(cfg, es) <= il.SMEM_LIMIT[cc]}
            assert mine[0].tags["aligned"] == (cfg.form == "aligned")


@pytest.mark.skipif(not interpreter_enabled(), reason="interpreter-only behaviour")
def test_interpreter_int8_to_bf16_cast_needs_the_workaround(device):
    """Triton 3.9's interpreter turns an int8 -> bf16 cast into a bit reinterpretation, hence the kernel's
    detour through fp32 (which the bf16 cases above show to be right). If this starts failing, the
    interpreter was fixed: drop the detour in ``_int8_linear_kernel``."""
    import triton
    import triton.language as tl

    @triton.jit
    def cast(X, Y):
        r = tl.arange(0, 16)
        tl.store(Y + r, tl.load(X + r).to(tl.bfloat16))

    x = torch.arange(-8, 8, dtype=torch.int8)
    y = torch.empty(16, dtype=torch.bfloat16)
    cast[(1,)](x, y)
    assert not torch.equal(y, x.to(torch.bfloat16))


@pytest.mark.skipif(os.environ.get("TRITONGPT_SKIP_AOT") == "1", reason="AOT checks disabled")
def test_aot_representative_spill_free():
    """A decode tile (masked K, fp16 and bf16) and the prefill tile compile for sm_80 and sm_90a without spills
    and on tensor cores (shared AOT inspector, cached on disk by kernel source)."""
    from tritongpt.bench import static_check as ins

    picked = [v for v in il.variants() if v.tags["aligned"] and (
        v.constexprs["BLOCK_M"] == 16 and v.constexprs["BLOCK_N"] == 64 and v.tags["dtype"] in ("fp16", "bf16")
        or v.constexprs["BLOCK_M"] == 128 and v.tags["dtype"] == "fp16")]
    assert len(picked) == 3
    pairs = [(v, cc) for v in picked for cc in (80, 90)]
    findings = ins.check_pairs(pairs, "tritongpt.kernels.int8_linear:variants")
    assert not findings, "\n".join(map(str, findings))
