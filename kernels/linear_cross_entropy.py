"""Linear layer + cross-entropy loss without materialising the logits (LM-head loss, Cut Cross-Entropy style).

    linear_cross_entropy(x, W, targets, b)  =  F.cross_entropy(softcap(x @ W^T + b), targets, ...)
                                               (+ z_loss * lse**2 per counted row)

x (N, C) hidden states, W (V, C) the LM head in nn.Linear layout, targets (N,). The (N, V) logits never
exist in global memory: every kernel recomputes the logit tile it needs from x and W and reduces it in
registers. Options, applied in this order to each logit l = x . w_v + b_v:

- ``softcap`` (Gemma 2): l <- softcap * tanh(l / softcap), before everything else.
- ``label_smoothing`` eps (as PyTorch's): loss = (1 - eps) * (lse - l_target) + eps * (lse - mean_v l_v).
- ``z_loss`` (PaLM): + z_loss * lse**2 on each counted row, before the reduction.
- ``ignore_index``: such rows give loss 0, gradient 0, and are left out of the mean's denominator; a mean
  over no counted row is 0 (PyTorch returns NaN there).

Forward (``_lce_fwd_kernel``): grid (row blocks of BLOCK_M tokens, S vocab splits). Each program walks its
split's vocab tiles of BLOCK_N; per tile it forms the (BLOCK_M, BLOCK_N) logits with ``tl.dot`` over C in
BLOCK_K chunks (fp32 accumulator), adds the bias, soft-caps, and updates an online max / sum of exp2
(log2 e folded into the logits), the target's logit (picked out of the tile that holds it) and, with
label smoothing, the sum of the logits. It writes those per (split, row) as fp32 partials; the host
merges the S splits (logsumexp, sums) into the per-row loss and lse, in fp32. The splits exist to fill
the GPU when N is small: S = 1 once the 128-row blocks alone give one program per SM.

Backward (``linear_cross_entropy_bwd``): with g_r the loss gradient of row r (0 on ignored rows) and
g_lse,r the gradient reaching the returned lse, the logit gradient is

    dl = p * (g_r * (1 + 2 z_loss lse_r) + g_lse,r) - g_r * ((1 - eps) * onehot(target) + eps / V),
    p = exp(l - lse_r),  chained through the soft-cap as dl * (1 - tanh^2).

Two kernels, each recomputing the logit tiles from x, W and the saved lse, no atomics: dX (row blocks x
vocab splits, each walking its vocab tiles: dx_rows += dl @ W_tile) and dW + db (vocab blocks, each
walking all token tiles: dW_rows += dl^T @ x_tile, db += column sums of dl). See that module for how the
fp32 accumulators are kept.

FLOPs (N tokens, V vocab, C hidden; one multiply-add = 2 FLOPs), exactly, tensor-core work only:

    forward   2 N V C                       (logits)
    backward  2 N V C + 2 N V C   (dX)     (logit recompute + dl @ W)
            + 2 N V C + 2 N V C   (dW)     (logit recompute + dl^T @ x)
            = 8 N V C = 4 x forward; forward + backward = 10 N V C.

GPT-2 small (V = 50257, C = 768) at N = 8192 tokens: 0.63 TFLOP forward, 2.53 TFLOP backward. A fused
backward with atomics (Cut Cross-Entropy) recomputes once: 6 N V C. The materialising reference does
2 N V C + 4 N V C but writes and reads the (N, V) logits and their gradient, 2 N V bytes each in fp16
(0.82 GB each at that size). CUDA-core work per logit: about 15 operations forward (exp2, the soft-cap's
exp2 and division, selects, three row reductions) and 20 in each backward kernel.

Bytes (e = element size). L2 traffic, each kernel re-reading operand tiles per program:
    forward  x: N C e ceil(V / BLOCK_N)     W: V C e ceil(N / BLOCK_M)
    dx       x: N C e ceil(V / BLOCK_N)     W: 2 V C e ceil(N / BLOCK_M) (recompute + GEMM operand)
             + the fp32 dx accumulator, read and written per vocab tile: 8 N C ceil(V / BLOCK_N)
    dW       x: 2 N C e ceil(V / BLOCK_N)   W: V C e ceil(N / BLOCK_M)
             + the fp32 dW accumulator, read and written per token tile: 8 V C ceil(N / BLOCK_M)
HBM traffic is close to the minimum when a wave of programs sweeps the same tiles in step (each W or x
tile comes from HBM once per wave): forward (N C + V C) e, plus 3 S N 4 bytes of partials and 2 N 4 of
loss and lse; backward 2 (N C + V C) e (each kernel reads both) plus the fp32 gradient buffers, (S N C +
V C + V) 4 bytes written and read back once by the host's sum and casts to the storage dtype.

Tiles: BLOCK_M (tokens), BLOCK_N (vocab), BLOCK_K (C chunk of every dot). On GPUs each kernel is autotuned
over its table in ``linear_cross_entropy_bwd`` (``FWD_CONFIGS``, ``DX_CONFIGS``, ``DW_CONFIGS``: a few
entries each, chosen by element size and input alignment), every entry compiled spill-free for sm_80,
sm_89 and sm_90a with Triton 3.9 and 3.3 (``variants()``; wgmma on sm_90a for 16-bit inputs); under the interpreter fixed small tiles (``interpret_blocks``). fp32 inputs run their
dots in TF32 on GPUs (``tl.dot``'s default, as ``fused_linear``): ~1e-3 relative error in the logits; the
interpreter is exact. Offsets are 32-bit (``check_spans``): x, W and the fp32 gradient buffers must span
fewer than 2**31 elements (V x C up to 2.1e9: a 256k vocab at C = 8192 is just past it).

Scope: x (N, C) with unit stride along C (row stride free), W (V, C) (copied if its C stride is not 1),
bias (V,) or None; fp32, fp16, bf16 with x and W the same dtype, or 16-bit x with an fp32 W and bias (cast to
x's dtype here, as autocast does, so their gradients come back in fp32); targets int64 or int32; any N
(0 included), V >= 1, C >= 1. Target ids outside [0, V) other than ignore_index raise (host check on CPU,
``torch._assert_async`` on CUDA, no host sync). Losses and lse are fp32; gradients are in their input's
dtype. Kernels launch on the inputs' GPU whatever the current device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import linear_cross_entropy_bwd as lce_bwd
from .device_functions import softcap as apply_softcap
from .device_functions import tile_dot
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, align_bucket
from .launch import capturing
from .linear_cross_entropy_bwd import (
    DX_NAMES,
    FWD_CONFIGS,
    check_spans,
    interpret_blocks,
    kernel_variants,
    linear_cross_entropy_bwd,
    n_bucket,
    num_splits,
    prune_configs,
    tile_configs,
)
from .validate import check_float, check_tensor, device_guard

__all__ = ["linear_cross_entropy", "variants"]

REDUCTIONS = ("none", "mean", "sum")


@triton.jit(do_not_specialize=["ALIGN"])
def _lce_fwd_kernel(
    X,  # (N, C), unit stride along C
    W,  # (V, C), unit stride along C
    B,  # (V,) read only when HAS_BIAS
    T,  # (N,) int32 targets, -1 on ignored rows
    PART,  # (3, S, N) fp32: per split, the lse of its logits, the target logit, the sum of its logits
    N, V, C,
    N_BUCKET, ALIGN,  # autotune key only (ALIGN: align_bucket, picks the aligned or unaligned configs)
    stride_xn, stride_wv,
    softcap,
    HAS_BIAS: tl.constexpr, SOFTCAP: tl.constexpr, SMOOTHING: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_C: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    splits = tl.num_programs(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rm = offs_m % N  # rows past N wrap to real ones so no load needs a row mask; their stores are masked
    tgt = tl.load(T + rm)
    # This split's share of the vocab tiles: contiguous, sizes differing by at most one.
    n_tiles = tl.cdiv(V, BLOCK_N)
    t_lo = pid_s * n_tiles // splits
    t_hi = (pid_s + 1) * n_tiles // splits
    cols = tl.arange(0, BLOCK_N)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)  # running max of l * log2(e)
    s_i = tl.zeros((BLOCK_M,), tl.float32)  # running sum of exp2(l * log2(e) - m_i)
    tgt_i = tl.zeros((BLOCK_M,), tl.float32)  # target logit * log2(e)
    sum_i = tl.zeros((BLOCK_M,), tl.float32)  # sum of logits * log2(e)
    for t in range(t_lo, t_hi):
        v0 = t * BLOCK_N
        rv = (v0 + cols) % V  # wrapped columns read real W rows and are masked below
        logits = tile_dot(X, W, rm, rv, stride_xn, stride_wv, C, BLOCK_M, BLOCK_N, BLOCK_K, EVEN_C)
        if HAS_BIAS:
            logits += tl.load(B + rv).to(tl.float32)[None, :]
        if SOFTCAP:
            logits = apply_softcap(logits, softcap)
        # In log2 units from here on (one tile live instead of two); the target and sum are scaled back by
        # ln(2) at the end. Column tests compare the arange with scalars or per-row values: no per-column
        # vector stays live.
        col_ok = cols[None, :] < V - v0
        z = tl.where(col_ok, logits * 1.4426950408889634, float("-inf"))  # log2(e)
        tgt_i += tl.sum(tl.where(cols[None, :] == (tgt - v0)[:, None], z, 0.0), axis=1)
        if SMOOTHING:
            sum_i += tl.sum(tl.where(col_ok, z, 0.0), axis=1)
        # Every tile holds at least one real column, so m_new is finite and the rescale exp2(-inf) = 0
        # on the first tile.
        m_new = tl.maximum(m_i, tl.max(z, axis=1))
        s_i = s_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(z - m_new[:, None]), axis=1)
        m_i = m_new
    row_ok = offs_m < N
    # An empty split (more splits than tiles) writes lse = -inf, which the merge's logsumexp drops.
    part = PART + pid_s * N + offs_m
    tl.store(part, (m_i + tl.log2(s_i)) * 0.6931471805599453, mask=row_ok)  # ln(2)
    tl.store(part + splits * N, tgt_i * 0.6931471805599453, mask=row_ok)
    if SMOOTHING:
        tl.store(part + 2 * splits * N, sum_i * 0.6931471805599453, mask=row_ok)


# Tiles: linear_cross_entropy_bwd.FWD_CONFIGS.
_fwd_tuned = triton.autotune(
    configs=tile_configs(DX_NAMES, FWD_CONFIGS),
    key=["N_BUCKET", "ALIGN", "V", "C", "HAS_BIAS", "SOFTCAP", "SMOOTHING"],
    prune_configs_by={"early_config_prune": prune_configs},
)(triton.heuristics({"EVEN_C": lambda a: a["C"] % a["BLOCK_K"] == 0})(_lce_fwd_kernel))


def _canonical_targets(targets: torch.Tensor, ignore_index: int, vocab: int, check: bool) -> torch.Tensor:
    """int32 targets with every ignored row as -1 (the kernels' one convention, whatever ignore_index is,
    even one inside [0, V)). With ``check``, ids outside [0, V) that are not ignore_index raise: on CPU
    here, on CUDA asynchronously (no host sync; skipped while a CUDA graph is captured)."""
    ignored = targets == ignore_index
    if check and targets.numel():
        bad = ~ignored & ((targets < 0) | (targets >= vocab))
        if targets.is_cuda:
            if not capturing(targets):
                torch._assert_async(~bad.any(), f"targets: id outside [0, {vocab}) that is not ignore_index")
        elif bool(bad.any()):
            first = int(targets[bad][0])
            raise ValueError(f"targets: id {first} is outside the vocabulary [0, {vocab}) and is not "
                             f"ignore_index ({ignore_index})")
    return torch.where(ignored, -1, targets).to(torch.int32)


def _fwd_launch(x, weight, bias, tgt32, label_smoothing, z_loss, softcap):
    """Per-row (loss, lse), fp32, from 2-D contiguous-along-C operands and canonical targets."""
    N, C = x.shape
    V = weight.shape[0]
    if N == 0:
        return (torch.empty(0, dtype=torch.float32, device=x.device),
                torch.empty(0, dtype=torch.float32, device=x.device))
    smoothing = label_smoothing > 0
    blocks = interpret_blocks(V) if interpreter_enabled() else None
    S = num_splits(N, V, x.device, cap=8, blocks=blocks)
    part = torch.empty((3 if smoothing else 2, S, N), dtype=torch.float32, device=x.device)
    args = (x, weight, bias if bias is not None else x, tgt32, part, N, V, C, n_bucket(N), align_bucket(x, weight),
            x.stride(0), weight.stride(0), float(softcap or 1.0))
    flags = dict(HAS_BIAS=bias is not None, SOFTCAP=softcap is not None, SMOOTHING=smoothing)
    with device_guard(x):
        if blocks is not None:
            bm, bn, bk = blocks
            _lce_fwd_kernel[(triton.cdiv(N, bm), S)](*args, **flags, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                                                     EVEN_C=C % bk == 0, num_warps=4, num_stages=1)
        else:
            _fwd_tuned[lambda meta: (triton.cdiv(N, meta["BLOCK_M"]), S)](*args, **flags)
    # Merge the splits (fp32, (S, N) each: a few elementwise ops).
    lse = torch.logsumexp(part[0], dim=0)
    valid = tgt32 >= 0
    nll = lse - part[1].sum(0)
    if smoothing:
        smooth = lse - part[2].sum(0) / V
        loss = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    else:
        loss = nll
    if z_loss:
        loss = loss + z_loss * lse * lse
    return torch.where(valid, loss, 0.0), lse


def _prepare(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """Unit stride along C for the kernels (copies only a weight or bias stored otherwise), and spans the
    kernels' 32-bit offsets reach."""
    if weight.shape[1] > 1 and weight.stride(1) != 1:
        weight = weight.contiguous()
    if bias is not None and bias.shape[0] > 1 and bias.stride(0) != 1:
        bias = bias.contiguous()
    check_spans(x, weight)
    return x, weight, bias


# ----------------------------------------------------------------------------- custom ops
# Opaque to torch.compile (register_fake gives the shapes), as the other ops of this package: a
# triton_op would let Inductor see the kernels but fails under the interpreter, which is what CI runs.


@torch.library.custom_op(
    "tritongpt::linear_cross_entropy_fwd", mutates_args=(),
    schema="(Tensor x, Tensor weight, Tensor? bias, Tensor targets, int ignore_index, float label_smoothing, "
           "float z_loss, float? softcap) -> (Tensor, Tensor)",
)
def _lce_fwd_op(x, weight, bias, targets, ignore_index, label_smoothing, z_loss, softcap):
    """(losses, lse), both (N,) fp32; losses are 0 on ignored rows."""
    x, weight, bias = _prepare(x, weight, bias)
    tgt32 = _canonical_targets(targets, ignore_index, weight.shape[0], check=True)
    return _fwd_launch(x, weight, bias, tgt32, label_smoothing, z_loss, softcap)


@_lce_fwd_op.register_fake
def _(x, weight, bias, targets, ignore_index, label_smoothing, z_loss, softcap):
    n = x.shape[0]
    return x.new_empty((n,), dtype=torch.float32), x.new_empty((n,), dtype=torch.float32)


@torch.library.custom_op(
    "tritongpt::linear_cross_entropy_bwd", mutates_args=(),
    schema="(Tensor grad_loss, Tensor grad_lse, Tensor x, Tensor weight, Tensor? bias, Tensor targets, "
           "Tensor lse, int ignore_index, float label_smoothing, float z_loss, float? softcap, bool need_dx, "
           "bool need_dw, bool need_db) -> (Tensor, Tensor, Tensor)",
)
def _lce_bwd_op(grad_loss, grad_lse, x, weight, bias, targets, lse, ignore_index, label_smoothing, z_loss,
                softcap, need_dx, need_dw, need_db):
    """(dx, dW, db) in their inputs' dtypes; a gradient not asked for is an empty tensor of its own (custom
    ops cannot return None, nor two outputs that are one tensor)."""
    x, weight, bias = _prepare(x, weight, bias)
    tgt32 = _canonical_targets(targets, ignore_index, weight.shape[0], check=False)
    # Per-row coefficients of the logit gradient (see the module docstring): gb = g_r on counted rows, 0 on
    # ignored ones; ga multiplies the softmax.
    gb = torch.where(tgt32 >= 0, grad_loss.float(), 0.0)
    ga = gb * (1.0 + 2.0 * z_loss * lse) + grad_lse.float()
    dx, dw, db = linear_cross_entropy_bwd(x, weight, bias, tgt32, lse, ga, gb, label_smoothing, softcap,
                                          need_dx, need_dw, need_db and bias is not None)
    return (dx if dx is not None else x.new_empty((0,)), dw if dw is not None else x.new_empty((0,)),
            db if db is not None else x.new_empty((0,)))


@_lce_bwd_op.register_fake
def _(grad_loss, grad_lse, x, weight, bias, targets, lse, ignore_index, label_smoothing, z_loss, softcap,
      need_dx, need_dw, need_db):
    return (x.new_empty(x.shape) if need_dx else x.new_empty((0,)),
            weight.new_empty(weight.shape) if need_dw else x.new_empty((0,)),
            bias.new_empty(bias.shape) if need_db and bias is not None else x.new_empty((0,)))


def _setup_context(ctx, inputs, output):
    x, weight, bias, targets, ignore_index, label_smoothing, z_loss, softcap = inputs
    ctx.save_for_backward(x, weight, bias, targets, output[1])
    ctx.options = (ignore_index, label_smoothing, z_loss, softcap)


def _backward(ctx, grad_loss, grad_lse):
    x, weight, bias, targets, lse = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_db = bias is not None and need[2]
    if not (need[0] or need[1] or need_db):
        return None, None, None, None, None, None, None, None
    # An output that reached no loss gets no gradient tensor: zeros stand in (N floats).
    grad_loss = grad_loss if grad_loss is not None else torch.zeros_like(lse)
    grad_lse = grad_lse if grad_lse is not None else torch.zeros_like(lse)
    dx, dw, db = _lce_bwd_op(grad_loss, grad_lse, x, weight, bias, targets, lse, *ctx.options,
                             need[0], need[1], need_db)
    return (dx if need[0] else None, dw if need[1] else None, db if need_db else None,
            None, None, None, None, None)


torch.library.register_autograd("tritongpt::linear_cross_entropy_fwd", _backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- public API


def _validate(x, weight, targets, bias, ignore_index, reduction, label_smoothing, z_loss, softcap, return_lse):
    x = check_tensor("x", x, ndim=2)
    weight = check_tensor("weight", weight, ndim=2, unit_last_stride=False)
    N, C = x.shape
    V = weight.shape[0]
    if weight.shape[1] != C:
        raise ValueError(f"weight: expected shape (V, {C}) to match x's last dim, got {tuple(weight.shape)}")
    if C == 0:
        raise ValueError("x: the hidden dim C must be >= 1, got 0")
    if V == 0:
        raise ValueError("weight: the vocabulary dim V must be >= 1, got 0")
    if weight.dtype != x.dtype and not (weight.dtype == torch.float32 and x.dtype != torch.float32):
        raise TypeError(f"weight: dtype {weight.dtype} must be x's ({x.dtype}), or float32 with a 16-bit x")
    if weight.device != x.device:
        raise ValueError(f"weight: device {weight.device} does not match x device {x.device}")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets: expected a torch.Tensor, got {type(targets).__name__}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"targets: expected dtype int64 or int32, got {str(targets.dtype).replace('torch.', '')}")
    if tuple(targets.shape) != (N,):
        raise ValueError(f"targets: expected shape ({N},) (one per row of x), got {tuple(targets.shape)}")
    if targets.device != x.device:
        raise ValueError(f"targets: device {targets.device} does not match x device {x.device}")
    if bias is not None:
        bias = check_tensor("bias", bias, ndim=1, unit_last_stride=False)
        if bias.shape[0] != V:
            raise ValueError(f"bias: expected shape ({V},) to match weight's V, got {tuple(bias.shape)}")
        if bias.dtype not in (x.dtype, weight.dtype):
            raise TypeError(f"bias: dtype {bias.dtype} must be x's ({x.dtype}) or weight's ({weight.dtype})")
        if bias.device != x.device:
            raise ValueError(f"bias: device {bias.device} does not match x device {x.device}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__}")
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    label_smoothing = check_float("label_smoothing", label_smoothing)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1), got {label_smoothing}")
    z_loss = check_float("z_loss", z_loss)
    if z_loss < 0:
        raise ValueError(f"z_loss: expected a value >= 0, got {z_loss}")
    if softcap is not None:
        softcap = check_float("softcap", softcap, positive=True)
    if not isinstance(return_lse, bool):
        raise TypeError(f"return_lse: expected a bool, got {type(return_lse).__name__}")
    return label_smoothing, z_loss, softcap


def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of ``softcap(x @ weight.T + bias)`` against ``targets``, without the logits in memory.

    Equals ``F.cross_entropy(logits, targets, ignore_index=, reduction=, label_smoothing=)`` plus
    ``z_loss * lse**2`` on each row whose target is not ``ignore_index`` (added before the reduction),
    with ``logits = softcap * tanh(l / softcap)`` when ``softcap`` is set (``l`` otherwise). x (N, C),
    weight (V, C), targets (N,) int64/int32, bias (V,) or None. ``reduction``: "mean" (over the counted
    rows; 0 when there are none), "sum", or "none" ((N,) losses, 0 on ignored rows); always fp32.
    ``return_lse=True`` also returns the (N,) fp32 log-sum-exp of the (soft-capped) logits, itself
    differentiable. Differentiable in x, weight and bias.
    """
    label_smoothing, z_loss, softcap = _validate(x, weight, targets, bias, ignore_index, reduction,
                                                 label_smoothing, z_loss, softcap, return_lse)
    if weight.dtype != x.dtype:  # 16-bit x, fp32 master weights: the cast autocast would do
        weight = weight.to(x.dtype)
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)
    losses, lse = _lce_fwd_op(x, weight, bias, targets, ignore_index, label_smoothing, z_loss, softcap)
    if reduction == "none":
        loss = losses
    elif reduction == "sum":
        loss = losses.sum()
    else:
        loss = losses.sum() / (targets != ignore_index).sum().clamp_min(1)
    return (loss, lse) if return_lse else loss


# ----------------------------------------------------------------------------- AOT variants


def variants() -> list[KernelVariant]:
    """Every tile of the three kernels' tables (``FWD_CONFIGS``, ``DX_CONFIGS``, ``DW_CONFIGS``), for the sm_80 /
    sm_89 / sm_90a / sm_100a compile gate, in each dtype and form it ships for, with every option on (bias,
    soft-cap, label smoothing: the most registers; ``linear_cross_entropy_bwd.kernel_variants``): the
    forward's here, then the backward's (``linear_cross_entropy_bwd.variants``). Names give the tile as
    BLOCK_M x BLOCK_N x BLOCK_K, dW's as BLOCK_N x BLOCK_M x BLOCK_K (``TileConfig`` order)."""
    return (kernel_variants("fwd", _lce_fwd_kernel, DX_NAMES, FWD_CONFIGS, "X W B T PART", "PART",
                            dict(HAS_BIAS=True, SOFTCAP=True, SMOOTHING=True))
            + lce_bwd.variants())
