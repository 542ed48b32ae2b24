"""Fused attention (FlashAttention-2 forward + backward) against a naive fp64 reference.

Tolerance rule: the kernel's max error vs the fp64 reference may be at most 2x the error of a
naive PyTorch attention computed in the same low dtype, plus a small atol (scaled by the
reference's magnitude when it exceeds 1). Every output buffer
the launchers allocate is poisoned with NaN, so an element the kernel forgets to write fails.
"""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tritongpt.kernels.flash_attention as fa
import tritongpt.kernels.flash_attention_bwd as fab
from tritongpt.kernels import launch, spills, versions
from tritongpt.kernels.attention_config import TunedConfig
from tritongpt.kernels.flash_attention import attention
from tritongpt.kernels.kernel_variant import launch_divisible

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("poison_attention")]

ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def naive(q, k, v, causal, scale):
    """softmax(q k^T * scale + end-aligned causal mask) v in the inputs' dtype; also returns LSE."""
    s = (q @ k.transpose(-1, -2)) * scale
    tq, tk = s.shape[-2:]
    if causal:
        i = torch.arange(tq, device=q.device)[:, None]
        j = torch.arange(tk, device=q.device)[None, :]
        s = s.masked_fill(j > i + tk - tq, float("-inf"))
    # Softmax in at least fp32, as PyTorch's own SDPA math path does for low-precision inputs.
    p = torch.softmax(s.to(torch.promote_types(s.dtype, torch.float32)), -1).to(q.dtype)
    return p @ v, torch.logsumexp(s.double(), -1)


def _grads(fn, inputs, do):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    out.backward(do.to(out.dtype))
    return out.detach(), [t.grad for t in leaves]


def _max_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return (a.double() - ref).abs().max().item()


def check_against_reference(q, k, v, causal, scale=None, do=None, fwd=None):
    """Forward and dq/dk/dv of ``fwd`` (default: attention) vs fp64, with the 2x-PyTorch rule."""
    dtype = q.dtype
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if do is None:
        do = torch.randn(q.shape[:-1] + (v.shape[-1],), dtype=dtype, device=q.device)
    fwd = fwd or (lambda a, b, c: attention(a, b, c, causal=causal, sm_scale=scale))
    out, grads = _grads(fwd, (q, k, v), do)
    ref, ref_grads = _grads(lambda a, b, c: naive(a, b, c, causal, sc)[0], (q.double(), k.double(), v.double()),
                            do.double())
    low, low_grads = _grads(lambda a, b, c: naive(a, b, c, causal, sc)[0], (q, k, v), do)
    assert out.dtype == dtype and out.shape == q.shape[:-1] + (v.shape[-1],) and out.is_contiguous()
    for name, got, want, theirs in zip(("out", "dq", "dk", "dv"), [out, *grads], [ref, *ref_grads],
                                       [low, *low_grads], strict=True):
        assert got.dtype == dtype and got.shape == want.shape, name
        assert not torch.isnan(got).any(), f"{name}: NaN (unwritten or bad) elements"
        err, torch_err = _max_err(got, want), _max_err(theirs, want)
        # atol scales with the magnitude: rounding alone costs half an ulp, 1e-3 at |x| = 2 in fp16, and
        # PyTorch's own error can be luckily small (seen: dq 2.1e-3 vs 3.9e-4 at max |dq| = 2.4, D = 1).
        atol = ATOL[dtype] * max(1.0, want.abs().max().item())
        assert err <= 2 * torch_err + atol, f"{name}: max error {err:.3g} vs PyTorch {torch_err:.3g}"


def _qkv(b, h, tq, tk, d, dtype, device):
    return (torch.randn(b, h, tq, d, dtype=dtype, device=device),
            torch.randn(b, h, tk, d, dtype=dtype, device=device),
            torch.randn(b, h, tk, d, dtype=dtype, device=device))


SHAPES = [
    # (B, H, Tq, Tk, D, causal)
    (2, 3, 1, 1, 16, True),  # T=1
    (1, 2, 7, 7, 64, True),  # T below one block
    (1, 2, 64, 64, 128, True),  # aligned: EVEN_M/EVEN_D fast paths
    (1, 2, 97, 97, 80, True),  # prime T, non-power-of-two D (BLOCK_D=128 masked)
    (1, 1, 130, 130, 64, False),  # just past two blocks, non-causal
    (1, 2, 1, 97, 64, True),  # decode step over a KV cache
    (2, 1, 7, 64, 16, True),  # prefill of 7 tokens after 57 cached ones
    (1, 2, 97, 64, 80, False),  # Tq > Tk, non-causal
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_attention_matches_reference(shape, dtype, device):
    b, h, tq, tk, d, causal = shape
    check_against_reference(*_qkv(b, h, tq, tk, d, dtype, device), causal)


@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((1, 2, 45, 45, 96, False), torch.bfloat16),  # D=96: BLOCK_D=128 with a masked quarter, bf16
        ((1, 1, 130, 130, 64, True), torch.float16),  # causal just past two blocks: diagonal + ragged tail
    ],
    ids=["D96-bf16", "causal-T130-fp16"],
)
def test_attention_extra_shapes(shape, dtype, device):
    b, h, tq, tk, d, causal = shape
    check_against_reference(*_qkv(b, h, tq, tk, d, dtype, device), causal)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp2:RuntimeWarning")  # masked lanes, by design
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("tq", [1, 5])
def test_very_negative_lse_no_nan(tq, causal, dtype, device):
    """Rows whose LSE is far below -88 (q . k strongly negative everywhere) with Tk not a multiple of
    the key block: keys past Tk load as zeros, score 0, and exp(0 - lse) overflows; it must be
    masked, not multiplied by zero (inf * 0 = NaN in dq)."""
    q = 10 + 0.1 * torch.randn(1, 1, tq, 16, device=device)
    k = -3 + 0.1 * torch.randn(1, 1, 7, 16, device=device)
    v = torch.randn(1, 1, 7, 16, device=device)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    _, lse = torch.ops.tritongpt.attention_fwd(q, k, v, causal, 0.25)
    assert (lse < -100).all()
    check_against_reference(q, k, v, causal)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("causal", [True, False])
def test_lse(dtype, causal, device):
    q, k, v = _qkv(2, 2, 33, 70, 32, dtype, device)
    out, lse = torch.ops.tritongpt.attention_fwd(q, k, v, causal, 0.3)
    ref_out, ref_lse = naive(q.double(), k.double(), v.double(), causal, 0.3)
    assert lse.dtype == torch.float32 and lse.shape == (2, 2, 33)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-5, rtol=1e-5)


def test_custom_scale_and_strided_do(device):
    """Explicit sm_scale; dO of out.sum() is an expanded (all-zero-stride) view, dO.T a transposed one."""
    q, k, v = _qkv(1, 2, 40, 40, 32, torch.float16, device)
    check_against_reference(q, k, v, True, scale=0.05)
    do = torch.randn(1, 2, 32, 40, dtype=torch.float16, device=device).transpose(-1, -2)
    check_against_reference(q, k, v, False, scale=0.3, do=do)
    leaf = q.clone().requires_grad_()
    attention(leaf, k, v).sum().backward()
    assert torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_packed_qkv_views_without_copies(dtype, device, monkeypatch):
    """q, k, v as head-split views of one (B, T, 3C) projection, as in a GPT block."""
    b, t, n_head, d = 2, 37, 3, 16
    c = n_head * d
    x = torch.randn(b, t, c, dtype=dtype, device=device)
    w = torch.randn(c, 3 * c, dtype=dtype, device=device) / math.sqrt(c)
    seen = []
    launch = fa.attention_fwd_launch

    def spy(q, k, v, *args, **kwargs):
        seen.append([(tuple(a.stride()), a.data_ptr()) for a in (q, k, v)])
        return launch(q, k, v, *args, **kwargs)

    monkeypatch.setattr(fa, "attention_fwd_launch", spy)

    def heads(w_):
        q, k, v = (x @ w_).split(c, dim=2)
        return [z.view(b, t, n_head, d).transpose(1, 2) for z in (q, k, v)]  # (B, nh, T, hs)

    qkv = heads(w)
    assert not any(z.is_contiguous() for z in qkv)
    check_against_reference(*qkv, True)  # (on clones of the views, which keep a strided layout)

    # The exact views reach the kernel, and gradients flow back through them into the weight.
    seen.clear()
    wg = w.detach().clone().requires_grad_()
    qkv = heads(wg)
    attention(*qkv).float().square().sum().backward()
    assert seen == [[(tuple(z.stride()), z.data_ptr()) for z in qkv]], "the kernel must get the views"
    w64 = w.detach().double().requires_grad_()
    x64 = x.double()
    q, k, v = [z.view(b, t, n_head, d).transpose(1, 2) for z in (x64 @ w64).split(c, dim=2)]
    naive(q, k, v, True, 1 / math.sqrt(d))[0].square().sum().backward()
    torch.testing.assert_close(wg.grad.double(), w64.grad, atol=0.5, rtol=0.05)


# Block shapes the fuzz test forces, so every BLOCK_M/BLOCK_N ratio meets the stage split logic.
BLOCKS = [16, 32, 64]


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    b=st.integers(1, 2), h=st.integers(1, 2), tq=st.integers(1, 70), extra=st.integers(0, 40),
    d=st.sampled_from([1, 8, 24, 48, 64]), causal=st.booleans(),
    dtype=st.sampled_from(DTYPES), layout=st.sampled_from(["bhtd", "bthd", "tbhd"]),
    bm=st.sampled_from(BLOCKS), bn=st.sampled_from(BLOCKS), bm2=st.sampled_from(BLOCKS),
    bn2=st.sampled_from(BLOCKS),
)
def test_fuzz_shapes_strides_blocks(b, h, tq, extra, d, causal, dtype, layout, bm, bn, bm2, bn2):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tk = tq + extra if causal else max(1, tq + extra - 20)

    def make(t):  # same logical (B, H, T, D) tensor in several memory layouts
        perm = {"bhtd": (0, 1, 2, 3), "bthd": (0, 2, 1, 3), "tbhd": (2, 0, 1, 3)}[layout]
        shape = [(b, h, t, d)[i] for i in perm]
        return torch.randn(shape, dtype=dtype, device=device).permute(*[perm.index(i) for i in range(4)])

    q, k, v = make(tq), make(tk), make(tk)

    def fwd(q_, k_, v_):
        return _ForcedBlocks.apply(q_, k_, v_, causal, TunedConfig(bm, bn, 4, 1), TunedConfig(bm2, bn2, 4, 1),
                                   TunedConfig(max(16, bn2), bm2, 4, 1))

    check_against_reference(q, k, v, causal, fwd=fwd)


class _ForcedBlocks(torch.autograd.Function):
    """The launchers with forced block shapes (the public op picks one config per device)."""

    @staticmethod
    def forward(ctx, q, k, v, causal, fwd_cfg, dkdv_cfg, dq_cfg):
        scale = 1.0 / math.sqrt(q.shape[-1])
        out, lse = fa.attention_fwd_launch(q, k, v, causal, scale, config=fwd_cfg)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (causal, scale, dkdv_cfg, dq_cfg)
        return out

    @staticmethod
    def backward(ctx, do):
        causal, scale, dkdv_cfg, dq_cfg = ctx.args
        dq, dk, dv = fab.attention_bwd_launch(do, *ctx.saved_tensors, causal, scale,
                                              dkdv_config=dkdv_cfg, dq_config=dq_cfg)
        return dq, dk, dv, None, None, None, None


def test_torch_compile_fullgraph(device):
    q, k, v = _qkv(1, 2, 20, 20, 32, torch.float16, device)
    compiled = torch.compile(lambda a, b_, c: attention(a, b_, c, causal=True), fullgraph=True, backend="aot_eager")
    check_against_reference(q, k, v, True, fwd=compiled)


@pytest.mark.parametrize("scale", ["const", "from-shape"])
def test_torch_compile_dynamic(scale, device):
    """dynamic=True traces numbers symbolically (a constant scale, or one computed from a symbolic
    shape): validating sm_scale must neither break the graph nor reject a symbolic float."""
    torch._dynamo.reset()

    def fn(a, b_, c):
        sm_scale = 0.3 if scale == "const" else 0.3 * (a.shape[-1] / 32) ** 0.5
        return attention(a, b_, c, causal=False, sm_scale=sm_scale)

    compiled = torch.compile(fn, fullgraph=True, dynamic=True, backend="aot_eager")
    for t in (20, 29):
        check_against_reference(*_qkv(1, 2, t, t + 3, 32, torch.float16, device), False, scale=0.3, fwd=compiled)


@pytest.mark.parametrize("which", ["q", "k", "v", "kv"])
def test_requires_grad_subsets(which, device, monkeypatch):
    """Only the gradients asked for come back, and a kernel whose outputs nobody needs does not run."""
    launched = []
    for name, kind in (("_attn_bwd_dkdv_kernel", "dkdv"), ("_dkdv_tuned", "dkdv"), ("_attn_bwd_dq_kernel", "dq"),
                       ("_dq_tuned", "dq")):  # plain kernels run under the interpreter, tuned ones on a GPU
        monkeypatch.setattr(fab, name, _LaunchSpy(getattr(fab, name), kind, launched))
    q, k, v = _qkv(1, 2, 19, 23, 16, torch.float32, device)
    do = torch.randn_like(q)
    leaves = {n: t.clone().requires_grad_(n in which) for n, t in zip("qkv", (q, k, v), strict=True)}
    attention(*leaves.values(), causal=False).backward(do)
    ref = {n: t.double().requires_grad_() for n, t in zip("qkv", (q, k, v), strict=True)}
    naive(*ref.values(), False, 0.25)[0].backward(do.double())
    for n, t in leaves.items():
        if n in which:
            torch.testing.assert_close(t.grad.double(), ref[n].grad, atol=1e-5, rtol=1e-4)
        else:
            assert t.grad is None, n
    assert launched.count("dq") == ("q" in which)
    assert launched.count("dkdv") == ("k" in which or "v" in which)


def test_bwd_op_skipped_outputs_are_distinct(device):
    q, k, v = _qkv(1, 1, 4, 4, 16, torch.float32, device)
    out, lse = torch.ops.tritongpt.attention_fwd(q, k, v, True, 0.25)
    dq, dk, dv = torch.ops.tritongpt.attention_bwd(torch.randn_like(out), q, k, v, out, lse, True, 0.25, False, False)
    assert dq.shape == dk.shape == dv.shape == (0,) and dq is not dk and dk is not dv
    dq, dk, dv = torch.ops.tritongpt.attention_bwd(torch.randn_like(out), q, k, v, out, lse, True, 0.25, True, False)
    assert dq.shape == q.shape and dk.shape == dv.shape == (0,) and not torch.isnan(dq).any()


class _LaunchSpy:
    """Stands in for a Triton kernel: records ``kernel[grid]`` launches (name, grid), then launches."""

    def __init__(self, kernel, name, log):
        self.kernel, self.name, self.log = kernel, name, log
        self.grids = []

    def __getitem__(self, grid):
        self.log.append(self.name)
        self.grids.append(grid)
        return self.kernel[grid]


def test_grid_puts_batch_heads_on_the_large_axis(device, monkeypatch):
    """CUDA caps grid axes 1 and 2 at 65535: B*H must not live there. The kernels take one axis of
    B*H*blocks programs (checked here for the grid shape; the index math by every other test)."""
    spies = {}
    for mod, name in ((fa, "_attn_fwd_kernel"), (fab, "_bwd_preprocess_kernel"), (fab, "_attn_bwd_dkdv_kernel"),
                      (fab, "_attn_bwd_dq_kernel")):
        spies[name] = _LaunchSpy(getattr(mod, name), name, [])
        monkeypatch.setattr(mod, name, spies[name])
    b, h, tq, tk = 2, 3, 37, 45
    q, k, v = _qkv(b, h, tq, tk, 16, torch.float16, device)
    fwd_cfg, dkdv_cfg, dq_cfg = TunedConfig(16, 32, 4, 1), TunedConfig(16, 32, 4, 1), TunedConfig(32, 16, 4, 1)
    out, lse = fa.attention_fwd_launch(q, k, v, False, 0.25, config=fwd_cfg)
    grads = fab.attention_bwd_launch(torch.randn_like(out), q, k, v, out, lse, False, 0.25, dkdv_config=dkdv_cfg,
                                     dq_config=dq_cfg)
    assert not any(torch.isnan(t).any() for t in (out, lse, *grads))
    blocks = {"_attn_fwd_kernel": -(-tq // 16), "_bwd_preprocess_kernel": -(-tq // fab._PRE_BLOCK_M),
              "_attn_bwd_dkdv_kernel": -(-tk // 32), "_attn_bwd_dq_kernel": -(-tq // 32)}
    for name, spy in spies.items():
        assert spy.grids == [(b * h * blocks[name],)], name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (65537 programs are too slow to interpret)")
def test_more_than_65535_batch_heads():
    q, k, v = (t.requires_grad_() for t in _qkv(257, 256, 3, 5, 16, torch.float16, "cuda"))
    out = attention(q, k, v, causal=False)
    ref = naive(q.detach().float(), k.detach().float(), v.detach().float(), False, 0.25)[0]
    torch.testing.assert_close(out.float(), ref, atol=2e-3, rtol=2e-3)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_launch_uses_the_tensors_device(device, monkeypatch):
    """Triton launches on the current GPU: each launch runs under device_guard(q), and the autotune
    prune asks for the capability of the tensors' GPU, not the current one."""
    guarded = []

    @contextlib.contextmanager
    def guard(t):
        guarded.append(t.shape)
        yield

    monkeypatch.setattr(fa, "device_guard", guard)
    monkeypatch.setattr(fab, "device_guard", guard)
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 9, 11, 16, torch.float32, device))
    attention(q, k, v).sum().backward()
    assert guarded == [q.shape, q.shape]  # forward launch, backward launches

    seen = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: seen.append(device) or (9, 0))
    nargs = {"Q": torch.empty(1, device="meta"), "TQ": 128, "TK": 128, "D": 64, "ALIGN": 1}
    assert fab.pick_configs(fa.FWD_TABLES, nargs, {"BLOCK_D": 64, "CAUSAL": True})
    assert seen == [torch.device("meta")]


def test_empty_batch(device):
    q, k, v = _qkv(0, 2, 5, 5, 16, torch.float16, device)
    assert attention(q, k, v).shape == (0, 2, 5, 16)


# ----------------------------------------------------------------------------- bad input


def _good(device, **kw):
    args = dict(q=torch.randn(1, 2, 4, 16, device=device), k=torch.randn(1, 2, 6, 16, device=device),
                v=torch.randn(1, 2, 6, 16, device=device))
    args.update(kw)
    return args


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda dev: _good(dev, q=torch.randn(2, 4, 16, device=dev)), ValueError, "q: expected a 4-D"),
        (lambda dev: _good(dev, k=[[1.0]]), TypeError, "k: expected a torch.Tensor"),
        (lambda dev: _good(dev, v=torch.randn(1, 2, 6, 16, device=dev).half()), TypeError, "v: dtype"),
        (lambda dev: _good(dev, q=torch.randn(1, 2, 4, 16, device=dev).double()), TypeError, "q: expected dtype"),
        (lambda dev: _good(dev, k=torch.randn(2, 2, 6, 16, device=dev)), ValueError, r"k, v: expected \(B, H\)"),
        (lambda dev: _good(dev, v=torch.randn(1, 3, 6, 16, device=dev)), ValueError, r"k, v: expected \(B, H\)"),
        (lambda dev: _good(dev, v=torch.randn(1, 2, 5, 16, device=dev)), ValueError, "v: expected the shape of k"),
        (lambda dev: _good(dev, k=torch.randn(1, 2, 6, 8, device=dev), v=torch.randn(1, 2, 6, 8, device=dev)),
         ValueError, "k: expected head dim"),
        (lambda dev: _good(dev, q=torch.randn(1, 2, 4, 256, device=dev), k=torch.randn(1, 2, 6, 256, device=dev),
                           v=torch.randn(1, 2, 6, 256, device=dev)), ValueError, "head dim D must be"),
        (lambda dev: _good(dev, q=torch.randn(1, 2, 4, 0, device=dev), k=torch.randn(1, 2, 6, 0, device=dev),
                           v=torch.randn(1, 2, 6, 0, device=dev)), ValueError, "head dim D must be"),
        (lambda dev: _good(dev, k=torch.randn(1, 2, 0, 16, device=dev), v=torch.randn(1, 2, 0, 16, device=dev)),
         ValueError, "at least one key"),
        (lambda dev: _good(dev, q=torch.randn(1, 2, 7, 16, device=dev)), ValueError, "causal attention needs Tq <= Tk"),
        (lambda dev: _good(dev, q=torch.randn(1, 2, 16, 4, device=dev).transpose(-1, -2)), ValueError,
         "q: the last dimension must be contiguous"),
        (lambda dev: {**_good(dev), "causal": 1}, TypeError, "causal: expected a bool"),
        (lambda dev: {**_good(dev), "causal": "yes"}, TypeError, "causal: expected a bool"),
        (lambda dev: {**_good(dev), "causal": torch.tensor(True)}, TypeError, "causal: expected a bool"),
        (lambda dev: {**_good(dev), "sm_scale": "0.1"}, TypeError, "sm_scale: expected a real number"),
        (lambda dev: {**_good(dev), "sm_scale": True}, TypeError, "sm_scale: expected a real number"),
        (lambda dev: {**_good(dev), "sm_scale": torch.tensor(0.1)}, TypeError, "sm_scale: expected a Python number"),
        (lambda dev: {**_good(dev), "sm_scale": float("inf")}, ValueError, "sm_scale: expected a finite"),
        (lambda dev: {**_good(dev), "sm_scale": float("nan")}, ValueError, "sm_scale: expected a finite"),
        (lambda dev: {**_good(dev), "sm_scale": 0.0}, ValueError, "sm_scale: expected a positive"),
        (lambda dev: {**_good(dev), "sm_scale": -0.1}, ValueError, "sm_scale: expected a positive"),
        (lambda dev: {**_good(dev), "sm_scale": 1e38 * 3}, ValueError, "sm_scale: .* is too large"),
        (lambda dev: {**_good(dev), "sm_scale": np.float64(2.4e38)}, ValueError, "sm_scale: .* is too large"),
        (lambda dev: _good(dev, k=torch.empty(1, 2, 6, 16, device="meta")), ValueError,
         "k: device meta does not match q device"),
        (lambda dev: _good(dev, v=torch.empty(1, 2, 6, 16, device="meta").half()), ValueError,
         "v: device meta does not match q device"),
    ],
    ids=["rank", "not-tensor", "dtype-mismatch", "fp64", "batch", "heads", "kv-shape", "head-dim", "D>128", "D=0",
         "Tk=0", "causal-Tq>Tk", "last-stride", "causal-int", "causal-str", "causal-tensor", "scale-str",
         "scale-bool", "scale-tensor", "scale-inf", "scale-nan", "scale-zero", "scale-negative", "scale-overflow",
         "scale-overflow-numpy", "device-mismatch", "device-before-dtype"],
)
def test_bad_input(make, exc, match, device):
    with pytest.raises(exc, match=match):
        attention(**make(device))


def test_numpy_scalars_accepted(device):
    q, k, v = _qkv(1, 1, 5, 7, 16, torch.float32, device)
    ref = attention(q, k, v, causal=True, sm_scale=0.3)
    torch.testing.assert_close(attention(q, k, v, causal=np.bool_(True), sm_scale=np.float32(0.3)), ref)
    torch.testing.assert_close(attention(q, k, v, causal=np.True_, sm_scale=np.float64(0.3)), ref)


def _fake(shape, stride, dtype=torch.float16):
    """A CPU tensor with any strides and no storage: validation reads only metadata, so layouts too
    big to allocate can be checked (nothing is launched)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return torch.empty_strided(shape, stride, dtype=dtype)


_BIG = 2**30 + 16  # a row stride that puts row 2 past 2**31 within one (batch, head) slice


@pytest.mark.skipif(torch.cuda.is_available(), reason="fake CPU tensors pass validation only under the interpreter")
@pytest.mark.parametrize("arg", ["q", "k", "v"])
def test_int32_slice_offsets_rejected(arg):
    """Offsets inside a (batch, head) slice are int32: a layout whose slice reaches 2**31 elements is
    refused before launch, naming the argument."""
    args = {n: _fake((1, 2, 3, 16), (96, 48, 16, 1)) for n in "qkv"}
    args[arg] = _fake((1, 2, 3, 16), (96, 48, _BIG, 1))
    with pytest.raises(ValueError, match=f"{arg}: one \\(batch, head\\) slice spans"):
        attention(**args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="fake CPU tensors pass validation only under the interpreter")
def test_int32_output_and_grid_limits_rejected():
    # An expanded q (row stride 0) spans nothing, but the contiguous output would hold T*D > 2**31.
    big_t = 2**24 + 1
    q = _fake((1, 1, big_t, 128), (0, 0, 0, 1))
    with pytest.raises(ValueError, match=r"q: a \(T, D\) = \(16777217, 128\) slice has more than 2\*\*31"):
        attention(q, q, q)
    # B*H*ceil(T/16) programs on one grid axis must fit in 2**31 - 1.
    q = _fake((2**16, 2**11, 256, 16), (0, 0, 16, 1))
    with pytest.raises(ValueError, match="programs exceed the 2\\*\\*31 - 1 grid limit"):
        attention(q, q, q)
    # dO and O are checked by the backward launcher too.
    ok = _fake((1, 2, 3, 16), (96, 48, 16, 1))
    bad = _fake((1, 2, 3, 16), (96, 48, _BIG, 1))
    lse = _fake((1, 2, 3), (6, 3, 1), torch.float32)
    with pytest.raises(ValueError, match="do: one"):
        fab.attention_bwd_launch(bad, ok, ok, ok, ok, lse, True, 0.25)
    with pytest.raises(ValueError, match="o: one"):
        fab.attention_bwd_launch(ok, ok, ok, ok, bad, lse, True, 0.25)


def test_noncausal_allows_tq_gt_tk(device):
    q, k, v = _qkv(1, 1, 9, 4, 16, torch.float32, device)
    assert attention(q, k, v, causal=False).shape == (1, 1, 9, 16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU tensors are only refused without the interpreter")
def test_cpu_tensor_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="q: expected a tensor on a CUDA device"):
        attention(**_good("cpu"))


# ----------------------------------------------------------------------------- GPU config pruning


@pytest.mark.parametrize("arch", [80, 90, 100])
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "noncausal"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["float16", "float32"])
@pytest.mark.parametrize("tq, tk, d", [(512, 512, 64), (500, 512, 64), (256, 256, 128), (97, 97, 80), (1, 9, 16),
                                       (256, 384, 128), (256, 300, 128)])
def test_autotune_prune_keeps_only_compiled_configs(arch, aligned, causal, dtype, tq, tk, d, monkeypatch):
    """What the GPU autotuner may try is non-empty and was compiled (spill-free) for that arch, in the same
    alignment, causality, dtype and evenness (unaligned inputs always run the masked form); where sm_100a's
    table leaves a form out, the sm_90a configs compiled for it. Asks the autotuners' own prune hooks: on a
    Triton with spill entries (kernels/spills.py) they also drop what that compiler spills on."""
    if arch not in _targets():
        pytest.skip(f"sm_{arch} is not gated under Triton {'.'.join(map(str, versions.triton_version()))}")
    monkeypatch.setattr(fab, "_arch", lambda device=None: arch)
    monkeypatch.setattr(spills, "target_arch", lambda device: arch)
    block_d = launch.block_d(d)
    nargs = {"Q": torch.empty(1, dtype=dtype), "TQ": tq, "TK": tk, "D": d, "ALIGN": int(aligned)}
    even = aligned and d == block_d and tq % 128 == 0 and tk % 128 == 0
    dt = "fp32" if dtype == torch.float32 else "fp16"

    def matches(v, cc):  # compiled for cc at this BLOCK_D, dtype, causality, alignment and evenness
        t = v.tags
        if t["kernel"] == "preprocess" or cc not in v.archs or t["dtype"] != dt or t["D"] != block_d:
            return False
        return t["causal"] == causal and t["aligned"] == aligned and (dt == "fp32" or t["even"] == even)

    def compiled(kernel, cc):
        return {(v.constexprs["BLOCK_M"], v.constexprs["BLOCK_N"], v.num_warps, v.num_stages)
                for v in fa.variants() if v.tags["kernel"] == kernel and matches(v, cc)}

    for kernel, tuned in (("fwd", fa._attn_fwd_tuned), ("dkdv", fab._dkdv_tuned), ("dq", fab._dq_tuned)):
        picked = tuned.early_config_prune(tuned.configs, nargs, BLOCK_D=block_d, CAUSAL=causal)
        assert picked, kernel
        allowed = compiled(kernel, arch) or compiled(kernel, fab.STAND_IN.get(arch, arch))
        for c in picked:
            key = (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
            assert key in allowed, f"{kernel} {key} is not a variant compiled for sm_{arch} (or its stand-in)"


def test_tune_bucket():
    assert [fab.tune_bucket(t) for t in (1, 100, 128, 129, 256, 1000, 1024)] == [2, 129, 128, 257, 256, 1025, 1024]


# ----------------------------------------------------------------------------- AOT compile checks


def _inspect(pairs):
    """Compile (variant, cc) pairs with the shared AOT inspector (spawned workers without
    TRITON_INTERPRET, results cached on disk by source) and apply the absolute rules: no spills, fits
    shared memory, tensor cores, and wgmma/tcgen05 on sm_90a/sm_100a for 64-row fp16/bf16 tiles. Up to
    255 registers is fine."""
    import dataclasses

    from tritongpt.bench import static_check as ins

    narrowed = [dataclasses.replace(v, archs=(cc,)) for v, cc in pairs]
    records = ins.inspect(narrowed, ["sm_80", "sm_90a", "sm_100a"], jobs=2, progress=False,
                          source="tritongpt.kernels.flash_attention:variants")
    assert len(records) == len(pairs)
    findings = [str(f) for f in ins.check_absolute(records)]
    assert not findings, "\n".join(findings)


def _targets():
    # sm_100a is gated from Triton 3.4 on (the first with tensor descriptors); under 3.3 the Blackwell
    # forms are left to the runtime compiled-facts prune.
    return (80, 90, 100) if versions.triton_version() >= (3, 4) else (80, 90)


def _pairs():
    return [(v, cc) for v in fa.variants() for cc in v.archs if cc in _targets()]


def test_variants_cover_every_form():
    """Every kernel ships causal and non-causal, even and ragged forms, and names are unique."""
    vs = fa.variants()
    assert len({v.name for v in vs}) == len(vs)
    forms = {(v.tags["kernel"], v.tags["causal"], v.tags["even"], v.tags["dtype"]) for v in vs}
    for kernel in ("fwd", "dkdv", "dq"):
        for causal in (True, False):
            for even in (True, False):
                assert (kernel, causal, even, "fp16") in forms, (kernel, causal, even)
            assert (kernel, causal, True, "fp32") in forms, (kernel, causal)
    assert all(v.constexprs["CAUSAL"] == v.tags["causal"] for v in vs if v.tags["kernel"] != "preprocess")


def _tiles(kernel, cc, d=128, even=True, causal=True):
    unpruned = getattr(fa.variants, "__wrapped__", fa.variants)()  # the tables, before a Triton's spill list
    return {(v.constexprs["BLOCK_M"], v.constexprs["BLOCK_N"], v.num_warps) for v in unpruned
            if v.tags["kernel"] == kernel and cc in v.archs and v.tags["D"] == d and v.tags["dtype"] == "fp16"
            and v.tags["aligned"] and v.tags["even"] == even and v.tags["causal"] == causal}


@pytest.mark.parametrize("cc", [90, 100])
def test_wgmma_sized_tiles_ship_on_hopper_and_blackwell(cc):
    """Aligned fp16 inputs at D=128 and D=64: the forward ships 128x128 and 128x64 8-warp tiles; the
    backward's dK/dV and dQ ship tiles of 64 or more both ways, ragged T included, except the ragged causal
    dK/dV on sm_90a (64x64 spills 96 B there; it gets 32x128, whose wgmma M is still the 128 keys)."""
    for d in (64, 128):
        for causal in (True, False):
            assert {(128, 128, 8), (128, 64, 8)} <= _tiles("fwd", cc, d, causal=causal)
            assert {(128, 128, 8), (128, 64, 8)} <= _tiles("fwd", cc, d, even=False, causal=causal)
            for kernel in ("dkdv", "dq"):
                for even in (True, False):
                    big = {t for t in _tiles(kernel, cc, d, even, causal) if min(t[:2]) >= 64}
                    if (cc, d, kernel, even, causal) == (90, 128, "dkdv", False, True):
                        assert not big and (32, 128, 8) in _tiles(kernel, cc, d, even, causal)
                    else:
                        assert big, (kernel, d, even, causal)
    assert (128, 64, 8) in _tiles("fwd", 80)  # sm_80: the tutorial's 128x64 8-warp tile at D=128


@pytest.mark.parametrize("t, d, aligned", [(1024, 64, True), (1000, 48, True), (100, 40, False)])
def test_variant_forms_mark_what_the_launcher_marks(t, d, aligned):
    """The forward's compiled forms carry the launcher's own divisibility marks (launch_divisible on the
    arguments of a real launch over a packed-qkv view): exactly for the aligned even form; the ragged and
    unaligned forms claim no more than a launch gets (they stand for the worst case of their class)."""
    B, H = 2, 3
    qkv = torch.zeros(B, t, 3, H, d, dtype=torch.float16).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D) views
    q, k, v = qkv[0], qkv[1], qkv[2]
    out = torch.empty(B, H, t, d, dtype=torch.float16)
    lse = torch.empty(B, H, t)
    names = ("Q K V O LSE stride_qb stride_qh stride_qm stride_kb stride_kh stride_kn stride_vb stride_vh "
             "stride_vn stride_ob stride_oh stride_om H TQ TK D").split()
    strides = [s for x in (q, k, v, out) for s in x.stride()[:3]]
    marked = set(launch_divisible(dict(zip(names, [q, k, v, out, lse, *strides, H, t, t, d], strict=True))))
    even = aligned and t % 128 == 0 and d == launch.block_d(d)
    assert fab.align_bucket(q, k, v) == int(aligned)
    form = next(v for v in fa.fwd_variants() if v.tags["dtype"] == "fp16" and v.tags["aligned"] == aligned
                and v.tags["even"] == even)
    claimed = set(form.tags["divisible_by_16"])
    if even:
        assert claimed == marked
    elif aligned:  # ragged: every pointer and stride; T and D unmarked (the launcher may mark some of them)
        assert claimed <= marked and marked - claimed <= {"TQ", "TK", "D"}
    else:  # the unaligned form claims only the fresh outputs, a subset of what any launch gets
        assert claimed <= marked and not any(n.startswith("stride") for n in claimed)


def _representative():
    """~20 compiles: the largest shipped tile of each kernel at D=128 fp16 on both targets, causal and
    non-causal, plus the ragged (masked-load) forms and the causal fp32 (FMA) forms on the target
    where they are tightest (ragged dQ only non-causal, where its key mask lives)."""
    best = {}
    for v, cc in _pairs():
        t = v.tags
        if t["kernel"] == "preprocess" or t["D"] != 128:
            continue
        tight = cc == (90 if t["dtype"] == "fp32" else 80)
        if t["dtype"] == "bf16" or (not t["even"] or t["dtype"] == "fp32") and not tight:
            continue
        if t["dtype"] == "fp32" and not t["causal"]:
            continue
        key = (t["kernel"], t["dtype"], t["even"], t["causal"], t["aligned"], cc)
        size = v.constexprs["BLOCK_M"] * v.constexprs["BLOCK_N"]
        if key not in best or size > best[key][0]:
            best[key] = (size, v)
    picked = [(v, key[-1]) for key, (_, v) in sorted(best.items(), key=lambda kv: kv[0])]
    return [(v, cc) for v, cc in picked if v.tags["even"] or v.tags["kernel"] != "dq" or not v.tags["causal"]]


@pytest.mark.skipif(os.environ.get("TRITONGPT_SKIP_AOT") == "1", reason="AOT checks disabled")
def test_aot_representative():
    _inspect(_representative())


@pytest.mark.slow
def test_aot_all_variants():
    """Every shipped variant for each target it ships for (~250 compiles, ~12 min on 2 cores uncached)."""
    _inspect(_pairs())
