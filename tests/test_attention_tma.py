"""The TMA (tensor-descriptor) attention forward against a float64 reference, and the path choice.

The interpreter runs host tensor descriptors with the hardware's bounds (rows past T and columns past D
of one (batch, head) slice load as zeros, stores past them are dropped), so the forced TMA path is
checked on CPU. Tolerance rule as in test_attention.py: the kernel's max error vs fp64 may be at most
2x that of a naive PyTorch attention in the same dtype, plus a small atol. Output buffers are poisoned
with NaN, so an unwritten element fails. Path choice is tested with mocked capability and Triton version.
"""

from __future__ import annotations

import pytest
import torch
from attention_reference import naive

import tritongpt.kernels.flash_attention as fa
import tritongpt.kernels.flash_attention_tma as ft
from tritongpt.kernels import launch, tma

# On a Triton without tensor descriptors (3.3) the TMA kernel cannot even be built; the choice of the
# pointer path there is tested with the version mocked (test_path_choice_by_device_and_triton).
pytestmark = [
    pytest.mark.kernel,
    pytest.mark.usefixtures("poison_attention"),
    pytest.mark.skipif(not tma.descriptors_available(), reason="the TMA path needs Triton >= 3.4 tensor descriptors"),
]

ATOL = {torch.float16: 1e-3, torch.bfloat16: 1e-2}
LSE_ATOL = 1e-4  # LSE is fp32 math on exact low-precision inputs


@pytest.fixture
def device_as(monkeypatch: pytest.MonkeyPatch):
    """``device_as(capability, version)``: pretend the tensors sit on such a GPU under such a Triton."""

    def pretend(capability, version=(3, 9)):
        monkeypatch.setattr(tma, "device_capability", lambda device: capability)
        monkeypatch.setattr(tma, "triton_version", lambda: version)

    return pretend


def _err(a, ref):
    return (a.double() - ref).abs().max().item()


def check_forward(q, k, v, causal, out, lse):
    """``out``, ``lse`` of the kernel vs fp64, with the 2x-PyTorch rule for ``out``."""
    scale = q.shape[-1] ** -0.5
    ref, ref_lse = naive(q.double(), k.double(), v.double(), causal, scale)
    low, _ = naive(q, k, v, causal, scale)
    assert out.dtype == q.dtype and out.shape == q.shape and out.is_contiguous()
    assert not torch.isnan(out).any() and not torch.isnan(lse).any(), "unwritten (NaN) elements"
    atol = ATOL[q.dtype] * max(1.0, ref.abs().max().item())
    assert _err(out, ref) <= 2 * _err(low, ref) + atol
    assert _err(lse, ref_lse) <= LSE_ATOL * max(1.0, ref_lse.abs().max().item())


def _qkv(b, h, tq, tk, d, dtype, device="cpu"):
    return tuple(torch.randn(b, h, t, d, dtype=dtype, device=device) for t in (tq, tk, tk))


@pytest.fixture
def tma_device(device):
    """The test device, where it can run the TMA path (the interpreter, or sm_90 / sm_100)."""
    if device == "cuda" and ft.tma_target(torch.cuda.get_device_capability()) is None:
        pytest.skip("this GPU has no TMA path")
    return device


# Mocked capabilities only make sense where kernels run on the interpreter (a real GPU compiles for itself).
interpreter_only = pytest.mark.skipif(torch.cuda.is_available(), reason="mocks the device capability")


def _tma_forward(q, k, v, causal):
    return fa.attention_fwd_launch(q, k, v, causal, q.shape[-1] ** -0.5, path="tma")


SHAPES = [
    # (B, H, Tq, Tk, D, causal)
    (2, 3, 100, 100, 64, True),  # ragged T: two query blocks, the second clipped per (batch, head) slice
    (1, 2, 17, 100, 40, True),  # Tq < Tk (prefill after a cache), D=40 zero-filled to BLOCK_D=64
    (2, 2, 1, 1, 16, True),  # T=1
    (1, 2, 100, 17, 64, False),  # non-causal, Tq > Tk, prime-ish Tk
    (1, 1, 64, 96, 16, False),  # non-causal, both T multiples of the blocks (no ragged tail)
    (1, 1, 40, 70, 128, True),  # D=128 once, small T
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_tma_forward_matches_reference(shape, dtype, tma_device):
    b, h, tq, tk, d, causal = shape
    q, k, v = _qkv(b, h, tq, tk, d, dtype, tma_device)
    check_forward(q, k, v, causal, *_tma_forward(q, k, v, causal))


def test_tma_forward_packed_qkv_view(tma_device):
    """q, k, v as permuted views of one (B, T, 3, H, D) projection: strides are 16-byte multiples, no copy."""
    qkv = torch.randn(2, 37, 3, 2, 32, dtype=torch.float16, device=tma_device)
    q, k, v = (qkv[:, :, i].permute(0, 2, 1, 3) for i in range(3))
    assert not q.is_contiguous() and tma.tma_unfit(k, [1, 1, 64, 32]) is None
    check_forward(q, k, v, True, *_tma_forward(q, k, v, True))


@pytest.mark.filterwarnings("ignore:overflow encountered in exp2:RuntimeWarning")  # masked lanes, by design
def test_tma_very_negative_lse_no_nan(tma_device):
    """Keys past Tk load as zeros (score 0): they must be masked, or exp(0 - lse) overflows for rows
    whose LSE is far below -88."""
    q = (10 + 0.1 * torch.randn(1, 1, 5, 16, device=tma_device)).half()
    k = (-3 + 0.1 * torch.randn(1, 1, 7, 16, device=tma_device)).half()
    v = torch.randn(1, 1, 7, 16, device=tma_device).half()
    out, lse = fa.attention_fwd_launch(q, k, v, False, 0.25, path="tma")
    _, ref_lse = naive(q.double(), k.double(), v.double(), False, 0.25)
    assert not torch.isnan(out).any() and (lse.double() - ref_lse).abs().max() < 1e-3


@interpreter_only
def test_tma_forward_warp_specialized_loop(device_as):
    """On sm_100 (mocked) the key loop is the warp-specialized tl.range: same results."""
    device_as((10, 0))
    assert ft.use_warp_specialize((10, 0)) and not ft.use_warp_specialize((9, 0))
    assert not ft.use_warp_specialize((10, 0), version=(3, 8))
    q, k, v = _qkv(1, 2, 70, 70, 64, torch.float16)
    check_forward(q, k, v, True, *fa.attention_fwd_launch(q, k, v, True, 0.125))


@interpreter_only
def test_autograd_through_tma_forward(device_as, monkeypatch):
    """attention() on a (mocked) sm_90 takes the TMA forward; its gradients still match fp64."""
    device_as((9, 0))
    calls = []
    launch = ft.attention_fwd_tma_launch
    monkeypatch.setattr(ft, "attention_fwd_tma_launch", lambda *a, **kw: calls.append(1) or launch(*a, **kw))
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 40, 40, 64, torch.float16))
    do = torch.randn(1, 2, 40, 64, dtype=torch.float16)
    fa.attention(q, k, v, causal=True).backward(do)
    assert calls, "the forward did not take the TMA path"
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    naive(*leaves, True, 64 ** -0.5)[0].backward(do.double())
    lows = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    naive(*lows, True, 64 ** -0.5)[0].backward(do)
    for got, ref, low in zip((q, k, v), leaves, lows, strict=True):
        atol = ATOL[torch.float16] * max(1.0, ref.grad.abs().max().item())
        assert _err(got.grad, ref.grad) <= 2 * _err(low.grad, ref.grad) + atol


def _path(q, k=None, v=None, path=None, causal=True):
    k = q if k is None else k
    v = k if v is None else v
    out = torch.empty(q.shape, dtype=q.dtype)
    return ft.fwd_path(q, k, v, out, causal, launch.block_d(q.shape[-1]), path)


def _t(*shape, dtype=torch.float16):
    return torch.randn(*shape).to(dtype)


@pytest.mark.parametrize("capability, version, want", [
    (None, (3, 9), tma.POINTER),  # CPU / the interpreter: the pointer path unless forced
    ((8, 0), (3, 9), tma.POINTER),  # A100: no TMA
    ((9, 0), (3, 3), tma.POINTER),  # Triton 3.3: no tensor descriptors
    ((9, 0), (3, 9), tma.TMA),
    ((10, 0), (3, 9), tma.TMA),
    ((12, 0), (3, 9), tma.POINTER),  # sm_120: TMA, but no checked config table
])
def test_path_choice_by_device_and_triton(capability, version, want, device_as):
    device_as(capability, version)
    assert _path(_t(1, 2, 128, 64)) == want


def test_forced_config_keeps_the_pointer_path_unless_tma_is_asked(device_as):
    device_as((9, 0))
    q, cfg = _t(1, 2, 128, 64), ft._TMA_FWD_CONFIGS[0]
    out = torch.empty_like(q)
    assert ft.fwd_path(q, q, q, out, True, 64, None, cfg) == tma.POINTER
    assert ft.fwd_path(q, q, q, out, True, 64, "tma", cfg) == tma.TMA


@pytest.mark.parametrize("make, why", [
    (lambda: _t(1, 2, 64, 36), "D=36: rows of 72 B"),
    (lambda: _t(2 * 64 * 64 + 1)[1:].view(1, 2, 64, 64), "base not 16-byte aligned"),
    (lambda: _t(1, 2, 64, 64, dtype=torch.float32), "fp32: pointer path (IEEE dots)"),
    (lambda: _t(1, 2, 64, 32), "D=32: no TMA config ships for BLOCK_D 32"),
])
def test_path_choice_falls_back_to_pointer(make, why, device_as):
    device_as((9, 0))
    assert _path(make()) == tma.POINTER, why


def test_forced_tma_on_unfit_tensors_raises(device_as):
    bad = _t(2 * 64 * 64 + 1)[1:].view(1, 2, 64, 64)
    with pytest.raises(ValueError, match="q: base address is not 16-byte aligned"):
        fa.attention_fwd_launch(bad, _t(1, 2, 64, 64), _t(1, 2, 64, 64), True, 0.125, path="tma")
    with pytest.raises(ValueError, match="output .* not a multiple of 16 bytes"):
        _path(_t(1, 2, 64, 40)[..., :36], path="tma")  # q's rows are 80 B apart, the output's 72 B
    with pytest.raises(ValueError, match="fp16/bf16"):
        _path(_t(1, 2, 64, 64, dtype=torch.float32), path="tma")
    with pytest.raises(ValueError, match="path"):
        fa.attention_fwd_launch(*_qkv(1, 1, 4, 4, 16, torch.float16), True, 0.25, path="TMA")
    device_as((8, 0))
    with pytest.raises(ValueError, match="sm_80 has no checked TMA config table"):
        _path(_t(1, 2, 64, 64), path="tma")
    assert _path(bad, path="pointer") == tma.POINTER


class _Desc:
    def __init__(self):
        self.base, self.block_shape = torch.empty(0), None


@pytest.mark.parametrize("capability, tq, d, causal", [((9, 0), 256, 128, True), ((10, 0), 256, 128, True),
                                                       ((10, 0), 100, 64, False), ((9, 0), 100, 64, True)])
def test_prune_and_pre_hook_follow_the_table(capability, tq, d, causal, device_as):
    device_as(capability)
    configs = ft._attn_fwd_tma_tuned.configs
    kept = ft._prune(configs, {"desc_q": _Desc(), "TQ": tq, "TK": tq}, {"BLOCK_D": d, "CAUSAL": causal})
    target = ft.tma_target(capability)
    want = [t for t in ft._TMA_FWD_CONFIGS if target in t.archs_for(d, False, tq % 128 != 0, causal)]
    assert len(kept) == len(want) > 0
    assert ((128, 128) in {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kept}) == (target == 90 or d <= 64)
    nargs = {f"desc_{n}": _Desc() for n in "qkvo"} | {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_D": d}
    kept[0].pre_hook(nargs)
    assert nargs["desc_q"].block_shape == nargs["desc_o"].block_shape == [1, 1, 128, d]
    assert nargs["desc_k"].block_shape == nargs["desc_v"].block_shape == [1, 1, 64, d]
    assert {"T_EVEN", "DTYPE", "TQ_BUCKET", "TK_BUCKET"} <= set(ft.TMA_AUTOTUNE_KEY)


def test_variants_cover_every_shipped_form():
    """One compiled form per (config, D, causality) serves even and ragged T (the integers are not
    specialised), on each target the table ships it for, split where warp specialization differs."""
    vs = ft.tma_fwd_variants()
    assert len({v.name for v in vs}) == len(vs)
    forms = {(v.tags["D"], v.tags["causal"], cc) for v in vs for cc in v.archs}
    assert forms == {(d, c, cc) for d in (64, 128) for c in (True, False) for cc in (90, 100)}
    assert {v.tags["dtype"] for v in vs} == {"fp16", "bf16"}
    for v in vs:
        assert set(v.archs) <= {90, 100} and v.expect_mma and v.expect_tma and v.tags["kernel"] == "fwd_tma"
        assert v.tags["even"] is None and v.tags["divisible_by_16"] == ["LSE"]
        assert v.constexprs["WARP_SPEC"] == (v.archs == (100,) and ft.use_warp_specialize((10, 0)))
        assert v.signature["desc_q"] == f"tensordesc<{v.tags['dtype']}[1, 1, {v.tags['block_m']}, {v.tags['D']}]>"
        cfg = next(t for t in ft._TMA_FWD_CONFIGS if (t.block_m, t.block_n, t.num_warps, t.num_stages) ==
                   (v.constexprs["BLOCK_M"], v.constexprs["BLOCK_N"], v.num_warps, v.num_stages))
        assert set(v.archs) <= set(cfg.archs_for(v.tags["D"], causal=v.tags["causal"]))


@pytest.mark.slow
def test_tma_forward_compiles_for_hopper_and_blackwell():
    """The D=128 8-warp tiles, causal fp16 (128x128 on sm_90a, 128x64 warp-specialized on sm_100a),
    compiled without a GPU in clean worker processes (no TRITON_INTERPRET): no spills, fits, wgmma on
    sm_90a / tcgen05 on sm_100a, and TMA loads (bench.static_check's absolute rules)."""
    from tritongpt.bench import static_check as ins

    def pick(bm, bn, cc):
        return next(v for v in ft.tma_fwd_variants() if cc in v.archs and v.tags["D"] == 128 and v.tags["causal"]
                    and v.num_warps == 8 and (v.constexprs["BLOCK_M"], v.constexprs["BLOCK_N"]) == (bm, bn))

    pairs = [(pick(128, 128, 90), 90), (pick(128, 64, 100), 100)]
    assert all(v.expect_tma and v.wants_wgmma for v, _ in pairs)
    findings = ins.check_pairs(pairs, "tritongpt.kernels.flash_attention_tma:tma_fwd_variants")
    assert not findings, "\n".join(map(str, findings))
