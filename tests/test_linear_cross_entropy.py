"""Tests for kernels/linear_cross_entropy.py: the fused LM-head loss, forward and backward.

Reference: fp64 PyTorch (F.linear, soft-cap, F.cross_entropy, z-loss) from the same low-precision inputs.
Tolerance, as the other kernel tests: the kernel's max error may be at most 2x PyTorch's own error plus ~2 ulp
at the output scale, where "PyTorch's own" computes the logits in the input dtype (TF32 for fp32 on CUDA, as
tl.dot) and the loss in fp32 from them, the way a training loop does.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from linear_reference import tf32

from tritongpt.kernels import linear_cross_entropy

lce = importlib.import_module("tritongpt.kernels.linear_cross_entropy")  # the package exports the function
lceb = importlib.import_module("tritongpt.kernels.linear_cross_entropy_bwd")

pytestmark = pytest.mark.kernel

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def reference(x, w, t, b=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
              softcap=None, acc=torch.float32):
    """(loss, lse) in PyTorch: logits in the inputs' dtype, then everything in ``acc`` (fp64 for the reference)."""
    logits = F.linear(x, w, b).to(acc)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    per_row = F.cross_entropy(logits, t.long(), ignore_index=ignore_index, reduction="none",
                              label_smoothing=label_smoothing)
    lse = torch.logsumexp(logits, dim=-1)
    counted = t != ignore_index
    per_row = per_row + z_loss * lse * lse * counted
    if reduction == "none":
        return per_row, lse
    if reduction == "sum":
        return per_row.sum(), lse
    return per_row.sum() / counted.sum().clamp_min(1), lse


def _forward_backward(fn, leaves, upstream):
    """(loss, lse, grads of the leaves that require grad); ``upstream`` = (d loss, d lse or None)."""
    loss, lse = fn(*leaves)
    need = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
    outs, grads = [loss], [upstream[0].to(loss.dtype)]
    if upstream[1] is not None:
        outs.append(lse)
        grads.append(upstream[1].to(lse.dtype))
    return [loss, lse, *torch.autograd.grad(outs, need, grads)] if need else [loss, lse]


def _close(name, got, ref, low):
    """``got`` within 2x PyTorch's error (``low``) of the fp64 ``ref``, plus 2 ulp of got's dtype at ref's scale."""
    assert got.dtype == low.dtype and got.shape == ref.shape, (name, got.dtype, low.dtype, got.shape, ref.shape)
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err = (got.double() - ref).abs().max().item() if got.numel() else 0.0
    torch_err = (low.double() - ref).abs().max().item() if got.numel() else 0.0
    # The output's own scale, not max(1, scale): gradients of a mean over N rows are O(1 / N).
    atol = 2 * torch.finfo(got.dtype).eps * (ref.abs().max().item() if got.numel() else 0.0)
    assert err <= 2 * torch_err + atol, f"{name}: error {err:.3g} > 2 x torch's {torch_err:.3g} + {atol:.2g}"


def _inputs(N, V, C, dtype, device, bias=True, ignored=(), scale=1.0):
    x = torch.randn(N, C, device=device).to(dtype).requires_grad_()
    w = (torch.randn(V, C, device=device) * scale / C**0.5).to(dtype).requires_grad_()
    b = (0.5 * torch.randn(V, device=device)).to(dtype).requires_grad_() if bias else None
    t = torch.randint(0, V, (N,), device=device)
    for i in ignored:
        if i < N:
            t[i] = -100
    return x, w, t, b


def _check(x, w, t, b=None, lse_grad=False, **opts):
    """Kernel vs fp64 vs PyTorch in the inputs' dtype: loss, lse and every gradient."""
    reduction = opts.get("reduction", "mean")
    dev = x.device
    g_loss = torch.randn(x.shape[0] if reduction == "none" else (), device=dev)
    g_lse = torch.randn(x.shape[0], device=dev) if lse_grad else None

    def kernel(x, w, b):
        return linear_cross_entropy(x, w, t, b, return_lse=True, **opts)

    got = _forward_backward(kernel, [x, w, b], (g_loss, g_lse))
    leaves64 = [a.detach().double().requires_grad_(a.requires_grad) if a is not None else None for a in (x, w, b)]
    ref = _forward_backward(lambda x, w, b: reference(x, w, t, b, acc=torch.float64, **opts), leaves64,
                            (g_loss.double(), g_lse.double() if lse_grad else None))
    with tf32(x.dtype == torch.float32):
        low = _forward_backward(lambda x, w, b: reference(x, w, t, b, **opts), [x, w, b], (g_loss, g_lse))
    names = ["loss", "lse"] + [f"d{n}" for n, a in zip("xwb", (x, w, b), strict=True)
                               if a is not None and a.requires_grad]
    assert len(got) == len(names)
    for name, g, r, lw in zip(names, got, ref, low, strict=True):
        _close(name, g, r, lw)
    return got


# (N, V, C, bias, options): odd sizes and every option, spread over the cases so each runs in every dtype.
# N {1, 7, 33, 97}, V {7, 97, 257}, C {16, 40, 48, 64}: C chunks of 32 with masked tails, vocab tiles with
# masked tails, one and several row blocks and vocab splits.
CASES = [
    (1, 7, 16, True, dict()),
    (7, 97, 40, False, dict(label_smoothing=0.1, z_loss=1e-3, reduction="sum")),
    (97, 257, 48, True, dict(softcap=5.0, reduction="none", ignore_index=-100)),
    (33, 257, 64, True, dict(softcap=30.0, label_smoothing=0.2, z_loss=1e-4)),
]


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"N{c[0]}-V{c[1]}-C{c[2]}" for c in CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(case, dtype, device):
    N, V, C, bias, opts = CASES[case]
    x, w, t, b = _inputs(N, V, C, dtype, device, bias=bias, ignored=(1, 5, 40))
    _check(x, w, t, b, lse_grad=opts.get("reduction") == "none", **opts)


def test_gpt2_vocab_fp32(device):
    # V = 50257 (GPT-2's, not a multiple of any tile), an ignored row, bias, mean: 50 vocab tiles per row.
    x, w, t, b = _inputs(6, 50257, 64, torch.float32, device, ignored=(2,))
    _check(x, w, t, b)


def test_vocab_of_one(device):
    # One class: p = 1, so every loss (and gradient) is exactly 0 without smoothing or z-loss.
    x, w, t, b = _inputs(5, 1, 16, torch.float32, device)
    loss = linear_cross_entropy(x, w, t, b, reduction="none")
    loss.sum().backward()
    assert torch.equal(loss, torch.zeros(5, device=device))
    assert (x.grad == 0).all() and (w.grad == 0).all() and (b.grad == 0).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_rows_ignored(reduction, device):
    # Mean over no counted row is 0 (PyTorch's own cross_entropy returns NaN), with zero gradients.
    x, w, t, b = _inputs(9, 40, 24, torch.float16, device, ignored=range(9))
    loss = linear_cross_entropy(x, w, t, b, reduction=reduction, label_smoothing=0.1, z_loss=1e-2)
    assert torch.equal(loss, torch.zeros_like(loss)) and loss.dtype == torch.float32
    loss.sum().backward()
    for p in (x, w, b):
        assert torch.equal(p.grad, torch.zeros_like(p))


def test_ignore_index_inside_the_vocab(device):
    # ignore_index may be a real class id: those rows are ignored, the class still counts in every softmax.
    x, w, t, b = _inputs(20, 30, 16, torch.float32, device)
    t[::3] = 4
    _check(x, w, t, b, ignore_index=4, label_smoothing=0.05)


def test_reductions_agree(device):
    x, w, t, b = _inputs(13, 50, 32, torch.float32, device, ignored=(1, 2))
    opts = dict(softcap=10.0, z_loss=1e-3, label_smoothing=0.1)
    none = linear_cross_entropy(x, w, t, b, reduction="none", **opts)
    assert none.shape == (13,) and none[1] == 0 and none[2] == 0
    total = linear_cross_entropy(x, w, t, b, reduction="sum", **opts)
    mean = linear_cross_entropy(x, w, t, b, **opts)
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(mean, none.sum() / 11)
    assert total.shape == () and mean.shape == ()


def test_lse_alone_is_differentiable(device):
    # Only the returned lse reaches the loss: the gradient is the softmax's (no target term).
    x, w, t, b = _inputs(7, 33, 16, torch.float32, device)
    _, lse = linear_cross_entropy(x, w, t, b, return_lse=True, softcap=4.0)
    g = torch.randn(7, device=device)
    dx, dw, db = torch.autograd.grad(lse, (x, w, b), g)
    x64, w64, b64 = (a.detach().double().requires_grad_() for a in (x, w, b))
    logits = 4.0 * torch.tanh(F.linear(x64, w64, b64) / 4.0)
    ref = torch.autograd.grad(torch.logsumexp(logits, -1), (x64, w64, b64), g.double())
    torch.testing.assert_close(lse.double(), torch.logsumexp(logits, -1), rtol=1e-6, atol=1e-6)
    for got, want in zip((dx, dw, db), ref, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("splits", [1, 3])
def test_vocab_split_count_does_not_change_results(splits, device, monkeypatch):
    """The forward and dx grids split the vocab (2 splits under the interpreter); 1 and 3 give the same loss,
    lse and gradients up to fp32 rounding (3 splits over 3 tiles: one tile each)."""
    x, w, t, b = _inputs(18, 97, 40, torch.float32, device, ignored=(3,))
    opts = dict(softcap=6.0, label_smoothing=0.1, z_loss=1e-3, return_lse=True)

    def run():
        loss, lse = linear_cross_entropy(x, w, t, b, **opts)
        return [loss, lse, *torch.autograd.grad(loss + lse.sum(), (x, w, b))]

    default = run()
    monkeypatch.setattr(lce, "num_splits", lambda *a, **k: splits)
    monkeypatch.setattr(lceb, "num_splits", lambda *a, **k: splits)
    for got, want in zip(run(), default, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_fp32_master_weights(dtype, device):
    # 16-bit activations with fp32 weight and bias (mixed precision): cast at the call as autocast would, so the
    # gradients come back in fp32 and equal those of the explicitly cast call.
    x, w, t, b = _inputs(11, 60, 32, torch.float32, device)
    x16 = x.detach().to(dtype).requires_grad_()
    loss = linear_cross_entropy(x16, w, t, b)
    dx, dw, db = torch.autograd.grad(loss, (x16, w, b))
    assert dx.dtype == dtype and dw.dtype == torch.float32 and db.dtype == torch.float32
    w16, b16 = (a.detach().to(dtype).requires_grad_() for a in (w, b))
    loss16 = linear_cross_entropy(x16, w16, t, b16)
    ref = torch.autograd.grad(loss16, (x16, w16, b16))
    assert torch.equal(loss, loss16)
    for got, want in zip((dx, dw, db), ref, strict=True):
        assert torch.equal(got, want.to(got.dtype))


def test_int32_targets(device):
    x, w, t, b = _inputs(9, 40, 16, torch.float16, device, ignored=(4,))
    a = linear_cross_entropy(x, w, t, b, reduction="none")
    c = linear_cross_entropy(x, w, t.int(), b, reduction="none")
    assert torch.equal(a, c)


def test_softcap_extremes_and_tanh_accuracy(device):
    # Huge logits saturate at +-softcap without NaN; tiny ones (|l / cap| < 1/8, the polynomial branch) keep
    # fp32 accuracy.
    C, V = 16, 40
    x = torch.ones(3, C, device=device)
    w = torch.randn(V, C, device=device) * 1e4
    w[:20] *= 1e-8
    w.requires_grad_()
    t = torch.tensor([0, 25, 39], device=device)
    loss, lse = linear_cross_entropy(x, w, t, softcap=20.0, return_lse=True, reduction="none")
    ref, ref_lse = reference(x.double(), w.detach().double(), t, softcap=20.0, reduction="none",
                             acc=torch.float64)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=1e-6, atol=1e-5)
    loss.sum().backward()
    assert torch.isfinite(w.grad).all()


_GRAD_SETS = ["x", "w", "b", "xw", "wb", ""]


@pytest.mark.parametrize("grads", _GRAD_SETS, ids=[g or "none" for g in _GRAD_SETS])
def test_only_the_needed_gradients(grads, device, monkeypatch):
    x, w, t, b = (a.detach() if a is not None and a.is_floating_point() else a
                  for a in _inputs(6, 20, 16, torch.float32, device))
    for name, a in zip("xwb", (x, w, b), strict=True):
        a.requires_grad_(name in grads)
    calls = []
    real = lceb.linear_cross_entropy_bwd
    monkeypatch.setattr(lce, "linear_cross_entropy_bwd", lambda *a: calls.append(a[-3:]) or real(*a))
    loss = linear_cross_entropy(x, w, t, b)
    if grads:
        loss.backward()
        assert calls == [("x" in grads, "w" in grads, "b" in grads)]
    else:
        assert not loss.requires_grad
    for name, a in zip("xwb", (x, w, b), strict=True):
        assert (a.grad is not None) == (name in grads)


def test_poisoned_outputs_are_overwritten(device, monkeypatch):
    # Every buffer the launchers allocate starts as NaN: every element a kernel owns must be written.
    real_empty = torch.empty

    def nan_empty(*args, **kwargs):
        out = real_empty(*args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    monkeypatch.setattr(torch, "empty", nan_empty)
    x, w, t, b = _inputs(37, 70, 45, torch.float16, device, ignored=(3,))
    loss, lse = linear_cross_entropy(x, w, t, b, return_lse=True, label_smoothing=0.1, reduction="none")
    for out in (loss, lse, *torch.autograd.grad(loss.sum() + lse.sum(), (x, w, b))):
        assert torch.isfinite(out).all()


def test_no_rows(device):
    x, w, t, b = _inputs(0, 20, 16, torch.bfloat16, device)
    for reduction, shape in (("mean", ()), ("sum", ()), ("none", (0,))):
        loss, lse = linear_cross_entropy(x, w, t, b, reduction=reduction, return_lse=True)
        assert loss.shape == shape and lse.shape == (0,) and (loss == 0).all()
    linear_cross_entropy(x, w, t, b).backward()
    assert x.grad.shape == (0, 16)
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


def test_strided_inputs(device):
    # x a column slice of a wider tensor (row stride 2C), W stored transposed (unit stride on dim 0: copied).
    N, V, C = 10, 30, 24
    x = torch.randn(N, 2 * C, device=device)[:, 3:3 + C].detach().requires_grad_()
    w = torch.randn(C, V, device=device).t().detach().requires_grad_()
    t = torch.randint(0, V, (N,), device=device)
    _check(x, w, t, None, z_loss=1e-3)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(N=st.integers(1, 40), V=st.integers(2, 150), C=st.integers(1, 70), smoothing=st.sampled_from([0.0, 0.3]),
       cap=st.sampled_from([None, 2.0]), bias=st.booleans())
def test_random_shapes(N, V, C, smoothing, cap, bias, device):
    x, w, t, b = _inputs(N, V, C, torch.float32, device, bias=bias, ignored=(0,))
    _check(x, w, t, b, label_smoothing=smoothing, softcap=cap, reduction="sum")


# ------------------------------------------------------------------ torch.compile and the custom ops


def test_torch_compile_fullgraph(device):
    x, w, t, b = _inputs(12, 40, 24, torch.float16, device, ignored=(1,))

    def head(x, w, b):
        loss, lse = linear_cross_entropy(x, w, t, b, softcap=8.0, z_loss=1e-3, label_smoothing=0.1, return_lse=True)
        return loss + lse.mean()

    compiled = torch.compile(head, fullgraph=True, backend="aot_eager")
    got = compiled(x, w, b)
    want = head(x, w, b)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    for g, e in zip(torch.autograd.grad(got, (x, w, b)), torch.autograd.grad(want, (x, w, b)), strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("op", ["fwd", "bwd", "bwd_dx_only"])
def test_opcheck(op, device):
    x, w, t, b = (a.detach() for a in _inputs(5, 20, 16, torch.float32, device, ignored=(2,)))
    lse = torch.randn(5, device=device) + 3.0
    args = {
        "fwd": (x.requires_grad_(), w.requires_grad_(), b, t, -100, 0.1, 1e-3, 5.0),
        "bwd": (torch.randn(5, device=device), torch.randn(5, device=device), x, w, b, t, lse, -100, 0.1, 1e-3,
                None, True, True, True),
        # Two gradients not asked for: two empty outputs, which must be distinct tensors.
        "bwd_dx_only": (torch.randn(5, device=device), torch.zeros(5, device=device), x, w, b, t, lse, -100, 0.0,
                        0.0, 2.0, True, False, False),
    }[op]
    name = "linear_cross_entropy_fwd" if op == "fwd" else "linear_cross_entropy_bwd"
    # The backward op has no autograd of its own (no double backward): schema and fake-tensor checks only.
    utils = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic") \
        if op == "fwd" else ("test_schema", "test_faketensor")
    torch.library.opcheck(getattr(torch.ops.tritongpt, name).default, args, test_utils=utils)


# ------------------------------------------------------------------ validation


def _bad_cases(device):
    x = torch.randn(4, 8, device=device)
    w = torch.randn(6, 8, device=device)
    t = torch.tensor([0, 1, 5, -100], device=device)
    b = torch.randn(6, device=device)
    return [
        ("x 1-D", ValueError, "x", lambda: ((x[0], w, t[:1]), {})),
        ("x not a tensor", TypeError, "x", lambda: ((x.tolist(), w, t), {})),
        ("x dtype", TypeError, "x", lambda: ((x.double(), w.double(), t), {})),
        ("x last stride", ValueError, "x", lambda: ((torch.randn(8, 4, device=device).t(), w, t), {})),
        ("C mismatch", ValueError, "weight", lambda: ((x, torch.randn(6, 7, device=device), t), {})),
        ("C == 0", ValueError, "x", lambda: ((x[:, :0], w[:, :0], t), {})),
        ("V == 0", ValueError, "weight", lambda: ((x, w[:0], t), {})),
        ("weight rank", ValueError, "weight", lambda: ((x, w[None], t), {})),
        ("fp16 weight, fp32 x", TypeError, "weight", lambda: ((x, w.half(), t), {})),
        ("bf16 weight, fp16 x", TypeError, "weight", lambda: ((x.half(), w.bfloat16(), t), {})),
        ("weight device", ValueError, "weight", lambda: ((x, w.to("meta"), t), {})),
        ("targets float", TypeError, "targets", lambda: ((x, w, t.float()), {})),
        ("targets not a tensor", TypeError, "targets", lambda: ((x, w, [0, 1, 2, 3]), {})),
        ("targets shape", ValueError, "targets", lambda: ((x, w, t[:3]), {})),
        ("targets 2-D", ValueError, "targets", lambda: ((x, w, t[None]), {})),
        ("targets device", ValueError, "targets", lambda: ((x, w, t.to("meta")), {})),
        ("target id >= V", ValueError, "targets", lambda: ((x, w, torch.tensor([0, 6, 1, 2], device=device)), {})),
        ("negative target id", ValueError, "targets", lambda: ((x, w, torch.tensor([0, -1, 1, 2], device=device)), {})),
        ("bias shape", ValueError, "bias", lambda: ((x, w, t, b[:5]), {})),
        ("bias dtype", TypeError, "bias", lambda: ((x, w, t, b.half()), {})),
        ("bias device", ValueError, "bias", lambda: ((x, w, t, b.to("meta")), {})),
        ("ignore_index float", TypeError, "ignore_index", lambda: ((x, w, t), dict(ignore_index=-100.0))),
        ("reduction", ValueError, "reduction", lambda: ((x, w, t), dict(reduction="avg"))),
        ("label_smoothing 1", ValueError, "label_smoothing", lambda: ((x, w, t), dict(label_smoothing=1.0))),
        ("label_smoothing < 0", ValueError, "label_smoothing", lambda: ((x, w, t), dict(label_smoothing=-0.1))),
        ("label_smoothing NaN", ValueError, "label_smoothing", lambda: ((x, w, t), dict(label_smoothing=float("nan")))),
        ("z_loss < 0", ValueError, "z_loss", lambda: ((x, w, t), dict(z_loss=-1e-4))),
        ("z_loss tensor", TypeError, "z_loss", lambda: ((x, w, t), dict(z_loss=torch.tensor(0.1)))),
        ("softcap 0", ValueError, "softcap", lambda: ((x, w, t), dict(softcap=0.0))),
        ("softcap inf", ValueError, "softcap", lambda: ((x, w, t), dict(softcap=float("inf")))),
        ("softcap str", TypeError, "softcap", lambda: ((x, w, t), dict(softcap="30"))),
        ("return_lse int", TypeError, "return_lse", lambda: ((x, w, t), dict(return_lse=1))),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases("cpu"))), ids=[c[0] for c in _bad_cases("cpu")])
def test_bad_inputs(case, device):
    name, exc, arg, make = _bad_cases(device)[case]
    args, kwargs = make()
    with pytest.raises(exc, match=arg):
        linear_cross_entropy(*args, **kwargs)


def test_32bit_offset_limit_is_checked(device, monkeypatch):
    # The kernels index with int32 offsets: spans at the limit are refused by name (limit lowered here).
    x, w, t, _ = _inputs(8, 30, 16, torch.float32, device)
    monkeypatch.setattr(lceb, "INT32_LIMIT", 400)
    with pytest.raises(ValueError, match="weight"):
        linear_cross_entropy(x, w, t)
    monkeypatch.setattr(lceb, "INT32_LIMIT", 100)
    with pytest.raises(ValueError, match="x"):
        linear_cross_entropy(x, w[:2], t.clamp(max=1))


# ------------------------------------------------------------------ tiles and compile-only variants


def test_interpreter_tiles_are_small():
    # Guard against slow CI: the interpreter runs one small tile per kernel, no autotuning.
    assert lceb.interpret_blocks(50257) == (16, 1024, 32)
    assert lceb.interpret_blocks(97) == (16, 32, 32)


def test_variants_cover_the_config_table():
    vs = lce.variants()
    names = [v.name for v in vs]
    assert len(names) == len(set(names))
    tables = {"fwd": lceb.FWD_CONFIGS, "dx": lceb.DX_CONFIGS, "dw": lceb.DW_CONFIGS}
    for kernel, table in tables.items():
        got = {(v.tags["config"], v.tags["dtype"]) for v in vs if v.tags["kernel"] == kernel}
        want = {(i, dt) for i, c in enumerate(table) for es in c.elem_bytes
                for dt in (("fp16", "bf16") if es == 2 else ("fp32",))}
        assert got == want, kernel
        # Every element size and alignment form keeps at least one tile.
        assert {(es, c.form) for c in table for es in c.elem_bytes} == {(es, f) for es in (2, 4)
                                                                         for f in ("aligned", "unaligned")}
    for v in vs:
        assert v.tags["aligned"] == (tables[v.tags["kernel"]][v.tags["config"]].form == "aligned")
        # 16-bit tiles of 64 rows or more must run wgmma on sm_90a (dW's second product has BLOCK_K rows).
        assert v.wants_wgmma == (v.tags["dtype"] != "fp32" and v.tags["block_m"] >= 64)


@pytest.mark.parametrize("tuned", ["_fwd_tuned", "_dx_tuned", "_dw_tuned"])
def test_autotune_prune_keeps_the_form_and_dtype(tuned):
    tuner = getattr(lce, tuned, None) or getattr(lceb, tuned)
    assert "ALIGN" in tuner.keys and "N_BUCKET" in tuner.keys
    own = getattr(tuner.early_config_prune, "__wrapped__", tuner.early_config_prune)
    for dtype, es in ((torch.float16, 2), (torch.float32, 4)):
        for align in (0, 1):
            kept = own(tuner.configs, {"X": torch.empty(1, dtype=dtype), "ALIGN": align})
            assert kept and all(es in c.tile.elem_bytes for c in kept)
            assert all(c.tile.form == ("aligned" if align else "unaligned") for c in kept)


def _aot(pairs):
    from tritongpt.bench.static_check import check_pairs

    findings = check_pairs(pairs, "tritongpt.kernels.linear_cross_entropy:variants")
    assert not findings, "\n".join(map(str, findings))


def test_aot_subset():
    """The largest forward tile on sm_90a (wgmma) and sm_100a (tcgen05), the unaligned dW tile on sm_80,
    compiled for real."""
    vs = {v.name: v for v in lce.variants()}
    largest = vs["linear_cross_entropy_fwd[128x128x64,w8,s3,fp16,HAS_BIAS,SOFTCAP,SMOOTHING]"]
    _aot([(largest, cc) for cc in _targets() if cc >= 90]
         + [(vs["linear_cross_entropy_dw[64x64x32,w8,s2,fp16,HAS_BIAS,SOFTCAP,unaligned]"], 80)])


def _targets() -> tuple[int, ...]:
    # sm_100a is gated from Triton 3.4 on, as for the other kernels (the oldest gate compiles sm_80 / sm_90a).
    from tritongpt.kernels import versions

    return (80, 89, 90, 100) if versions.triton_version() >= (3, 4) else (80, 89, 90)


@pytest.mark.slow
def test_aot_all_variants():
    _aot([(v, cc) for v in lce.variants() for cc in _targets() if cc in v.archs])


# ------------------------------------------------------------------ counted traffic (the inspect gate's cases)


@pytest.mark.skipif(torch.cuda.is_available(), reason="traffic is counted on the interpreter")
def test_counted_traffic_never_holds_the_logits():
    """Forward and backward read x and W exactly as the tiling says and write only their fp32 partials and
    accumulators; a kernel that stored a logit tile would fail its case."""
    from tritongpt.bench.traffic import TensorTraffic
    from tritongpt.bench.traffic_cases import cases, measure

    mine = [c for c in cases() if c.kernel == "linear_cross_entropy"]
    assert {c.name.split("[")[0] for c in mine} == {"linear_cross_entropy_fwd", "linear_cross_entropy_bwd"}
    for case in mine:
        r = measure(case)
        assert not r["problems"], (case.name, r["problems"])
        # The same figures with one (N, V) fp32 tile stored on top are caught.
        per = {k: TensorTraffic(**v) for k, v in r["tensors"].items()}
        per["<unnamed>"].written += case.params["logit_bytes"]
        assert any("logit buffer" in p for p in case.rules(per, case.params))
