"""Weight-only int8 linear layer for memory-bound decode.

    int8_linear(x, W8, scale, bias) = x @ (W8 * scale[:, None])^T + bias

x (..., K) fp16/bf16/fp32, W8 (N, K) int8 in nn.Linear layout, scale (N,) fp32 (one per output channel,
symmetric quantization: ``engine/quantize.py`` makes them), bias (N,) in x's dtype or None; y (..., N) in
x's dtype. A decode step reads every weight once per token, so the weight bytes set its time: W8 is loaded
from memory as int8 (half the bytes of fp16), converted to x's dtype in registers (exact: int8 fits in the
mantissa of fp16, bf16 and TF32), multiplied on tensor cores with an fp32 accumulator, and the per-channel
scale and the bias are applied to the accumulator in the epilogue, before the one cast to x's dtype.

The tile is computed transposed: acc (BLOCK_N, BLOCK_M) = W8_tile @ x_tile^T. Output channels then fill the
MMA's rows (64 or 128, the shape wgmma wants on sm_90a) and the few decode tokens its columns, where 16 is
the smallest tensor-core width; a (BLOCK_M, BLOCK_N) tile would pad 1..16 tokens up to 64 rows on Hopper.
Tile configs are autotuned on GPU from a short list keyed on power-of-two M buckets: BLOCK_M = 16 tiles
for decode (M <= 16), up to 64 for batched decode, 64/128 for prefill; under the interpreter one small tile.

Limitations: no split-K, so a narrow layer at batch 1 (GPT-2's c_proj, N = 768) launches only N / BLOCK_N
programs (a 32-wide tile is in the table for it); fp32 x runs on TF32 tensor cores on GPUs (~1e-3 relative
error, as ``fused_linear``); the interpreter computes exact fp32. Differentiable in x and bias only (the
backward is plain PyTorch: dx = (dy * scale) @ W8); the weight and scale are frozen.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import launch
from .device_functions import grouped_pid
from .fused_linear_bwd import fit_reduction_stride, m_bucket
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, align_bucket, signature
from .launch import DTYPE_NAMES, SMEM_LIMIT, rows
from .validate import FLOAT_DTYPES, check_same, check_tensor, device_guard

__all__ = ["int8_linear", "variants"]


@triton.jit(do_not_specialize=["ALIGN"])
def _int8_linear_kernel(
    X,  # (M, K) fp16/bf16/fp32
    W,  # (N, K) int8
    S,  # (N,) fp32 per-output-channel scale
    B,  # (N,) in X's dtype, read only when HAS_BIAS
    Y,  # (M, N) in X's dtype
    M, N, K,
    M_BUCKET, ALIGN,  # autotune key only (ALIGN: align_bucket, picks the aligned or unaligned configs)
    stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
    HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_N: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    pid_n, pid_m = grouped_pid(tl.program_id(0), tl.cdiv(N, BLOCK_N), tl.cdiv(M, BLOCK_M), GROUP_N)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    # Out-of-range rows/cols wrap to valid ones so loads need no M/N masks; the store drops them.
    rn = offs_n % N
    rm = offs_m % M
    w_ptrs = W + rn[:, None] * stride_wn + offs_k[None, :] * stride_wk  # (BLOCK_N, BLOCK_K) int8
    x_ptrs = X + offs_k[:, None] * stride_xk + rm[None, :] * stride_xm  # (BLOCK_K, BLOCK_M) = x^T
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            w = tl.load(w_ptrs)
            xt = tl.load(x_ptrs)
        else:
            k_left = K - k * BLOCK_K
            w = tl.load(w_ptrs, mask=offs_k[None, :] < k_left, other=0)
            xt = tl.load(x_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        # int8 -> x's dtype in registers: exact, and the memory traffic stays one byte per weight.
        if X.dtype.element_ty == tl.bfloat16:
            # Through fp32 (exact for int8): Triton 3.9's interpreter casts int8 -> bf16 by reinterpreting
            # the integer as bf16 bits (noted 2026-12; tests/test_int8_linear.py probes it). On GPUs the
            # extra step is a few ALU ops per weight in a memory-bound loop.
            wt = w.to(tl.float32).to(tl.bfloat16)
        else:
            wt = w.to(X.dtype.element_ty)
        acc = tl.dot(wt, xt, acc=acc)
        w_ptrs += BLOCK_K * stride_wk
        x_ptrs += BLOCK_K * stride_xk

    # Epilogue on the fp32 accumulator: per-channel scale (rows of the transposed tile), + bias, one cast.
    acc = acc * tl.load(S + rn)[:, None]
    if HAS_BIAS:
        acc += tl.load(B + rn).to(tl.float32)[:, None]
    mask = (offs_n[:, None] < N) & (offs_m[None, :] < M)
    y_ptrs = Y + offs_m[None, :] * stride_ym + offs_n[:, None] * stride_yn
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=mask)


class Int8Tile(NamedTuple):
    """One tile: BLOCK_N output channels x BLOCK_M tokens, reduction block BLOCK_K."""

    block_n: int
    block_m: int
    block_k: int
    num_warps: int
    num_stages: int
    form: str = "aligned"  # "aligned" (GPT-shaped tensors) or "unaligned" (odd views: scalar loads)
    skip: tuple[tuple[int, str], ...] = ()  # (compute capability, dtype) pairs it spills on: not shipped there

    def ships(self, cc: int, dtype: str) -> bool:
        return (cc, dtype) not in self.skip


# Short list keyed on the M bucket (``_bucket_fits``): BLOCK_M = 16 for decode at batch <= 16 (the tensor
# cores' smallest width), 32/64 for larger decode batches, 64/128 for prefill. Deep K blocks and 3-4 stages
# for the decode tiles: each program streams a long strip of W8 and little else, so keeping several loads
# in flight is what reaches bandwidth. BLOCK_N = 32 gives narrow layers (N = 768) more programs at batch 1.
# Compiled for sm_80/sm_89/sm_90a in every dtype (Triton 3.9, ``tritongpt inspect --kernel int8_linear``):
# the skips are the pairs that spilled (fp32 on sm_90a's wgmma path: 255 registers + 168-176 B of stack).
CONFIGS: tuple[Int8Tile, ...] = (
    Int8Tile(32, 16, 256, 4, 4),
    Int8Tile(64, 16, 256, 4, 4, skip=((90, "fp32"),)),
    Int8Tile(128, 16, 128, 4, 4, skip=((90, "fp32"),)),
    Int8Tile(64, 32, 128, 4, 4),
    Int8Tile(128, 64, 64, 4, 4, skip=((89, "bf16"),)),  # 168 registers + 8 B of stack there
    Int8Tile(128, 128, 64, 8, 3),
    # Odd views (rows not a multiple of 16 elements) compile to scalar loads: small tiles only.
    Int8Tile(64, 16, 64, 4, 2, "unaligned"),
    Int8Tile(64, 64, 32, 4, 2, "unaligned"),
)
GROUP_N = 8
# Under the interpreter every tl op runs in numpy: one small tile, no autotuning.
INTERPRET_TILE = Int8Tile(32, 16, 32, 4, 1)


def smem_estimate(cfg: Int8Tile, elem_bytes: int) -> int:
    """Pipelined operand buffers: an int8 W tile and an x tile per stage."""
    return cfg.num_stages * (cfg.block_n + cfg.block_m * elem_bytes) * cfg.block_k


def _bucket_fits(cfg: Int8Tile, bucket: int) -> bool:
    # Decode buckets (<= 64) take tiles no taller than the bucket (16 at least); prefill takes 64-row or taller.
    return cfg.block_m <= max(16, bucket) if bucket <= 64 else cfg.block_m >= 64


def _prune(configs: list, named_args: dict, **kwargs) -> list:
    x = named_args["X"]
    cc, smem = launch.device_limits(x.device)
    form = "aligned" if named_args.get("ALIGN", 1) else "unaligned"
    es, dt = x.element_size(), DTYPE_NAMES[x.dtype]
    kept = [c for c in configs if c.tile.form == form and _bucket_fits(c.tile, named_args["M_BUCKET"])
            and c.tile.ships(cc, dt) and smem_estimate(c.tile, es) <= smem]
    # Never leave the autotuner empty: the smallest tile fits everything.
    return kept or [min(configs, key=lambda c: smem_estimate(c.tile, es))]


_NAMES = ("BLOCK_N", "BLOCK_M", "BLOCK_K")


def _autotune_configs() -> list:
    out = []
    for cfg in CONFIGS:
        c = triton.Config(dict(zip(_NAMES, cfg[:3], strict=True)), num_warps=cfg.num_warps,
                          num_stages=cfg.num_stages)
        c.tile = cfg  # read back by the prune hook
        out.append(c)
    return out


_tuned = triton.autotune(
    configs=_autotune_configs(),
    key=["M_BUCKET", "ALIGN", "N", "K", "HAS_BIAS"],
    prune_configs_by={"early_config_prune": _prune},
)(triton.heuristics({"EVEN_K": lambda a: a["K"] % a["BLOCK_K"] == 0})(_int8_linear_kernel))


def _launch(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
            ) -> torch.Tensor:
    """Host launcher on 2-D x (M, K); returns y (M, N)."""
    M, K = x.shape
    N = weight.shape[0]
    # The GEMM steps along K with 32-bit in-tile offsets (rows and output channels are int64).
    x = fit_reduction_stride("x", x, 1)
    weight = fit_reduction_stride("weight_int8", weight, 1)
    y = launch.alloc((M, N), x.dtype, x.device)
    if M == 0 or N == 0:
        return y
    b = bias if bias is not None else scale  # dummy pointer when there is no bias: never dereferenced
    args = (x, weight, scale, b, y, M, N, K, m_bucket(M), align_bucket(x, weight),
            x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), y.stride(0), y.stride(1))
    with device_guard(x):  # Triton launches on the current device: make it x's
        if interpreter_enabled():
            t = INTERPRET_TILE
            grid = (triton.cdiv(M, t.block_m) * triton.cdiv(N, t.block_n),)
            _int8_linear_kernel[grid](*args, HAS_BIAS=bias is not None, BLOCK_N=t.block_n, BLOCK_M=t.block_m,
                                      BLOCK_K=t.block_k, GROUP_N=GROUP_N, EVEN_K=K % t.block_k == 0,
                                      num_warps=t.num_warps, num_stages=t.num_stages)
        else:
            _tuned[lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)](
                *args, HAS_BIAS=bias is not None, GROUP_N=GROUP_N)
    return y


# ----------------------------------------------------------------------------- custom op
# Opaque to torch.compile (register_fake gives shapes), like the other ops of this package.


@torch.library.custom_op(
    "tritongpt::int8_linear", mutates_args=(),
    schema="(Tensor x, Tensor weight, Tensor scale, Tensor? bias) -> Tensor",
)
def _int8_linear_op(x, weight, scale, bias):
    y = _launch(rows(x), weight, scale, bias)
    return y.view(*x.shape[:-1], weight.shape[0])


@_int8_linear_op.register_fake
def _(x, weight, scale, bias):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _setup(ctx, inputs, output):
    x, weight, scale, bias = inputs
    ctx.save_for_backward(weight, scale)
    ctx.x_dtype = x.dtype
    ctx.has_bias = bias is not None


def _backward(ctx, dy):
    weight, scale = ctx.saved_tensors
    need = ctx.needs_input_grad
    dx = db = None
    if need[0]:
        # dx = dy @ (W8 * scale)^T^T = (dy * scale) @ W8, in fp32 (an fp16 sum over N of int8-sized terms
        # could overflow); a training-time path, not a decode one, so plain PyTorch.
        dx = torch.matmul(dy.float() * scale, weight.float()).to(ctx.x_dtype)
    if ctx.has_bias and need[3]:
        db = dy.reshape(-1, dy.shape[-1]).sum(0)
    return dx, None, None, db


torch.library.register_autograd("tritongpt::int8_linear", _backward, setup_context=_setup)


# ----------------------------------------------------------------------------- public API


def _validate(x: object, weight: object, scale: object, bias: object) -> None:
    x = check_tensor("x", x)
    if x.dim() < 1:
        raise ValueError("x: expected a tensor of shape (..., K), got a 0-D tensor")
    weight = check_tensor("weight_int8", weight, ndim=2, dtypes=(torch.int8,), unit_last_stride=False)
    if weight.device != x.device:
        raise ValueError(f"weight_int8: device {weight.device} does not match x device {x.device}")
    N, K = weight.shape
    if x.shape[-1] != K:
        raise ValueError(f"weight_int8: expected shape (N, {x.shape[-1]}) to match x's last dim, "
                         f"got {tuple(weight.shape)}")
    if K == 0:
        raise ValueError("x: the reduction dim K must be >= 1, got 0")
    scale = check_tensor("scale", scale, ndim=1, dtypes=(torch.float32,))
    if scale.device != x.device:
        raise ValueError(f"scale: device {scale.device} does not match x device {x.device}")
    if scale.shape[0] != N:
        raise ValueError(f"scale: expected shape ({N},), one per output channel of weight_int8, "
                         f"got {tuple(scale.shape)}")
    if scale.requires_grad:
        raise ValueError("scale: int8_linear is differentiable in x and bias only; pass scale.detach()")
    if bias is not None:
        bias = check_tensor("bias", bias, ndim=1)
        check_same("bias", bias, "x", x)
        if bias.shape[0] != N:
            raise ValueError(f"bias: expected shape ({N},) to match weight_int8's N, got {tuple(bias.shape)}")


def int8_linear(x: torch.Tensor, weight_int8: torch.Tensor, scale: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ (weight_int8 * scale[:, None]).T + bias`` with the weight read as int8.

    x (..., K) fp16/bf16/fp32, weight_int8 (N, K) int8, scale (N,) fp32, bias (N,) in x's dtype or None
    -> (..., N) in x's dtype. Differentiable in x and bias.
    """
    _validate(x, weight_int8, scale, bias)
    return _int8_linear_op(x, weight_int8, scale, bias)


# ----------------------------------------------------------------------------- AOT variants

_ARCHS = (80, 89, 90)


def variants() -> list[KernelVariant]:
    """Every shipped tile x dtype, with a bias, masked-K form, for sm_80/sm_89/sm_90a compile checks: the
    aligned form (what GPT-shaped tensors give) for the aligned tiles, the unaligned form for the others.
    Unit strides are constexpr 1, as Triton's JIT specialises them at runtime."""
    out = []
    for ci, cfg in enumerate(CONFIGS):
        aligned = cfg.form == "aligned"
        for dtype in FLOAT_DTYPES:
            es, dt = torch.empty((), dtype=dtype).element_size(), DTYPE_NAMES[dtype]
            archs = tuple(cc for cc in _ARCHS if smem_estimate(cfg, es) <= SMEM_LIMIT[cc] and cfg.ships(cc, dt))
            if not archs:
                continue
            sig = signature(("X", f"*{dt}"), ("W", "*i8"), ("S", "*fp32"), ("B Y", f"*{dt}"),
                            ("M N K M_BUCKET ALIGN stride_xm stride_wn stride_ym", "i32"))
            consts = dict(stride_xk=1, stride_wk=1, stride_yn=1, HAS_BIAS=True, BLOCK_N=cfg.block_n,
                          BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, GROUP_N=GROUP_N, EVEN_K=False)
            # What the launcher marks divisible by 16: aligned, every pointer, size and stride (ALIGN is never
            # specialised); unaligned, only the fresh output.
            divisible = tuple(k for k in sig if k != "ALIGN") if aligned else ("Y",)
            out.append(KernelVariant(
                name=f"int8_linear[{cfg.block_n}x{cfg.block_m}x{cfg.block_k},w{cfg.num_warps},s{cfg.num_stages},"
                     f"{dt},bias{'' if aligned else ',unaligned'}]",
                fn=_int8_linear_kernel, signature=sig, constexprs=consts, num_warps=cfg.num_warps,
                num_stages=cfg.num_stages, archs=archs, expect_mma=True,
                # The MMA's rows are the output channels (the tile is transposed): wgmma wants 64 of them.
                tags={"kernel": "int8_linear", "config": ci, "dtype": dt, "aligned": aligned,
                      "block_m": cfg.block_n, "divisible_by_16": divisible},
            ))
    return out
