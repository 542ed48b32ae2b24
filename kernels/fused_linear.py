"""Linear layers with the elementwise tail fused into the GEMM epilogue (forward and backward).

    gelu_linear(x, W, b)         = gelu_tanh(x @ W^T + b)       GPT-2 MLP c_fc + GELU
    linear(x, W, b, residual)    = x @ W^T + b (+ residual)     c_proj of MLP / attention (+ skip)

Algorithm: one tiled GEMM per output (Triton matmul tutorial structure: grouped program order for
L2 reuse, fp32 accumulator, plain pointer arithmetic since Triton 3.9 removed block pointers). The
bias add, the GELU (tanh approximation, as ``F.gelu(approximate="tanh")``) and the residual add run
on the fp32 accumulator before the single cast to the storage dtype. When autograd needs it,
the GELU epilogue also writes g = gelu'(z) (z = x W^T + b) in the storage dtype; inference never
allocates or writes it. The backward (``fused_linear_bwd``) multiplies dy by g inside the
prologue of the dx and dW GEMMs and fuses db into the dW GEMM; see that module for the design.

Scope: x (..., K) with unit stride on its last dim (other strides passed through; no copy unless
the leading dims cannot be flattened to a view); W (N, K) in nn.Linear layout with any strides;
bias (N,) or None; residual (..., N); M and N may be 0. Offsets along a GEMM's reduction dim are
32-bit inside a tile (rows and output columns are 64-bit): an operand whose stride there is 2**24 or
more is copied contiguous first, ValueError if even that does not fit (a dim of 2**24 elements).
Kernels launch on the inputs' GPU whatever the current device. fp16, bf16 and fp32, all inputs the
same dtype. fp32 runs on TF32 tensor cores on GPUs (``tl.dot``'s default): ~1e-3 relative error, like
``torch.backends.cuda.matmul.allow_tf32 = True``; the interpreter computes exact fp32.
Differences from PyTorch: GELU is applied to the fp32 accumulator (PyTorch rounds z to the
storage dtype first), so fp16/bf16 outputs are slightly more accurate; the saved gelu'(z) is
rounded to the storage dtype. Tile configs are autotuned on GPU from a short list pruned per
device (shared memory, and spill-free on sm_80/sm_90a); under the interpreter one 32x32x32 tile.

Two forward kernels, chosen per launch (``fused_linear_tma.choose_fwd_path``): on sm_90/sm_10x with
Triton >= 3.4, fp16/bf16, M > 64 and TMA-fit tensors (16-byte aligned bases and row strides), the
persistent TMA kernel of ``fused_linear_tma`` (same epilogues); otherwise (sm_80/sm_89, Triton 3.3,
decode-sized M, fp32, misaligned views) the tiled pointer kernel below. ``FORCE_PATH`` (tests) or
the launcher's ``path=`` overrides the choice. The backward's dx and dW GEMMs are chosen the same
way (``choose_bwd_path``): TMA twins of the pointer kernels, or the pointer kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import fused_linear_bwd as linear_bwd
from . import fused_linear_tma, tma
from .device_functions import gelu_tanh, gelu_tanh_grad, grouped_pid
from .fused_linear_bwd import (
    CONFIGS,
    INTERPRET_CONFIG,
    autotune_configs,
    fit_reduction_stride,
    fused_linear_bwd,
    gemm_variants,
    m_bucket,
    make_prune,
)
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, align_bucket
from .launch import rows
from .validate import check_same, check_tensor, device_guard

__all__ = ["gelu_linear", "linear", "variants"]


@triton.jit(do_not_specialize=["ALIGN"])
def _fused_linear_fwd_kernel(
    X,  # (M, K)
    W,  # (N, K)
    B,  # (N,) read only when HAS_BIAS
    R,  # (M, N) residual, read only when HAS_RESIDUAL
    Y,  # (M, N)
    G,  # (M, N) gelu'(z), written only when STORE_GELU_GRAD; same strides as Y
    M, N, K,
    M_BUCKET, ALIGN,  # autotune key only (ALIGN: align_bucket, picks the aligned or unaligned configs)
    stride_xm, stride_xk, stride_wn, stride_wk, stride_rm, stride_rn, stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, GELU: tl.constexpr, STORE_GELU_GRAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    pid_m, pid_n = grouped_pid(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Out-of-range rows/cols wrap to valid ones so loads need no M/N masks; the store drops them.
    rm = offs_m % M
    rn = offs_n % N
    x_ptrs = X + rm[:, None] * stride_xm + offs_k[None, :] * stride_xk  # (BLOCK_M, BLOCK_K)
    w_ptrs = W + offs_k[:, None] * stride_wk + rn[None, :] * stride_wn  # (BLOCK_K, BLOCK_N) = W^T
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
        else:
            k_left = K - k * BLOCK_K
            a = tl.load(x_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(w_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc=acc)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk

    # Epilogue on the fp32 accumulator: + bias, GELU (and its derivative), + residual, one cast.
    if HAS_BIAS:
        acc += tl.load(B + rn).to(tl.float32)[None, :]
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    # One offset tensor for Y and G (allocated alike): int64 pointer tiles cost registers.
    offs_y = offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    out = acc
    if GELU:
        out, s, e = gelu_tanh(acc)
    if HAS_RESIDUAL:
        r_ptrs = R + offs_m[:, None] * stride_rm + offs_n[None, :] * stride_rn
        out += tl.load(r_ptrs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + offs_y, out.to(Y.dtype.element_ty), mask=mask)
    if GELU:
        if STORE_GELU_GRAD:
            # After the Y store, to keep fewer (BLOCK_M, BLOCK_N) tiles live.
            tl.store(G + offs_y, gelu_tanh_grad(acc, s, e).to(G.dtype.element_ty), mask=mask)


_FWD_NAMES = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")
_fwd_tuned = triton.autotune(
    configs=autotune_configs(_FWD_NAMES),
    key=["M_BUCKET", "ALIGN", "N", "K", "HAS_BIAS", "HAS_RESIDUAL", "GELU", "STORE_GELU_GRAD"],
    prune_configs_by={"early_config_prune": make_prune("X")},
)(triton.heuristics({"EVEN_K": lambda a: a["K"] % a["BLOCK_K"] == 0})(_fused_linear_fwd_kernel))


# Tests set "pointer" or "tma" to force that path on every launch (None: chosen per launch).
FORCE_PATH: str | None = None


def _fused_linear_fwd_launch(
    x: torch.Tensor,  # (M, K)
    weight: torch.Tensor,  # (N, K)
    bias: torch.Tensor | None,  # (N,)
    residual: torch.Tensor | None,  # (M, N)
    gelu: bool,
    store_gelu_grad: bool,
    *,
    path: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Host launcher on 2-D operands: returns (y, g); g is None unless store_gelu_grad.

    ``path``: "tma" (persistent TMA kernel), "pointer" (tiled pointer kernel) or None, which takes
    ``FORCE_PATH`` if set, else ``fused_linear_tma.choose_fwd_path``'s choice for these tensors.
    """
    path = tma.check_path("path", path if path is not None else tma.check_path("FORCE_PATH", FORCE_PATH))
    M, K = x.shape
    N = weight.shape[0]
    # The GEMM steps along K with 32-bit in-tile offsets (rows and output columns are int64).
    x = fit_reduction_stride("x", x, 1)
    weight = fit_reduction_stride("weight", weight, 1)
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    g = torch.empty((M, N), dtype=x.dtype, device=x.device) if store_gelu_grad else None
    if M == 0 or N == 0:
        return y, g
    if path is None:
        path = fused_linear_tma.choose_fwd_path(x, weight, residual, y, gelu,
                                                capability=tma.device_capability(x.device))
    if path == tma.TMA:
        fused_linear_tma.fused_linear_fwd_tma(x, weight, bias, residual, y, g, gelu)
        return y, g
    b = bias if bias is not None else y  # dummy pointers for disabled inputs: never dereferenced
    r = residual if residual is not None else y
    gg = g if g is not None else y
    args = (x, weight, b, r, y, gg, M, N, K, m_bucket(M), align_bucket(x, weight, residual),
            x.stride(0), x.stride(1), weight.stride(0),
            weight.stride(1), r.stride(0), r.stride(1), y.stride(0), y.stride(1))
    flags = dict(HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None, GELU=gelu,
                 STORE_GELU_GRAD=store_gelu_grad)
    with device_guard(x):  # Triton launches on the current device: make it x's
        if interpreter_enabled():
            blocks = dict(zip(_FWD_NAMES, INTERPRET_CONFIG[:4], strict=True))
            grid = (triton.cdiv(M, blocks["BLOCK_M"]) * triton.cdiv(N, blocks["BLOCK_N"]),)
            _fused_linear_fwd_kernel[grid](*args, **flags, **blocks, EVEN_K=K % blocks["BLOCK_K"] == 0,
                                           num_warps=4, num_stages=1)
        else:
            _fwd_tuned[lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)](
                *args, **flags)
    return y, g


# ----------------------------------------------------------------------------- custom ops
# Opaque to torch.compile (register_fake gives shapes); triton_op/wrap_triton would let Inductor
# see inside but fails under the interpreter, which is what CI runs.


@torch.library.custom_op(
    "tritongpt::linear_fwd", mutates_args=(),
    schema="(Tensor x, Tensor weight, Tensor? bias, Tensor? residual) -> Tensor",
)
def _linear_fwd_op(x, weight, bias, residual):
    r2 = rows(residual) if residual is not None else None
    y, _ = _fused_linear_fwd_launch(rows(x), weight, bias, r2, gelu=False, store_gelu_grad=False)
    return y.view(*x.shape[:-1], weight.shape[0])


@_linear_fwd_op.register_fake
def _(x, weight, bias, residual):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@torch.library.custom_op(
    "tritongpt::gelu_linear_fwd", mutates_args=(),
    schema="(Tensor x, Tensor weight, Tensor? bias, bool save_gelu_grad) -> (Tensor, Tensor)",
)
def _gelu_linear_fwd_op(x, weight, bias, save_gelu_grad):
    y, g = _fused_linear_fwd_launch(rows(x), weight, bias, None, gelu=True, store_gelu_grad=save_gelu_grad)
    out_shape = (*x.shape[:-1], weight.shape[0])
    # Custom ops cannot return None: an empty tensor stands for "not saved".
    return y.view(out_shape), (g.view(out_shape) if g is not None else x.new_empty((0,)))


@_gelu_linear_fwd_op.register_fake
def _(x, weight, bias, save_gelu_grad):
    out_shape = (*x.shape[:-1], weight.shape[0])
    return x.new_empty(out_shape), x.new_empty(out_shape if save_gelu_grad else (0,))


_BWD_SCHEMA = "(Tensor dy, Tensor x, Tensor weight, {gate}bool need_dx, bool need_dw, bool need_db) -> (Tensor, Tensor, Tensor)"


def _bwd(dy, x, weight, gate, need_dx, need_dw, need_db):
    dy2, x2, g2 = rows(dy), rows(x), (rows(gate) if gate is not None else None)
    path = tma.check_path("FORCE_PATH", FORCE_PATH)
    if path is None:
        path = fused_linear_tma.choose_bwd_path(dy2, x2, weight, g2, capability=tma.device_capability(dy.device))
    run = fused_linear_tma.fused_linear_bwd_tma if path == tma.TMA else fused_linear_bwd
    dx, dw, db = run(dy2, x2, weight, g2, need_dx, need_dw, need_db)
    # Custom ops cannot return None, and no two outputs may be the same tensor (torch rejects
    # aliasing returns): a fresh empty tensor for each gradient that was not asked for.
    return (dx.view(x.shape) if dx is not None else dy.new_empty((0,)),
            dw if dw is not None else dy.new_empty((0,)), db if db is not None else dy.new_empty((0,)))


def _bwd_fake(dy, x, weight, need_dx, need_dw, need_db):
    return (x.new_empty(x.shape) if need_dx else dy.new_empty((0,)),
            weight.new_empty(weight.shape) if need_dw else dy.new_empty((0,)),
            weight.new_empty((weight.shape[0],)) if need_db else dy.new_empty((0,)))


@torch.library.custom_op("tritongpt::linear_bwd", mutates_args=(), schema=_BWD_SCHEMA.format(gate=""))
def _linear_bwd_op(dy, x, weight, need_dx, need_dw, need_db):
    return _bwd(dy, x, weight, None, need_dx, need_dw, need_db)


@_linear_bwd_op.register_fake
def _(dy, x, weight, need_dx, need_dw, need_db):
    return _bwd_fake(dy, x, weight, need_dx, need_dw, need_db)


@torch.library.custom_op("tritongpt::gelu_linear_bwd", mutates_args=(),
                         schema=_BWD_SCHEMA.format(gate="Tensor gelu_grad, "))
def _gelu_linear_bwd_op(dy, x, weight, gelu_grad, need_dx, need_dw, need_db):
    return _bwd(dy, x, weight, gelu_grad, need_dx, need_dw, need_db)


@_gelu_linear_bwd_op.register_fake
def _(dy, x, weight, gelu_grad, need_dx, need_dw, need_db):
    return _bwd_fake(dy, x, weight, need_dx, need_dw, need_db)


def _linear_setup(ctx, inputs, output):
    x, weight, bias, residual = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None
    ctx.has_residual = residual is not None


def _linear_backward(ctx, dy):
    x, weight = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_db = ctx.has_bias and need[2]
    dx = dw = db = None
    if need[0] or need[1] or need_db:  # only the residual needs a gradient: no GEMM at all
        dx, dw, db = _linear_bwd_op(dy, x, weight, need[0], need[1], need_db)
    return (dx if need[0] else None, dw if need[1] else None, db if need_db else None,
            dy if ctx.has_residual and need[3] else None)  # d(residual) = dy: no copy


def _gelu_linear_setup(ctx, inputs, output):
    x, weight, bias, save_gelu_grad = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.has_bias = bias is not None
    ctx.saved_gate = save_gelu_grad
    ctx.mark_non_differentiable(output[1])


def _gelu_linear_backward(ctx, dy, _dg):
    if not ctx.saved_gate:
        raise RuntimeError("gelu_linear: backward needs the forward to save gelu'(z); call the public "
                           "tritongpt.kernels.gelu_linear, which decides that from requires_grad")
    x, weight, gate = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_db = ctx.has_bias and need[2]
    if not (need[0] or need[1] or need_db):
        return None, None, None, None
    dx, dw, db = _gelu_linear_bwd_op(dy, x, weight, gate, need[0], need[1], need_db)
    return (dx if need[0] else None, dw if need[1] else None, db if need_db else None, None)


torch.library.register_autograd("tritongpt::linear_fwd", _linear_backward, setup_context=_linear_setup)
torch.library.register_autograd("tritongpt::gelu_linear_fwd", _gelu_linear_backward,
                                setup_context=_gelu_linear_setup)


# ----------------------------------------------------------------------------- public API


def _validate(x: object, weight: object, bias: object, residual: object) -> None:
    x = check_tensor("x", x)
    if x.dim() < 1:
        raise ValueError("x: expected a tensor of shape (..., K), got a 0-D tensor")
    weight = check_tensor("weight", weight, ndim=2, unit_last_stride=False)
    check_same("weight", weight, "x", x)
    N, K = weight.shape
    if x.shape[-1] != K:
        raise ValueError(f"weight: expected shape (N, {x.shape[-1]}) to match x's last dim, got {tuple(weight.shape)}")
    if K == 0:
        raise ValueError("x: the reduction dim K must be >= 1, got 0")
    if bias is not None:
        bias = check_tensor("bias", bias, ndim=1)
        check_same("bias", bias, "x", x)
        if bias.shape[0] != N:
            raise ValueError(f"bias: expected shape ({N},) to match weight's N, got {tuple(bias.shape)}")
    if residual is not None:
        residual = check_tensor("residual", residual)
        check_same("residual", residual, "x", x)
        want = (*x.shape[:-1], N)
        if tuple(residual.shape) != want:
            raise ValueError(f"residual: expected the output shape {want}, got {tuple(residual.shape)}")


def _grad_needed(*ts: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def gelu_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.gelu(F.linear(x, weight, bias), approximate="tanh")`` in one GEMM.

    x (..., K), weight (N, K), bias (N,) or None -> (..., N). Differentiable in all three.
    """
    _validate(x, weight, bias, None)
    y, _ = _gelu_linear_fwd_op(x, weight, bias, _grad_needed(x, weight, bias))
    return y


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.linear(x, weight, bias) + residual`` in one GEMM (bias and residual optional).

    x (..., K), weight (N, K), bias (N,), residual (..., N) -> (..., N). Differentiable in all four.
    """
    _validate(x, weight, bias, residual)
    return _linear_fwd_op(x, weight, bias, residual)


# ----------------------------------------------------------------------------- AOT variants


def variants() -> list[KernelVariant]:
    """Every shipped tile config x representative flags, for sm_80/sm_89/sm_90a/sm_100a compile checks,
    in the aligned form (what GPT-shaped tensors give) and, for the configs shipped for unaligned inputs,
    the unaligned form too (``fused_linear_bwd.gemm_variants``): the forward's here, then the backward's
    (``fused_linear_bwd.variants``) and the TMA kernels' (``fused_linear_tma.variants``)."""
    fwd = gemm_variants("fwd", _fused_linear_fwd_kernel, _FWD_NAMES, "X W B R Y G",
                        "M N K M_BUCKET stride_xm stride_wn stride_rm stride_ym",
                        ("stride_xk", "stride_wk", "stride_rn", "stride_yn"), "EVEN_K", "Y G",
                        [dict(HAS_BIAS=True, HAS_RESIDUAL=False, GELU=True, STORE_GELU_GRAD=True),
                         dict(HAS_BIAS=True, HAS_RESIDUAL=True, GELU=False, STORE_GELU_GRAD=False)], CONFIGS)
    return fwd + linear_bwd.variants() + fused_linear_tma.variants()
