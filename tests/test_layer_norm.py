"""LayerNorm (+ fused residual) kernels: forward, every gradient, edge cases, torch.compile, AOT.

Reference: fp64 LayerNorm of the same low-precision inputs. Tolerance rule: the kernel's max
error may be at most 2x that of PyTorch's own F.layer_norm run in the same dtype, plus a small
atol scaled by the reference's magnitude.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritongpt.kernels import launch
from tritongpt.kernels import layernorm as ln
from tritongpt.kernels.layernorm import layer_norm

pytestmark = pytest.mark.kernel

ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]

@pytest.fixture(autouse=True)
def _poison_outputs(monkeypatch):
    """Every buffer the launchers allocate starts as NaN, so an unwritten element shows."""

    def full_of_nan(shape, dtype, device):
        return torch.empty(shape, dtype=dtype, device=device).fill_(float("nan"))

    monkeypatch.setattr(launch, "alloc", full_of_nan)


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _assert_rule(name: str, out: torch.Tensor, ref: torch.Tensor, torch_low: torch.Tensor, dtype) -> None:
    ref = ref.double()
    err = (out.double() - ref).abs().max().item() if ref.numel() else 0.0
    terr = (torch_low.double() - ref).abs().max().item() if ref.numel() else 0.0
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    assert err <= 2 * terr + ATOL[dtype] * scale, f"{name}: err {err:.3e} > 2 x torch {terr:.3e} + atol"


def _run_and_check(x, residual, weight, bias, eps=1e-5, dtype=None) -> None:
    """Forward + backward through the kernel, torch in x's dtype, and fp64; compare all."""
    dtype = dtype or x.dtype
    n = x.shape[-1]
    leaves = [t for t in (x, residual, weight, bias) if t is not None]
    for t in leaves:
        t.requires_grad_(True)
    out = layer_norm(x, weight, bias, eps, residual=residual)
    y, h = out if residual is not None else (out, None)
    assert y.shape == x.shape and y.dtype == x.dtype
    dy = torch.randn(x.shape, device=x.device).to(dtype)
    dh = torch.randn(x.shape, device=x.device).to(dtype) if residual is not None else None
    grads_k = torch.autograd.grad(
        [y] + ([h] if h is not None else []), leaves, [dy] + ([dh] if dh is not None else [])
    )

    # h is exactly torch's x + residual in x's dtype; both references normalise that h.
    h_ref = (x + residual).detach() if residual is not None else x.detach()
    if h is not None:
        assert h.shape == x.shape and h.dtype == x.dtype
        assert torch.equal(h, h_ref), "h differs from torch's x + residual"

    def ref(prec):
        ins = {"h": h_ref.to(prec).requires_grad_(True)}
        if weight is not None:
            ins["w"] = weight.detach().to(prec).requires_grad_(True)
        if bias is not None:
            ins["b"] = bias.detach().to(prec).requires_grad_(True)
        yl = F.layer_norm(ins["h"], (n,), ins.get("w"), ins.get("b"), eps)
        loss = (yl.double() * dy.double()).sum()
        if dh is not None:
            loss = loss + (ins["h"].double() * dh.double()).sum()
        return yl, dict(zip(ins, torch.autograd.grad(loss, list(ins.values())), strict=True))

    y64, g64 = ref(torch.float64)
    ylow, glow = ref(dtype)
    _assert_rule("y", y, y64, ylow, dtype)
    got = dict(
        zip(
            [
                k
                for k, t in zip(["x", "r", "w", "b"], (x, residual, weight, bias), strict=True)
                if t is not None
            ],
            grads_k,
            strict=True,
        )
    )
    _assert_rule("dx", got["x"], g64["h"], glow["h"], dtype)
    assert got["x"].dtype == x.dtype
    if residual is not None:
        assert torch.equal(got["r"], got["x"])  # d_residual = d_x
    if weight is not None:
        assert got["w"].dtype == weight.dtype
        _assert_rule("dweight", got["w"], g64["w"], glow["w"], dtype)
    if bias is not None:
        assert got["b"].dtype == bias.dtype
        _assert_rule("dbias", got["b"], g64["b"], glow["b"], dtype)


def _params(n, dtype, device, wdtype=None):
    wdtype = wdtype or dtype
    w = (1 + 0.5 * torch.randn(n, device=device)).to(wdtype)
    b = (0.5 * torch.randn(n, device=device)).to(wdtype)
    return w, b


# ------------------------------------------------------------------------------------------------
# Correctness
# ------------------------------------------------------------------------------------------------

# Odd shapes on purpose: N=1 (degenerate), 96 (< one warp's vector), 768 (GPT-2), 1000 and 3000
# (not powers of two: masked tails); leading dims (M,), (B, T), (2, 3, 5); prime row counts.
SHAPES = [(7, 1), (2, 3, 96), (2, 3, 5, 768), (11, 1000), (3, 3000)]


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
def test_forward_backward(dtype, shape, residual, device):
    n = shape[-1]
    x = (torch.randn(shape, device=device) * 2 + 0.3).to(dtype)
    r = torch.randn(shape, device=device).to(dtype) if residual else None
    # Mixed precision (fp32 params with fp16/bf16 activations) on the residual cases.
    w, b = _params(n, dtype, device, torch.float32 if residual else dtype)
    _run_and_check(x, r, w, b)


@pytest.mark.parametrize("with_w,with_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_weight_bias_none(with_w, with_b, residual, device):
    dtype, n = torch.float16, 96
    x = torch.randn(5, n, device=device).to(dtype)
    r = torch.randn(5, n, device=device).to(dtype) if residual else None
    w, b = _params(n, dtype, device)
    _run_and_check(x, r, w if with_w else None, b if with_b else None)


def test_one_dim_input(device):
    x = torch.randn(300, device=device).to(torch.bfloat16)
    _run_and_check(x, None, *_params(300, torch.bfloat16, device))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_noncontiguous_views(dtype, device):
    n = 100
    wide = torch.randn(2, 6, 2 * n + 3, device=device).to(dtype)
    x = wide[..., 1 : n + 1]  # slice along the last dim: row stride 2n+3, handled without a copy
    r = torch.randn(6, 2, n, device=device).to(dtype).transpose(0, 1)  # transposed leading dims
    assert not x.is_contiguous() and not r.is_contiguous()
    _run_and_check(x, r, *_params(n, dtype, device, torch.float32))


def test_row_stride_view_not_copied(device, monkeypatch):
    """A sliced input reaches the kernel as a strided view (no hidden .contiguous())."""
    n = 64
    wide = torch.randn(4, 3 * n, device=device)
    x = wide[:, n : 2 * n]
    seen = {}
    real = ln._as_rows

    def spy(t, cols):
        out = real(t, cols)
        seen.setdefault("ptr", out.data_ptr())
        return out

    monkeypatch.setattr(ln, "_as_rows", spy)
    y = layer_norm(x, None, None)
    assert seen["ptr"] == x.data_ptr()
    torch.testing.assert_close(y, F.layer_norm(x, (n,)), atol=1e-5, rtol=1e-5)


def test_expanded_grad(device):
    """grad_y from y.sum() arrives with stride 0 in every dim."""
    x = torch.randn(3, 50, device=device, requires_grad=True)
    w, b = _params(50, torch.float32, device)
    layer_norm(x, w, b).sum().backward()
    x2 = x.detach().double().requires_grad_(True)
    F.layer_norm(x2, (50,), w.double(), b.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), x2.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("n", [300, 1000])
def test_looped_variants(dtype, n, device, monkeypatch):
    """Force the looped forward/backward (used above 8192 / 4096) on small rows: several chunks
    with a masked tail, Chan merging, h read back, per-row projections."""
    monkeypatch.setattr(ln, "MAX_FUSED_N", 64)
    monkeypatch.setattr(ln, "MAX_FUSED_N_BWD", 64)
    monkeypatch.setattr(ln, "LOOP_BLOCK_N", 128)
    monkeypatch.setattr(ln, "LOOP_BLOCK_N_BWD", 256)
    assert ln._fwd_config(n)[0] and ln._bwd_config(n)[0]
    x = (torch.randn(7, n, device=device) * 3 + 5).to(dtype)
    r = torch.randn(7, n, device=device).to(dtype)
    _run_and_check(x, r, *_params(n, dtype, device, torch.float32))


def test_hidden_8192(device):
    """The largest forward block kept whole in registers that the test budget allows; the
    backward at this size takes the looped path."""
    n = 8192
    x = torch.randn(3, n, device=device).to(torch.float16)
    r = torch.randn(3, n, device=device).to(torch.float16)
    _run_and_check(x, r, *_params(n, torch.float16, device))


def test_large_offset_rows(device):
    """Rows with mean 1e4 and std 1 in fp32: E[x^2]-E[x]^2 would lose ~all digits here."""
    n = 1000
    x = 1e4 + torch.randn(6, n, device=device)
    w, b = _params(n, torch.float32, device)
    y = layer_norm(x, w, b)
    ref = F.layer_norm(x.double(), (n,), w.double(), b.double())
    assert (y.double() - ref).abs().max().item() < 1e-4
    _run_and_check(x.clone(), None, w, b)
    r = torch.randn(6, n, device=device)  # the offset through the fused add as well
    _run_and_check(x.clone() - r, r, w, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("n", [7, 1000])
def test_constant_rows(dtype, n, device):
    """var = 0 -> y = bias exactly (no 0/0, no noise from a rounded mean); gradients finite."""
    consts = torch.tensor([0.1, -3.7, 1e4, 0.0, 1 / 3], device=device)
    x = consts[:, None].expand(5, n).to(dtype).contiguous().requires_grad_(True)
    w, b = _params(n, dtype, device)
    w.requires_grad_(True)
    b.requires_grad_(True)
    y = layer_norm(x, w, b)
    assert torch.equal(y, b.detach().expand_as(y))
    y.backward(torch.randn_like(y))
    for g in (x.grad, w.grad, b.grad):
        assert torch.isfinite(g).all()


def test_empty_rows(device):
    x = torch.randn(0, 3, 16, device=device, requires_grad=True)
    w, b = _params(16, torch.float32, device)
    w.requires_grad_(True)
    y = layer_norm(x, w, b)
    assert y.shape == x.shape
    y.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lead=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    n=st.integers(1, 1100),
    pad=st.integers(0, 5),
    dtype=st.sampled_from(DTYPES),
    residual=st.booleans(),
    fp32_params=st.booleans(),
)
def test_fuzz(lead, n, pad, dtype, residual, fp32_params, device):
    shape = (*lead, n)
    x = torch.randn(*lead, n + pad, device=device).to(dtype)[..., pad:]  # row stride n + pad
    r = torch.randn(shape, device=device).to(dtype) if residual else None
    w, b = _params(n, dtype, device, torch.float32 if fp32_params else dtype)
    _run_and_check(x, r, w, b)


def test_torch_compile_fullgraph(device):
    n = 96
    w, b = _params(n, torch.float32, device)
    w.requires_grad_(True)

    def plain(x):
        return layer_norm(x, w, b) * 2

    def fused(x, r):
        y, h = layer_norm(x, w, None, 1e-6, residual=r)
        return y * 2 + h

    x = torch.randn(4, n, device=device)
    r = torch.randn(4, n, device=device)
    for fn, args in ((plain, (x,)), (fused, (x, r))):
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        eager_args = [a.clone().requires_grad_(True) for a in args]
        comp_args = [a.clone().requires_grad_(True) for a in args]
        out_e = fn(*eager_args)
        out_c = compiled(*comp_args)
        torch.testing.assert_close(out_c, out_e)
        g = torch.randn_like(out_e)
        grads_e = torch.autograd.grad(out_e, eager_args + [w], g)
        grads_c = torch.autograd.grad(out_c, comp_args + [w], g)
        for ge, gc in zip(grads_e, grads_c, strict=True):
            torch.testing.assert_close(gc, ge)


# ------------------------------------------------------------------------------------------------
# Bad inputs: every validation rule, checked before any kernel runs
# ------------------------------------------------------------------------------------------------


def _bad_cases(device):
    f16 = torch.float16
    x = torch.randn(4, 8, device=device).to(f16)
    w, b = _params(8, f16, device)
    wide = torch.randn(8, 4, device=device).to(f16)
    return [
        ("x-not-tensor", lambda: layer_norm(x.tolist(), w, b), TypeError, "x: expected a torch.Tensor"),
        ("x-int", lambda: layer_norm(x.long(), None, None), TypeError, "x: expected dtype"),
        ("x-f64", lambda: layer_norm(x.double(), None, None), TypeError, "x: expected dtype"),
        ("x-0d", lambda: layer_norm(x[0, 0], None, None), ValueError, "x: the last"),
        ("x-N0", lambda: layer_norm(x[:, :0], None, None), ValueError, "x: the last"),
        (
            "x-last-stride",
            lambda: layer_norm(wide.t(), w, b),
            ValueError,
            "x: the last dimension must be contiguous",
        ),
        ("x-device", lambda: layer_norm(x.to("meta"), None, None), ValueError, "x: expected a tensor on a"),
        ("w-not-tensor", lambda: layer_norm(x, [1.0] * 8, b), TypeError, "weight: expected a torch.Tensor"),
        ("w-shape", lambda: layer_norm(x, w[:7], b), ValueError, "weight: expected shape (8,)"),
        ("w-2d", lambda: layer_norm(x, w[None], b), ValueError, "weight: expected a 1-D"),
        ("w-dtype", lambda: layer_norm(x, w.to(torch.bfloat16), b), TypeError, "weight: dtype must be"),
        (
            "w-stride",
            lambda: layer_norm(x, torch.randn(16, device=device).to(f16)[::2], b),
            ValueError,
            "weight: the last dimension must be contiguous",
        ),
        ("w-device", lambda: layer_norm(x, w.to("meta"), b), ValueError, "weight: expected a tensor on a"),
        (
            "b-shape",
            lambda: layer_norm(x, w, torch.zeros(9, device=device, dtype=f16)),
            ValueError,
            "bias: expected shape (8,)",
        ),
        ("b-dtype", lambda: layer_norm(x, w, b.double()), TypeError, "bias: expected dtype"),
        ("b-dtype-mixed", lambda: layer_norm(x.float(), w.float(), b), TypeError, "bias: dtype must be"),
        (
            "r-not-tensor",
            lambda: layer_norm(x, w, b, residual=1.0),
            TypeError,
            "residual: expected a torch.Tensor",
        ),
        ("r-shape", lambda: layer_norm(x, w, b, residual=x[:3]), ValueError, "residual: expected shape"),
        ("r-dtype", lambda: layer_norm(x, w, b, residual=x.float()), TypeError, "residual: dtype"),
        (
            "r-stride",
            lambda: layer_norm(x, w, b, residual=wide.t()),
            ValueError,
            "residual: the last dimension must be contiguous",
        ),
        (
            "r-device",
            lambda: layer_norm(x, w, b, residual=x.to("meta")),
            ValueError,
            "residual: expected a tensor on a",
        ),
        ("eps-zero", lambda: layer_norm(x, w, b, 0.0), ValueError, "eps: expected a positive number"),
        ("eps-neg", lambda: layer_norm(x, w, b, -1e-5), ValueError, "eps: expected a positive number"),
        ("eps-tiny", lambda: layer_norm(x, w, b, 1e-45), ValueError, "eps: 1e-45 is below fp32's range"),
        (
            "eps-nan",
            lambda: layer_norm(x, w, b, float("nan")),
            ValueError,
            "eps: expected a finite number",
        ),
        (
            "eps-inf",
            lambda: layer_norm(x, w, b, float("inf")),
            ValueError,
            "eps: expected a finite number",
        ),
        ("eps-type", lambda: layer_norm(x, w, b, "1e-5"), TypeError, "eps: expected a real number"),
        ("eps-bool", lambda: layer_norm(x, w, b, True), TypeError, "eps: expected a real number"),
    ]


def test_bad_inputs(device):
    for name, call, exc, msg in _bad_cases(device):
        with pytest.raises(exc) as info:
            call()
        assert msg in str(info.value), f"{name}: message {str(info.value)!r} lacks {msg!r}"


def test_bad_device_mismatch():
    """A CUDA x with CPU weight or residual is rejected before any launch."""
    if not torch.cuda.is_available():
        pytest.skip("needs two devices")
    x = torch.randn(4, 8, device="cuda", dtype=torch.float16)
    with pytest.raises(ValueError, match="weight: "):
        layer_norm(x, torch.ones(8, dtype=torch.float16), None)
    with pytest.raises(ValueError, match="residual: "):
        layer_norm(x, None, None, residual=x.cpu())


# ------------------------------------------------------------------------------------------------
# Ahead-of-time compilation for sm_80 / sm_90a: no spills, fits
# ------------------------------------------------------------------------------------------------

AOT_SUBSET = {
    "layer_norm_fwd[N=768,": None,  # GPT-2 small
    "layer_norm_fwd[N=8192,": None,  # largest row held in registers
    "layer_norm_fwd_looped[N=16384,": None,
    "layer_norm_fwd_looped[N=65536,BN=4096,fp16": None,
    "layer_norm_bwd[N=4096,": None,  # largest backward row held in registers
    "layer_norm_bwd_looped[N=65536,BN=2048,fp16": None,
}


def _aot(pairs) -> None:
    """Compile (variant, cc) pairs with the shared AOT inspector (spawned workers without
    TRITON_INTERPRET, cached on disk) and apply the absolute rules: no spills, fits."""
    from tritongpt.bench.static_check import check_pairs

    findings = check_pairs(pairs, "tritongpt.kernels.layernorm:variants")
    assert not findings, "\n".join(map(str, findings))


def test_variants_listed():
    vs = ln.variants()
    names = [v.name for v in vs]
    assert len(names) == len(set(names))
    for prefix in AOT_SUBSET:
        assert sum(n.startswith(prefix) for n in names) >= 1, prefix


def test_aot_representative():
    """sm_80 and sm_90a: every kernel at its largest in-register row and at GPT-2's N."""
    picked = [v for v in ln.variants() if any(v.name.startswith(p) for p in AOT_SUBSET) and "fp16" in v.name]
    assert len(picked) == len(AOT_SUBSET)
    _aot([(v, cc) for v in picked for cc in (80, 90)])


@pytest.mark.slow
def test_aot_all_variants():
    _aot([(v, cc) for v in ln.variants() for cc in (80, 90) if cc in v.archs])


def test_numpy_eps_is_accepted(device):
    import numpy as np

    x = torch.randn(3, 16, device=device)
    torch.testing.assert_close(layer_norm(x, None, None, np.float32(1e-5)), F.layer_norm(x, (16,), eps=1e-5))


@pytest.mark.parametrize("need", ["x", "weight", "bias", "x+bias", "weight+bias"])
def test_only_the_needed_gradients(device, need):
    """Frozen parameters: their partial sums are skipped, the others still match torch."""
    torch.manual_seed(1)
    x0 = torch.randn(6, 40, device=device)
    w0, b0 = torch.randn(40, device=device), torch.randn(40, device=device)
    args = {"x": x0.clone(), "weight": w0.clone(), "bias": b0.clone()}
    for k in need.split("+"):
        args[k].requires_grad_(True)
    ref = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in args.items()}
    g = torch.randn(6, 40, device=device)
    layer_norm(args["x"], args["weight"], args["bias"]).backward(g)
    F.layer_norm(ref["x"], (40,), ref["weight"], ref["bias"], 1e-5).backward(g)
    for k in args:
        if k in need.split("+"):
            torch.testing.assert_close(args[k].grad, ref[k].grad, atol=1e-5, rtol=1e-4)
        else:
            assert args[k].grad is None


def test_torch_compile_dynamic_shapes(device):
    x = torch.randn(4, 24, device=device, requires_grad=True)
    w = torch.randn(24, device=device, requires_grad=True)
    b = torch.randn(24, device=device, requires_grad=True)
    fn = torch.compile(lambda a, c, d: layer_norm(a, c, d, 1e-5), fullgraph=True, dynamic=True, backend="aot_eager")
    fn(x, w, b).sum().backward()
    torch.testing.assert_close(x.grad, torch.autograd.grad(F.layer_norm(x, (24,), w, b).sum(), x)[0],
                               atol=1e-5, rtol=1e-4)
