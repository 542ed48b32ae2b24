"""Backward GEMMs of the fused linear layers, and the tile configs and variant builder shared with the forwards.

Algorithm. For ``y = act(x @ W^T + b) (+ r)`` with x (M, K), W (N, K):

    dz = dy * act'(z)          (act = GELU-tanh: the forward saved g = gelu'(z); plain linear: dz = dy)
    dx = dz @ W                (M, K)   ``_linear_bwd_dx_kernel``: reduces over N
    dW = dz^T @ x              (N, K)   ``_linear_bwd_dw_kernel``: reduces over M
    db = sum_m dz              (N,)     fused into the dW kernel: the programs of the first K tile
                                        also row-sum the dz^T tiles they already hold (no atomics)

dz is never stored: both GEMMs form the dz tile in their prologue (load dy and g tiles, multiply in
fp32, round once to the storage dtype, feed ``tl.dot``), so there is no elementwise pass over an
(M, N) activation and no extra (M, N) buffer. The forward saves g = gelu'(z) rather than z, which
makes the prologue one multiply per element instead of a tanh-GELU derivative recomputed
ceil(K / BLOCK_K) times per element (that recompute would cost CUDA-core time comparable to the
tensor-core work of the tile). The price: g is rounded to the storage dtype, as z would have been.

Accumulation is fp32; dx, dW, db are written in the storage dtype (as PyTorch does). fp32 inputs
use TF32 tensor cores on GPUs (``tl.dot``'s default). Deterministic: no atomics, no split-K.
Limitation: small N*K with huge M (e.g. dW of a 768x768 projection) gives few dW programs; a
deterministic split-M with a second reduction pass would fill the GPU better.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl

from . import launch
from .device_functions import grouped_pid
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, align_bucket, signature
from .launch import DTYPE_NAMES, SMEM_LIMIT
from .validate import device_guard

CHECKED_ARCHS = (80, 90, 100)  # targets whose config lists were compiled per entry (TileConfig.archs)


class TileConfig(NamedTuple):
    """One GEMM tile: output block (B0 x B1), reduction block BR, grouped-launch width GROUP."""

    b0: int
    b1: int
    br: int
    group: int
    num_warps: int
    num_stages: int
    archs: tuple[int, ...]  # compute capabilities where it compiled spill-free (see tests/variants)
    elem_bytes: tuple[int, ...] = (2, 4)  # element sizes it is shipped for (2: fp16/bf16, 4: fp32)
    skip: tuple[tuple[int, int], ...] = ()  # (target, element size) pairs left out of the above
    # The input forms it ships for: "aligned" (what GPT-shaped tensors give), or "unaligned" (odd views,
    # rows not a multiple of 16 elements: scalar loads, so only small tiles stay spill-free).
    form: str = "aligned"

    def ships(self, cc: int, elem_bytes: int) -> bool:
        """Shipped for this target (80, 90, 100 listed in ``archs``; other parts: by shared memory alone)
        and element size."""
        if elem_bytes not in self.elem_bytes or (cc, elem_bytes) in self.skip:
            return False
        return cc not in CHECKED_ARCHS or cc in self.archs


# Short list in the style of Triton's matmul tutorial: large tiles for training-size GEMMs, a
# 64x64 tile for small ones, a BM=16 tile for decode (M = batch). The tutorial's 128x256x64 / 8
# warps and 128x128x32 / 4 warps are left out: with the GELU epilogue they spill on sm_80 and
# sm_90a (0.5-1 KB of stack; a 128x128 fp32 accumulator is 128 registers/thread at 4 warps).
# Shared memory is at most stages * (2 B0 + B1) * BR * element size (the gated dx kernel streams
# dy, g and W tiles); `_fits` drops what a device (or fp32) cannot hold.
# Every entry compiles for sm_80 and sm_90a with every kernel/flag variant without spills (the tests check it).
CONFIGS: tuple[TileConfig, ...] = (
    # Same tile, per-arch stages: 3 stages spill with the GELU epilogue on sm_90a, 4 don't fit sm_80.
    TileConfig(128, 128, 64, 8, 8, 3, (80,)),
    TileConfig(128, 128, 64, 8, 8, 4, (90, 100)),
    TileConfig(128, 64, 64, 8, 8, 4, (80, 90, 100)),  # 4 warps: 255 regs + spills on sm_90a (GELU)
    TileConfig(64, 128, 64, 8, 8, 4, (80, 90, 100)),  # 4 warps: spills on sm_90a with the GELU epilogue
    # fp32 on sm_100a: the gated dW spills 80 B; 64x64x32 (last) takes fp32 there.
    TileConfig(64, 64, 64, 8, 4, 3, (80, 90, 100), skip=((100, 4),)),
    TileConfig(16, 128, 128, 8, 4, 3, (80, 90, 100)),
    # From the upstream persistent-matmul list, the one that compiles spill-free here in every kernel
    # (16-bit: 114-213 regs on sm_80/sm_89/sm_90a); fp32's GELU forward spills (sm_80: 255 regs +
    # 1088 B, sm_90a: 560 B), so 16-bit only. The others spill in the GELU forward (128x256x64/w8,
    # 128x128x64/w4 on sm_90a: 255 regs + 1.8-1.9 KB; 64x256x32/w4 on sm_80 and sm_90a: 1.2-1.9 KB)
    # or exceed shared memory (256x128x64: the gated backward's 2 B0 + B1 rows take 240 KB).
    # On sm_100a its gated dx/dW spill 8 B.
    TileConfig(128, 64, 32, 8, 4, 4, (80, 90), elem_bytes=(2,)),
    TileConfig(64, 64, 32, 8, 4, 3, (100,), elem_bytes=(4,)),  # fp32 on sm_100a (see 64x64x64)
    # Unaligned inputs: the aligned tiles spill 8-860 B there (64x64x64, 16x128x128, every kernel); these
    # stay clean on sm_80/sm_90a/sm_100a in every kernel, fp16 and fp32: 64x32x32 146-248 regs (wgmma /
    # tcgen05 on sm_90a / sm_100a), 32x64x32 121-232 (forward only: the backward keeps 64-row tiles).
    TileConfig(64, 32, 32, 8, 4, 2, (80, 90, 100), form="unaligned"),
    TileConfig(32, 64, 32, 8, 4, 2, (80, 90, 100), form="unaligned"),
)
# Backward runs in training (M = tokens, large): no decode tile, which also spills (8 B) in the
# dx/dW kernels on sm_90a.
BWD_CONFIGS: tuple[TileConfig, ...] = tuple(c for c in CONFIGS if c.b0 >= 64)
# Under the interpreter every tl op runs in numpy: one small tile, no autotuning.
INTERPRET_CONFIG = TileConfig(32, 32, 32, 4, 4, 1, ())

# Offsets inside a tile along the GEMM's reduction dim are int32 (``tl.arange(0, BLOCK) * stride``
# and the per-step pointer increment ``BLOCK * stride``); output rows/cols use int64, so tensors may
# span more than 2**31 elements, but a reduction-dim stride must keep BLOCK * stride below 2**31.
MAX_TILE = max(max(c[:3]) for c in (*CONFIGS, INTERPRET_CONFIG))
MAX_REDUCTION_STRIDE = 2**31 // MAX_TILE  # exclusive bound (2**24 with 128-wide tiles)


def fit_reduction_stride(name: str, t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` if a kernel can step along its ``dim`` (a GEMM reduction dim) with 32-bit offsets,
    else a contiguous copy if that fits; ValueError naming ``name`` if not even that does.

    Same bound on every device (the largest tile), so the CPU interpreter rejects what a GPU would.
    A size-1 dim is never stepped through: its stride does not matter.
    """
    if t.shape[dim] <= 1 or t.stride(dim) < MAX_REDUCTION_STRIDE:
        return t
    contiguous_stride = math.prod(t.shape[dim + 1:])
    if contiguous_stride >= MAX_REDUCTION_STRIDE:  # checked before copying anything
        raise ValueError(
            f"{name}: shape {tuple(t.shape)} needs stride {contiguous_stride} along dim {dim} even when "
            f"contiguous; this kernel steps along that dim with 32-bit offsets, so the stride must be "
            f"below {MAX_REDUCTION_STRIDE}")
    return t.contiguous()


def smem_estimate(cfg: TileConfig, elem_bytes: int) -> int:
    """Pipelined operand buffers, worst kernel (gated backward: two B0 x BR tiles and one B1 x BR)."""
    return cfg.num_stages * (2 * cfg.b0 + cfg.b1) * cfg.br * elem_bytes


def _fits(cfg: TileConfig, cc: int, smem_limit: int, elem_bytes: int) -> bool:
    if not cfg.ships(cc, elem_bytes):
        return False
    return smem_estimate(cfg, elem_bytes) <= smem_limit


def make_prune(first_ptr: str) -> Callable[..., list[Any]]:
    """early_config_prune for triton.autotune: keep configs that fit this device and dtype."""

    def prune(configs: list[Any], named_args: dict[str, Any], **kwargs: Any) -> list[Any]:
        t = named_args[first_ptr]
        cc, smem = launch.device_limits(t.device)
        form = "aligned" if named_args.get("ALIGN", 1) else "unaligned"
        kept = [c for c in configs if _fits(c.tile, cc, smem, t.element_size()) and c.tile.form == form]
        # Never leave the autotuner empty: the smallest tile fits everything.
        return kept or [min(configs, key=lambda c: smem_estimate(c.tile, t.element_size()))]

    return prune


def autotune_configs(names: tuple[str, str, str, str], configs: tuple[TileConfig, ...] = CONFIGS) -> list[Any]:
    """triton.Config list with the kernel's own block names (out0, out1, reduction, group)."""
    out = []
    for cfg in configs:
        c = triton.Config(dict(zip(names, cfg[:4], strict=True)), num_warps=cfg.num_warps,
                          num_stages=cfg.num_stages)
        c.tile = cfg  # read back by the prune hook
        out.append(c)
    return out


def m_bucket(m: int) -> int:
    """Autotune key for the row count: power-of-2 buckets, so new prompt lengths reuse tunings."""
    return triton.next_power_of_2(max(m, 1))


@triton.jit(do_not_specialize=["ALIGN"])
def _linear_bwd_dx_kernel(
    DY,  # (M, N) upstream gradient
    G,  # (M, N) gelu'(z) saved by the forward (read only when HAS_GATE)
    W,  # (N, K)
    DX,  # (M, K)
    M, N, K,
    M_BUCKET, ALIGN,  # autotune key only (ALIGN: align_bucket)
    stride_dym, stride_dyn, stride_gm, stride_gn, stride_wn, stride_wk, stride_dxm, stride_dxk,
    HAS_GATE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr,
    EVEN_N: tl.constexpr,
):
    pid_m, pid_k = grouped_pid(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_K), GROUP_M)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k.to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = tl.arange(0, BLOCK_N)
    # Out-of-range rows/cols wrap to valid ones so loads need no M/K masks; the store drops them.
    rm = offs_m % M
    rk = offs_k % K
    dy_ptrs = DY + rm[:, None] * stride_dym + offs_n[None, :] * stride_dyn  # (BLOCK_M, BLOCK_N)
    g_ptrs = G + rm[:, None] * stride_gm + offs_n[None, :] * stride_gn
    w_ptrs = W + offs_n[:, None] * stride_wn + rk[None, :] * stride_wk  # (BLOCK_N, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n in range(0, tl.cdiv(N, BLOCK_N)):
        if EVEN_N:
            dz = tl.load(dy_ptrs)
            w = tl.load(w_ptrs)
            if HAS_GATE:
                g = tl.load(g_ptrs)
        else:
            n_left = N - n * BLOCK_N
            dz = tl.load(dy_ptrs, mask=offs_n[None, :] < n_left, other=0.0)
            w = tl.load(w_ptrs, mask=offs_n[:, None] < n_left, other=0.0)
            if HAS_GATE:
                g = tl.load(g_ptrs, mask=offs_n[None, :] < n_left, other=0.0)
        if HAS_GATE:
            # dz = dy * gelu'(z) in fp32, rounded once to the storage dtype for the tensor cores.
            dz = (dz.to(tl.float32) * g.to(tl.float32)).to(DY.dtype.element_ty)
        acc = tl.dot(dz, w, acc=acc)
        dy_ptrs += BLOCK_N * stride_dyn
        g_ptrs += BLOCK_N * stride_gn
        w_ptrs += BLOCK_N * stride_wn
    mask = (offs_m[:, None] < M) & (offs_k[None, :] < K)
    dx_ptrs = DX + offs_m[:, None] * stride_dxm + offs_k[None, :] * stride_dxk
    tl.store(dx_ptrs, acc.to(DX.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["ALIGN"])
def _linear_bwd_dw_kernel(
    DY,  # (M, N) upstream gradient
    G,  # (M, N) gelu'(z) (read only when HAS_GATE)
    X,  # (M, K)
    DW,  # (N, K)
    DB,  # (N,) written only when HAS_BIAS
    M, N, K,
    M_BUCKET, ALIGN,  # autotune key only (ALIGN: align_bucket)
    stride_dym, stride_dyn, stride_gm, stride_gn, stride_xm, stride_xk, stride_dwn, stride_dwk,
    HAS_GATE: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr, GROUP_N: tl.constexpr,
    EVEN_M: tl.constexpr,
):
    pid_n, pid_k = grouped_pid(tl.program_id(0), tl.cdiv(N, BLOCK_N), tl.cdiv(K, BLOCK_K), GROUP_N)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = pid_k.to(tl.int64) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_m = tl.arange(0, BLOCK_M)
    rn = offs_n % N
    rk = offs_k % K
    dyt_ptrs = DY + rn[:, None] * stride_dyn + offs_m[None, :] * stride_dym  # (BLOCK_N, BLOCK_M) = dy^T
    gt_ptrs = G + rn[:, None] * stride_gn + offs_m[None, :] * stride_gm
    x_ptrs = X + offs_m[:, None] * stride_xm + rk[None, :] * stride_xk  # (BLOCK_M, BLOCK_K)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m in range(0, tl.cdiv(M, BLOCK_M)):
        if EVEN_M:
            dzt = tl.load(dyt_ptrs)
            x = tl.load(x_ptrs)
            if HAS_GATE:
                gt = tl.load(gt_ptrs)
        else:
            m_left = M - m * BLOCK_M
            dzt = tl.load(dyt_ptrs, mask=offs_m[None, :] < m_left, other=0.0)
            x = tl.load(x_ptrs, mask=offs_m[:, None] < m_left, other=0.0)
            if HAS_GATE:
                gt = tl.load(gt_ptrs, mask=offs_m[None, :] < m_left, other=0.0)
        if HAS_GATE:
            dzt32 = dzt.to(tl.float32) * gt.to(tl.float32)
            dzt = dzt32.to(DY.dtype.element_ty)
        else:
            dzt32 = dzt.to(tl.float32)
        if HAS_BIAS:
            db += tl.sum(dzt32, axis=1)  # masked rows were loaded as 0
        acc = tl.dot(dzt, x, acc=acc)
        dyt_ptrs += BLOCK_M * stride_dym
        gt_ptrs += BLOCK_M * stride_gm
        x_ptrs += BLOCK_M * stride_xm
    mask = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    dw_ptrs = DW + offs_n[:, None] * stride_dwn + offs_k[None, :] * stride_dwk
    tl.store(dw_ptrs, acc.to(DW.dtype.element_ty), mask=mask)
    if HAS_BIAS:
        # Every K tile of this N block computed the same sums; the first one writes them.
        if pid_k == 0:
            tl.store(DB + offs_n, db.to(DB.dtype.element_ty), mask=offs_n < N)


# Block-size names of a TileConfig's (out0, out1, reduction, group) in the dx and dW kernels (their TMA
# twins in fused_linear_tma take the same).
DX_NAMES = ("BLOCK_M", "BLOCK_K", "BLOCK_N", "GROUP_M")
DW_NAMES = ("BLOCK_N", "BLOCK_K", "BLOCK_M", "GROUP_N")
_AUTOTUNE_KEY = ["M_BUCKET", "ALIGN", "N", "K", "HAS_GATE"]

_dx_tuned = triton.autotune(
    configs=autotune_configs(DX_NAMES, BWD_CONFIGS), key=_AUTOTUNE_KEY,
    prune_configs_by={"early_config_prune": make_prune("DY")},
)(triton.heuristics({"EVEN_N": lambda a: a["N"] % a["BLOCK_N"] == 0})(_linear_bwd_dx_kernel))
_dw_tuned = triton.autotune(
    configs=autotune_configs(DW_NAMES, BWD_CONFIGS), key=[*_AUTOTUNE_KEY, "HAS_BIAS"],
    prune_configs_by={"early_config_prune": make_prune("DY")},
)(triton.heuristics({"EVEN_M": lambda a: a["M"] % a["BLOCK_M"] == 0})(_linear_bwd_dw_kernel))


def _interp_blocks(names: tuple[str, str, str, str]) -> dict[str, int]:
    return dict(zip(names, INTERPRET_CONFIG[:4], strict=True))


def fused_linear_bwd(
    dy: torch.Tensor,  # (M, N), any strides
    x: torch.Tensor,  # (M, K)
    weight: torch.Tensor,  # (N, K)
    gate: torch.Tensor | None,  # (M, N) gelu'(z) or None for a plain linear
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Launch the dx and dW(+db) GEMMs on 2-D operands; returns (dx, dW, db), None where not needed.

    Operands whose strides along a reduction dim are too large for the kernels' 32-bit in-tile
    offsets are copied contiguous first (dy comes from autograd, the caller cannot choose it);
    ValueError naming the operand when even a contiguous copy does not fit. Launches on dy's GPU.
    """
    M, N = dy.shape
    K = x.shape[1]
    has_gate = gate is not None
    # The dx GEMM reduces over N (dy, gate, weight rows), the dW GEMM over M (dy, gate, x rows).
    dims = ((1,) if need_dx else ()) + ((0,) if need_dw or need_db else ())
    for d in dims:
        dy = fit_reduction_stride("dy", dy, d)
        if has_gate:
            gate = fit_reduction_stride("gelu_grad", gate, d)
    if need_dx:
        weight = fit_reduction_stride("weight", weight, 0)
    if need_dw or need_db:
        x = fit_reduction_stride("x", x, 0)
    g = gate if has_gate else dy  # dummy pointer, never read
    dx = dw = db = None
    interp = interpreter_enabled()
    if need_dx:
        dx = torch.empty((M, K), dtype=x.dtype, device=x.device)
        if M > 0 and K > 0:
            args = (dy, g, weight, dx, M, N, K, m_bucket(M), align_bucket(dy, gate, weight), dy.stride(0),
                    dy.stride(1), g.stride(0),
                    g.stride(1), weight.stride(0), weight.stride(1), dx.stride(0), dx.stride(1))
            with device_guard(dy):
                if interp:
                    blocks = _interp_blocks(DX_NAMES)
                    grid = (triton.cdiv(M, blocks["BLOCK_M"]) * triton.cdiv(K, blocks["BLOCK_K"]),)
                    _linear_bwd_dx_kernel[grid](*args, HAS_GATE=has_gate, EVEN_N=N % blocks["BLOCK_N"] == 0,
                                                **blocks, num_warps=4, num_stages=1)
                else:
                    _dx_tuned[lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(K, meta["BLOCK_K"]),)](
                        *args, HAS_GATE=has_gate)
    if need_dw or need_db:
        dw = torch.empty((N, K), dtype=weight.dtype, device=weight.device)
        db = torch.empty((N,), dtype=weight.dtype, device=weight.device) if need_db else dw
        if N > 0 and K > 0:  # K == 0 is rejected by the public functions
            args = (dy, g, x, dw, db, M, N, K, m_bucket(M), align_bucket(dy, gate, x), dy.stride(0),
                    dy.stride(1), g.stride(0),
                    g.stride(1), x.stride(0), x.stride(1), dw.stride(0), dw.stride(1))
            with device_guard(dy):
                if interp:
                    blocks = _interp_blocks(DW_NAMES)
                    grid = (triton.cdiv(N, blocks["BLOCK_N"]) * triton.cdiv(K, blocks["BLOCK_K"]),)
                    _linear_bwd_dw_kernel[grid](*args, HAS_GATE=has_gate, HAS_BIAS=need_db,
                                                EVEN_M=M % blocks["BLOCK_M"] == 0, **blocks, num_warps=4,
                                                num_stages=1)
                else:
                    _dw_tuned[lambda meta: (triton.cdiv(N, meta["BLOCK_N"]) * triton.cdiv(K, meta["BLOCK_K"]),)](
                        *args, HAS_GATE=has_gate, HAS_BIAS=need_db)
        if not need_db:
            db = None
        if not need_dw:
            dw = None
    return dx, dw, db


# ----------------------------------------------------------------------------- AOT variants


def shipped_archs(cfg: TileConfig, dtype: torch.dtype) -> tuple[int, ...]:
    """The targets (sm_80, sm_89, sm_90a, sm_100a) a tile ships for with this dtype: listed there and within
    the part's shared memory."""
    es = torch.empty((), dtype=dtype).element_size()
    return tuple(cc for cc in (80, 89, 90, 100) if cfg.ships(cc, es) and smem_estimate(cfg, es) <= SMEM_LIMIT[cc])


def gemm_variants(tag: str, fn: Any, names: tuple[str, ...], ptrs: str, scalars: str, units: tuple[str, ...],
                  even: str, outputs: str, flag_sets: list[dict], configs: tuple[TileConfig, ...]) -> list[KernelVariant]:
    """The variants of one pointer GEMM kernel (the forward's, dx's or dW's): every tile of ``configs`` x
    fp16 with each flag set, bf16 (different converts) and fp32 (TF32, 2x shared memory) with the first, in
    the form the tile ships for. ``names``: the kernel's block names; ``ptrs``, ``scalars``: its pointer and
    i32 arguments; ``units``: the unit strides (constexpr 1, as Triton's JIT specialises them at runtime);
    ``even``: its EVEN_* flag; ``outputs``: the fresh output pointers."""
    out: list[KernelVariant] = []
    for ci, cfg in enumerate(CONFIGS):
        if cfg not in configs:
            continue
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            archs = shipped_archs(cfg, dtype)
            for fi, flags in enumerate(flag_sets if dtype == torch.float16 else flag_sets[:1]):
                if archs:
                    out.append(_variant(tag, fn, names, ptrs, scalars, units, even, outputs, cfg, ci,
                                        DTYPE_NAMES[dtype], fi, flags, cfg.form == "aligned", archs))
    return out


def _variant(tag, fn, names, ptrs, scalars, units, even, outputs, cfg, ci, dtype, fi, flags, aligned, archs):
    sig = signature((ptrs, f"*{dtype}"), (scalars, "i32"), ("ALIGN", "i32"))
    consts = {u: 1 for u in units}
    consts.update(dict(zip(names, cfg[:4], strict=True)))
    consts.update(flags)
    consts[even] = False  # the masked (slower-to-compile, more registers) path
    # What the launcher marks divisible by 16: aligned (GPT-2's shapes) every pointer, size and stride
    # (ALIGN is never specialised); unaligned only the fresh outputs.
    divisible = tuple(k for k in sig if k != "ALIGN") if aligned else tuple(outputs.split())
    fl = ",".join(k for k, v in flags.items() if v)
    return KernelVariant(
        name=f"fused_linear_{tag}[{cfg.b0}x{cfg.b1}x{cfg.br},w{cfg.num_warps},s{cfg.num_stages},"
             f"{dtype},{fl}{'' if aligned else ',unaligned'}]",
        fn=fn, signature=sig, constexprs=consts, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages, archs=archs, expect_mma=True,
        tags={"kernel": tag, "config": ci, "dtype": dtype, "flags": fi, "aligned": aligned,
              "divisible_by_16": divisible},
    )


def variants() -> list[KernelVariant]:
    """The dx and dW kernels' variants (``gemm_variants``) over the backward's tiles, with and without the
    gate (dW with the bias), for sm_80/sm_89/sm_90a/sm_100a compile checks."""
    return (
        gemm_variants("dx", _linear_bwd_dx_kernel, DX_NAMES, "DY G W DX",
                      "M N K M_BUCKET stride_dym stride_gm stride_wn stride_dxm",
                      ("stride_dyn", "stride_gn", "stride_wk", "stride_dxk"), "EVEN_N", "DX",
                      [dict(HAS_GATE=True), dict(HAS_GATE=False)], BWD_CONFIGS)
        + gemm_variants("dw", _linear_bwd_dw_kernel, DW_NAMES, "DY G X DW DB",
                        "M N K M_BUCKET stride_dym stride_gm stride_xm stride_dwn",
                        ("stride_dyn", "stride_gn", "stride_xk", "stride_dwk"), "EVEN_M", "DW DB",
                        [dict(HAS_GATE=True, HAS_BIAS=True), dict(HAS_GATE=False, HAS_BIAS=True)], BWD_CONFIGS)
    )
