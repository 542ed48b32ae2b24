"""Tests for kernels/fused_linear.py: gelu_linear and linear (+ residual), forward and backward.

Reference: fp64 PyTorch from the same low-precision inputs. Tolerance: the kernel's max error may
be at most 2x PyTorch's own error in the same dtype (F.linear / F.gelu computed in that dtype;
TF32 matmuls for fp32 on CUDA, which is what tl.dot uses there) plus a small atol.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from linear_reference import close_to_reference, reference, tf32

from tritongpt.kernels import fused_linear as fl
from tritongpt.kernels import fused_linear_bwd as flb
from tritongpt.kernels import launch, spills
from tritongpt.kernels.interpreter import interpreter_enabled

pytestmark = pytest.mark.kernel

DTYPES = [torch.float32, torch.float16, torch.bfloat16]




def _run(fn, inputs, dy):
    """Forward + backward; returns [y, grads of the inputs that require grad]."""
    y = fn(*inputs)
    leaves = [t for t in inputs if t is not None and t.requires_grad]
    grads = torch.autograd.grad(y, leaves, dy) if leaves else []
    return [y, *grads]


def _check(gelu: bool, x, w, b=None, r=None, dy=None):
    """Compare the kernel's forward and every gradient with fp64 and with PyTorch in x.dtype."""
    fn = (lambda x, w, b, r: fl.gelu_linear(x, w, b)) if gelu else fl.linear
    inputs = [x, w, b, r]
    n_out = (*x.shape[:-1], w.shape[0])
    if dy is None:
        dy = torch.randn(n_out, dtype=x.dtype, device=x.device)
    got = _run(fn, inputs, dy)
    ref = _run(lambda *a: reference(gelu, *a), [t.detach().double().requires_grad_(t.requires_grad)
                                           if t is not None else None for t in inputs], dy.double())
    with tf32(x.dtype == torch.float32):
        low = _run(lambda *a: reference(gelu, *a), inputs, dy)
    names = ["y"] + [n for n, t in zip("x w b r".split(), inputs, strict=True) if t is not None and t.requires_grad]
    for name, g, rf, lw in zip(names, got, ref, low, strict=True):
        close_to_reference(f"d{name}" if name != "y" else name, g, rf, lw)


def _inputs(M, K, N, dtype, device, bias=True, residual=False, lead=()):
    x = torch.randn(*lead, M, K, dtype=dtype, device=device).requires_grad_()
    w = (torch.randn(N, K, device=device) / K**0.5).to(dtype).requires_grad_()
    b = torch.randn(N, dtype=dtype, device=device).requires_grad_() if bias else None
    r = torch.randn(*lead, M, N, dtype=dtype, device=device).requires_grad_() if residual else None
    return x, w, b, r


# Odd sizes on purpose: M=1 (decode), primes, K and N not multiples of the 32/64/128 tiles; the
# last one is GPT-2-like (C=64, 4C=256). Together they cover M {1,7,97}, K {16,96,100}, N {16,64,130}.
SHAPES = [(1, 16, 16), (7, 96, 130), (97, 100, 64), (64, 64, 256)]


@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_linear(M, K, N, dtype, device):
    x, w, b, _ = _inputs(M, K, N, dtype, device)
    _check(True, x, w, b)


@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_bias_residual(M, K, N, dtype, device):
    x, w, b, r = _inputs(M, K, N, dtype, device, residual=True)
    _check(False, x, w, b, r)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gelu", [True, False], ids=["gelu", "linear"])
def test_leading_dims_noncontiguous_no_bias(gelu, dtype, device):
    # x is a slice of a wider (B, T, 2K) tensor (row stride 2K); bias None; linear without residual.
    B, T, K, N = 2, 5, 48, 40
    wide = torch.randn(B, T, 2 * K, dtype=dtype, device=device)
    x = wide[..., 3:3 + K].detach().requires_grad_()
    assert not x.is_contiguous()
    w = (torch.randn(N, K, device=device) / K**0.5).to(dtype).requires_grad_()
    _check(gelu, x, w, None)


def test_strided_weight_residual_and_grad(device):
    # weight stored transposed (unit stride on dim 0), residual a column slice, x not requiring
    # grad, and an expanded (stride-0) upstream gradient, as y.sum().backward() produces.
    M, K, N = 33, 40, 24
    x = torch.randn(M, K, dtype=torch.float16, device=device)
    w = (torch.randn(K, N, device=device) / K**0.5).half().t().detach().requires_grad_()
    r = torch.randn(M, 2 * N, dtype=torch.float16, device=device)[:, :N].detach().requires_grad_()
    b = torch.randn(N, dtype=torch.float16, device=device).requires_grad_()
    dy = torch.randn((), dtype=torch.float16, device=device).expand(M, N)
    _check(False, x, w, b, r, dy=dy)
    _check(True, x, w, b, dy=dy)


def test_poisoned_outputs_are_overwritten(device, monkeypatch):
    # Outputs allocated by the launchers start as NaN: every element must be written.
    real_empty = torch.empty

    def nan_empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", nan_empty)
    x, w, b, r = _inputs(37, 70, 45, torch.float16, device, residual=True)
    for out in _run(fl.linear, [x, w, b, r], torch.randn(37, 45, dtype=torch.float16, device=device)):
        assert torch.isfinite(out).all()
    x, w, b, _ = _inputs(37, 70, 45, torch.bfloat16, device)
    for out in _run(lambda x, w, b: fl.gelu_linear(x, w, b), [x, w, b],
                    torch.randn(37, 45, dtype=torch.bfloat16, device=device)):
        assert torch.isfinite(out).all()


def test_gelu_extremes(device):
    # Huge |z|: gelu(z) = z or ~0 and gelu'(z) = 1 or ~0, never NaN (z^2 and the exp argument are
    # clamped in the kernel, so gelu(-16000) is -3e-31 where PyTorch returns -0).
    x = torch.tensor([[1.0], [-1.0], [0.0]], device=device).repeat(1, 16)
    w = torch.full((16, 16), 1e3, device=device).requires_grad_()
    x.requires_grad_()
    y = fl.gelu_linear(x, w, None)
    y.sum().backward()
    assert torch.equal(y[0], torch.full_like(y[0], 1.6e4)) and (y[1].abs() < 1e-20).all() and (y[2] == 0).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()


def _subsets(names: str) -> list[str]:
    return ["".join(c) for n in range(len(names) + 1) for c in itertools.combinations(names, n)]


# Every combination of which inputs require grad (x w b r: x, weight, bias, residual), with and
# without a bias: frozen weights, frozen inputs, bias-only, residual-only, nothing at all. Each
# gradient not asked for must come back as its own tensor (or None): one shared empty tensor for two
# of dx, dW, db is rejected by torch as aliasing outputs.
GRAD_CASES = ([("linear", True, s) for s in _subsets("xwbr")]
              + [("linear", False, s) for s in _subsets("xwr")]
              + [("gelu", True, s) for s in _subsets("xwb")] + [("gelu", False, s) for s in _subsets("xw")])


@pytest.mark.parametrize("op,bias,grads", GRAD_CASES, ids=[f"{o}-{'b' if b else 'nob'}-{g or 'none'}"
                                                           for o, b, g in GRAD_CASES])
def test_requires_grad_subsets(op, bias, grads, device, monkeypatch):
    gelu = op == "gelu"
    x, w, b, r = (t.detach() if t is not None else None
                  for t in _inputs(5, 16, 8, torch.float32, device, bias=bias, residual=not gelu))
    for name, t in zip("xwbr", (x, w, b, r), strict=True):
        if t is not None:
            t.requires_grad_(name in grads)
    launches = []
    for attr in ("_linear_bwd_op", "_gelu_linear_bwd_op"):
        real = getattr(fl, attr)
        monkeypatch.setattr(fl, attr, lambda *a, _real=real: launches.append(a[-3:]) or _real(*a))
    _check(gelu, x, w, b, r)
    need_op = bool(set(grads) & {"x", "w"}) or (bias and "b" in grads)
    assert len(launches) == need_op, launches  # residual alone: d(residual) = dy, no backward op
    if need_op:
        assert launches[0] == ("x" in grads, "w" in grads, bias and "b" in grads)


def test_residual_only_grad_is_dy(device):
    x, w, b, r = (t.detach() for t in _inputs(6, 16, 8, torch.float16, device, residual=True))
    r.requires_grad_()
    dy = torch.randn(6, 8, dtype=torch.float16, device=device)
    fl.linear(x, w, b, r).backward(dy)
    assert torch.equal(r.grad, dy)


@pytest.mark.parametrize("M,N", [(0, 8), (5, 0), (0, 0)])
@pytest.mark.parametrize("gelu", [True, False], ids=["gelu", "linear"])
def test_empty_dims(M, N, gelu, device):
    # Empty outputs: forward returns (2, M, N); backward gives dx = 0 (M, K), dW = 0 (N, K),
    # db = 0 (N,) and d(residual) = dy. N == 0 must not reach reshape(-1, 0), which raises.
    K = 16
    x, w, b, r = _inputs(M, K, N, torch.float16, device, residual=not gelu, lead=(2,))
    with torch.no_grad():
        for t in (x, w, b):
            t.fill_(float("nan"))  # results must not depend on the (empty) products' inputs
    y = fl.gelu_linear(x, w, b) if gelu else fl.linear(x, w, b, r)
    assert y.shape == (2, M, N) and y.dtype == torch.float16
    dy = torch.randn(2, M, N, dtype=torch.float16, device=device)
    y.backward(dy)
    for t, shape in ((x, (2, M, K)), (w, (N, K)), (b, (N,))):
        assert t.grad.shape == shape and (t.grad == 0).all()
    if not gelu:
        assert torch.equal(r.grad, dy)
    with torch.no_grad():
        assert (fl.gelu_linear(x, w, b) if gelu else fl.linear(x, w, b, r)).shape == (2, M, N)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    M=st.integers(1, 70), K=st.integers(1, 72), N=st.integers(1, 70),
    dtype=st.sampled_from(DTYPES), gelu=st.booleans(), bias=st.booleans(), residual=st.booleans(),
    x_pad=st.integers(0, 9),
)
def test_fuzz(M, K, N, dtype, gelu, bias, residual, x_pad):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(M * 7919 + K * 104729 + N)
    x = torch.randn(M, K + x_pad, dtype=dtype, device=device)[:, :K].detach().requires_grad_()
    _, w, b, r = _inputs(M, K, N, dtype, device, bias=bias, residual=residual and not gelu)
    _check(gelu, x, w, b, r)


# ------------------------------------------------------------------ inference path, custom ops


def test_inference_does_not_write_gelu_grad(device, monkeypatch):
    calls = []
    real = fl._fused_linear_fwd_launch

    def spy(*args, **kwargs):
        y, g = real(*args, **kwargs)
        calls.append((kwargs["store_gelu_grad"], g))
        return y, g

    monkeypatch.setattr(fl, "_fused_linear_fwd_launch", spy)
    x, w, b, _ = _inputs(9, 32, 20, torch.float16, device)
    with torch.no_grad():
        fl.gelu_linear(x, w, b)
    fl.gelu_linear(x.detach(), w.detach(), b.detach())  # nothing requires grad
    with torch.inference_mode():
        fl.gelu_linear(x, w, b)
    assert [c[0] for c in calls] == [False] * 3 and all(c[1] is None for c in calls)
    fl.gelu_linear(x, w, b)  # training: the saved gelu'(z) is written
    assert calls[-1][0] is True and calls[-1][1].shape == (9, 20)
    _, g = torch.ops.tritongpt.gelu_linear_fwd(x.detach(), w.detach(), b.detach(), False)
    assert g.numel() == 0


@pytest.mark.parametrize("frozen", [False, True], ids=["train", "frozen-weights"])
def test_torch_compile_fullgraph(frozen, device):
    x, w, b, r = _inputs(12, 40, 24, torch.float16, device, residual=True)
    w2 = (torch.randn(24, 24, device=device) / 5).half().requires_grad_()
    if frozen:  # only x and the residual need grads: the backward ops' fake impls return empties
        for t in (w, b, w2):
            t.requires_grad_(False)

    def mlp(x, w, b, w2, r):
        return fl.linear(fl.gelu_linear(x, w, b), w2, None, r)

    compiled = torch.compile(mlp, fullgraph=True, backend="aot_eager")
    dy = torch.randn(12, 24, dtype=torch.float16, device=device)
    leaves = [x, w, b, w2, r]
    got = _run(compiled, leaves, dy)
    want = _run(mlp, leaves, dy)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@pytest.mark.parametrize("op", ["linear_fwd", "gelu_linear_fwd", "linear_bwd", "gelu_linear_bwd", "linear_bwd_dx",
                                "gelu_linear_bwd_dw"])
def test_opcheck(op, device):
    x, w, b, r = (t.detach() for t in _inputs(5, 16, 16, torch.float32, device, residual=True))
    dy = torch.randn(5, 16, device=device)
    args = {
        "linear_fwd": (x.requires_grad_(), w.requires_grad_(), b, r),
        "gelu_linear_fwd": (x.requires_grad_(), w, b.requires_grad_(), True),
        "linear_bwd": (dy, x, w, True, True, True),
        "gelu_linear_bwd": (dy, x, w, torch.rand(5, 16, device=device), True, False, True),
        # Two gradients not needed: two empty outputs, which must be distinct tensors.
        "linear_bwd_dx": (dy, x, w, True, False, False),
        "gelu_linear_bwd_dw": (dy, x, w, torch.rand(5, 16, device=device), False, True, False),
    }[op]
    # The backward ops have no autograd of their own (no double backward): skip the aot/autograd checks.
    name = op.removesuffix("_dx").removesuffix("_dw")
    utils = ("test_schema", "test_faketensor") if name.endswith("bwd") else (
        "test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(getattr(torch.ops.tritongpt, name).default, args, test_utils=utils)


# ------------------------------------------------------------------ validation


def _bad_cases(device):
    x = torch.randn(4, 8, device=device)
    w = torch.randn(6, 8, device=device)
    b = torch.randn(6, device=device)
    r = torch.randn(4, 6, device=device)
    return [
        ("K mismatch", ValueError, "weight", lambda: (x, torch.randn(6, 7, device=device), b, None)),
        ("bias shape", ValueError, "bias", lambda: (x, w, torch.randn(5, device=device), None)),
        ("bias rank", ValueError, "bias", lambda: (x, w, b[None], None)),
        ("residual shape", ValueError, "residual", lambda: (x, w, b, torch.randn(4, 7, device=device))),
        ("dtype x/weight", TypeError, "weight", lambda: (x, w.half(), b, None)),
        ("dtype bias", TypeError, "bias", lambda: (x, w, b.double(), None)),
        ("dtype residual", TypeError, "residual", lambda: (x, w, b, r.half())),
        ("unsupported dtype", TypeError, "x", lambda: (x.double(), w.double(), None, None)),
        ("weight rank", ValueError, "weight", lambda: (x, w[None], b, None)),
        ("x 0-D", ValueError, "x", lambda: (x[0, 0], w, b, None)),
        ("K == 0", ValueError, "x", lambda: (x[:, :0], w[:, :0], b, None)),
        ("non-tensor x", TypeError, "x", lambda: (x.tolist(), w, b, None)),
        ("non-tensor weight", TypeError, "weight", lambda: (x, 1.0, b, None)),
        ("x last stride", ValueError, "x", lambda: (torch.randn(8, 4, device=device).t(), w, b, None)),
        ("residual last stride", ValueError, "residual", lambda: (x, w, b, torch.randn(6, 4, device=device).t())),
        ("wrong device", ValueError, "weight", lambda: (x, w.to("meta"), b, None)),
        ("x on another device", ValueError, "x", lambda: (x.to("meta"), w, b, None)),
        ("bias on another device", ValueError, "bias", lambda: (x, w, b.to("meta"), None)),
        ("residual on another device", ValueError, "residual", lambda: (x, w, b, r.to("meta"))),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases("cpu"))), ids=[c[0] for c in _bad_cases("cpu")])
def test_bad_inputs(case, device):
    name, exc, arg, make = _bad_cases(device)[case]
    x, w, b, r = make()
    with pytest.raises(exc, match=arg):
        fl.linear(x, w, b, r)
    if r is None:
        with pytest.raises(exc, match=arg):
            fl.gelu_linear(x, w, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: CPU and another device")
def test_cpu_cuda_mismatch():
    x, w = torch.randn(4, 8, device="cuda"), torch.randn(6, 8, device="cuda")
    for args, arg in (((x.cpu(), w), "x"), ((x, w.cpu()), "weight"), ((x, w, w[:, 0].cpu()), "bias")):
        with pytest.raises(ValueError, match=arg):
            fl.linear(*args)


# ------------------------------------------------------------------ devices, 32-bit offsets


class _LaunchSpy:
    """Stands in for a kernel (jit or autotuned): records, per launch, how many device guards are open."""

    def __init__(self, real, log, depth):
        self.real, self.log, self.depth = real, log, depth

    def __getitem__(self, grid):
        launch = self.real[grid]

        def run(*args, **kwargs):
            self.log.append(("launch", self.depth[0]))
            return launch(*args, **kwargs)

        return run


def test_launches_inside_device_guard(device, monkeypatch):
    # Triton launches on the current device: every launch must run under device_guard(input),
    # or a model on cuda:1 would be computed on cuda:0's current stream with cuda:1 pointers.
    log, depth = [], [0]
    real_guard = fl.device_guard

    @contextlib.contextmanager
    def guard(t):
        log.append(("guard", t.device))
        depth[0] += 1
        try:
            with real_guard(t):
                yield
        finally:
            depth[0] -= 1

    for mod in (fl, flb):
        monkeypatch.setattr(mod, "device_guard", guard)
    for mod, names in ((fl, ("_fused_linear_fwd_kernel", "_fwd_tuned")),
                       (flb, ("_linear_bwd_dx_kernel", "_linear_bwd_dw_kernel", "_dx_tuned", "_dw_tuned"))):
        for name in names:
            monkeypatch.setattr(mod, name, _LaunchSpy(getattr(mod, name), log, depth))
    x, w, b, r = _inputs(9, 16, 8, torch.float16, device, residual=True)
    fl.linear(x, w, b, r).sum().backward()
    fl.gelu_linear(x, w, b).sum().backward()
    launches = [e for e in log if e[0] == "launch"]
    assert len(launches) == 6 and all(d >= 1 for _, d in launches), log
    assert {e[1] for e in log if e[0] == "guard"} == {x.device}


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("gelu", [True, False], ids=["gelu", "linear"])
def test_second_gpu(gelu):
    with torch.cuda.device(0):
        x, w, b, r = _inputs(33, 64, 48, torch.float16, "cuda:1", residual=not gelu)
        _check(gelu, x, w, b, r)


def test_reduction_stride_limit():
    # In-tile offsets along the reduction dim are int32: BLOCK (<= 128) * stride must stay < 2**31.
    limit = flb.MAX_REDUCTION_STRIDE
    assert limit * flb.MAX_TILE <= 2**31 and flb.MAX_TILE >= max(max(c[:3]) for c in fl.CONFIGS)
    base = torch.empty(2 * limit + 4, device="meta")
    ok = base.as_strided((3, 4), (limit - 1, 1))
    assert flb.fit_reduction_stride("t", ok, 0) is ok
    wide = base.as_strided((3, 2), (1, limit))  # a huge stride along dim 1: copied contiguous
    assert flb.fit_reduction_stride("t", wide, 0) is wide
    fixed = flb.fit_reduction_stride("t", wide, 1)
    assert fixed.is_contiguous() and fixed.shape == wide.shape
    single = base.as_strided((1, 2), (2 * limit, 1))  # a size-1 dim is never stepped through
    assert flb.fit_reduction_stride("t", single, 0) is single


@pytest.mark.parametrize("bad", ["dy", "gelu_grad", "weight", "x"])
def test_bwd_rejects_rows_too_long_for_int32_offsets(bad):
    # Validation only (meta tensors: nothing is allocated or launched). A row of 2**24 elements
    # makes even the contiguous layout's row stride too large for the int32 in-tile offsets.
    M, N, K = 4, 8, 16
    if bad in ("dy", "gelu_grad"):
        N = flb.MAX_REDUCTION_STRIDE
    else:
        K = flb.MAX_REDUCTION_STRIDE
    dy = torch.empty(M, N, device="meta")
    if bad == "gelu_grad":
        dy = torch.empty(1, N, device="meta").expand(M, N)  # row stride 0: fine
    gate = torch.empty(M, N, device="meta")
    x, w = torch.empty(M, K, device="meta"), torch.empty(N, K, device="meta")
    need_dx, need_dw = bad != "x", bad != "weight"  # x's rows matter to dW only, weight's to dx only
    with pytest.raises(ValueError, match=f"^{bad}: .*32-bit offsets"):
        flb.fused_linear_bwd(dy, x, w, gate, need_dx, need_dw, False)


@pytest.mark.parametrize("gelu", [True, False], ids=["gelu", "linear"])
def test_huge_stride_views_are_copied(gelu, device):
    # as_strided views with a stride of 2**24 along the reduction dim (forward: weight's K dim; dW:
    # x's rows; dx: weight's rows) run on contiguous copies and give the right answer.
    big = flb.MAX_REDUCTION_STRIDE
    M, K, N = 3, 2, 5
    xs = torch.empty(big * (M - 1) + K, dtype=torch.float16, device=device)
    x = xs.as_strided((M, K), (big, 1))
    x.copy_(torch.randn(M, K))
    ws = torch.empty(big * (K - 1) + N, dtype=torch.float16, device=device)
    w = ws.as_strided((N, K), (1, big))
    w.copy_(torch.randn(N, K) / K**0.5)
    x.requires_grad_()
    w.requires_grad_()
    b = torch.randn(N, dtype=torch.float16, device=device).requires_grad_()
    _check(gelu, x, w, b)


def test_empty_rows(device):
    x, w, b, r = _inputs(0, 16, 8, torch.float16, device, residual=True)
    y = fl.linear(x, w, b, r)
    y.sum().backward()
    assert y.shape == (0, 8) and (w.grad == 0).all() and (b.grad == 0).all()


# ------------------------------------------------------------------ ahead-of-time compile checks


def _aot(pairs):
    """Compile (variant, cc) pairs with the shared AOT inspector: spawned workers without
    TRITON_INTERPRET, with the tt.divisibility=16 hints listed in each variant's tags (GPT-2's
    aligned shapes), so the figures describe the kernel aligned inputs really run."""
    from tritongpt.bench.static_check import check_pairs

    findings = check_pairs(pairs, "tritongpt.kernels.fused_linear:variants")
    assert not findings, "\n".join(map(str, findings))


# (kernel, config index, dtype, flag set, target): every kernel, the big per-arch tiles, the
# decode tile, bf16 and fp32 paths. 8 compiles in one child process.
SUBSET = [("fwd", 0, "fp16", 0, 80), ("fwd", 1, "fp16", 0, 90), ("fwd", 4, "fp32", 0, 80),
          ("dx", 2, "bf16", 0, 80), ("dx", 1, "fp16", 0, 90), ("dw", 4, "fp16", 0, 80),
          ("dw", 3, "bf16", 0, 90), ("fwd", 5, "fp16", 1, 90)]


def _unpruned_variants():
    """Every shipped variant before the running Triton's spill pruning (kernels/spills.py)."""
    return getattr(fl.variants, "__wrapped__", fl.variants)()


def test_variants_cover_configs():
    vs = _unpruned_variants()
    for kernel, configs in (("fwd", fl.CONFIGS), ("dx", flb.BWD_CONFIGS), ("dw", flb.BWD_CONFIGS)):
        shipped = {fl.CONFIGS[v.tags["config"]] for v in vs if v.tags["kernel"] == kernel}
        assert shipped == set(configs)
    assert all(v.expect_mma and v.archs for v in fl.variants())


def test_aot_subset():
    vs = _unpruned_variants()
    jobs = []
    for kernel, config, dtype, flags, cc in SUBSET:
        (i,) = [i for i, v in enumerate(vs) if v.tags.get("aligned") and (
            v.tags["kernel"], v.tags["config"], v.tags["dtype"], v.tags["flags"]) == (kernel, config, dtype, flags)]
        assert cc in vs[i].archs, (vs[i].name, cc)
        if spills.listed(vs[i], cc):  # spills under this Triton: not shipped there (its fallback is gated)
            continue
        jobs.append((vs[i], cc))
    _aot(jobs)


@pytest.mark.slow
def test_aot_all_variants():
    _aot([(v, cc) for v in fl.variants() for cc in (80, 90) if cc in v.archs])


def test_interpreter_tile_is_small():
    # Guard against slow CI: the interpreter must not autotune (one config, small tiles).
    if interpreter_enabled():
        assert fl.INTERPRET_CONFIG[:3] == (32, 32, 32)


# ----------------------------------------------------------------------------- alignment bucket


@pytest.mark.parametrize("aligned", [True, False])
def test_autotune_keeps_the_unaligned_tiles_for_unaligned_inputs(aligned, monkeypatch):
    """ALIGN (align_bucket) is in each pointer kernel's autotune key, and with ALIGN=0 the prune keeps only
    the configs shipped for unaligned inputs, each compiled in that form (variants())."""
    shipped_unaligned = {(v.tags["kernel"], v.tags["config"], v.tags["dtype"]) for v in _unpruned_variants()
                         if v.tags.get("aligned") is False}
    for kernel, tuned, first in (("fwd", fl._fwd_tuned, "X"), ("dx", flb._dx_tuned, "DY"), ("dw", flb._dw_tuned, "DY")):
        assert "ALIGN" in tuned.keys
        for cc in (80, 90, 100):
            monkeypatch.setattr(launch, "device_limits", lambda device, cc=cc: (cc, launch.SMEM_LIMIT[cc]))
            for dtype, dt in ((torch.float16, "fp16"), (torch.float32, "fp32")):
                own = getattr(tuned.early_config_prune, "__wrapped__", tuned.early_config_prune)
                picked = own(tuned.configs, {first: torch.empty(1, dtype=dtype), "ALIGN": int(aligned)})
                assert picked
                for c in picked:
                    assert c.tile.form == ("aligned" if aligned else "unaligned")
                    if not aligned:
                        assert (kernel, fl.CONFIGS.index(c.tile), dt) in shipped_unaligned


def test_launchers_pass_the_alignment_bucket(monkeypatch):
    """Aligned operands launch with ALIGN=1; an odd view (row stride 65 elements) with ALIGN=0."""
    from tritongpt.kernels import kernel_variant

    seen = []
    real = kernel_variant.align_bucket
    monkeypatch.setattr(fl, "align_bucket", lambda *ts: seen.append(real(*ts)) or seen[-1])
    monkeypatch.setattr(flb, "align_bucket", lambda *ts: seen.append(real(*ts)) or seen[-1])
    w = torch.randn(16, 48)
    for x in (torch.randn(8, 48), torch.randn(8, 65)[:, :48]):
        x.requires_grad_(True)
        fl.linear(x, w.requires_grad_(True), None).sum().backward()
    # forward (x, W), dx (dy, W: aligned either way), dW (dy, x) per input
    assert seen == [1, 1, 1, 0, 1, 0]

