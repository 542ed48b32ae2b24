"""FlashAttention-2 backward in Triton (the forward and the public API are in flash_attention.py).

Deterministic, no atomics; three kernels:
1. preprocess: delta_i = sum_d dO_id * O_id (fp32, (B, H, Tq)).
2. dK/dV: each program owns BLOCK_N keys of one (batch, head), keeps k, v, dk, dv on chip and
   loops over the query blocks that can see them (for causal: from the diagonal down; the
   diagonal blocks apply the mask, the blocks below it do not). Works in the transposed frame
   (P^T = exp2(K Q^T * scale*log2(e) - lse*log2(e))) so no large tile is transposed.
3. dQ: each program owns BLOCK_M queries and loops over the key blocks they see, unmasked
   blocks first, then the diagonal/tail blocks with the mask.
Rows and keys past the end are loaded as zeros, but zero inputs do not make their probabilities
vanish: a key past Tk has score 0, so p = exp(-lse), which overflows to inf for a row whose LSE is
below about -88 (and inf * 0 = NaN in the next product). So probabilities past the end are zeroed
explicitly: rows past Tq load lse = +inf (p = exp2(s - inf) = 0, for free), and keys past Tk are
masked in the stage that can meet them (dQ's ragged tail stage; dK/dV's ragged key block for
non-causal; for causal the causal mask already hides them from every real row). Gradients are
returned contiguous in the input dtypes.

Grid: one axis, (batch * head) major and sequence block minor, so B*H is not held to CUDA's
65535 limit of the other axes (the same launch order as a (blocks, B*H) grid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import flash_attention_bwd_tma as bwd_tma
from . import launch, tma
from .attention_config import TunedConfig, tune_bucket
from .device_functions import head_program, load_kv, load_tiles, store_tile, store_tiles
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, align_bucket, signature
from .launch import LOG2E
from .online_softmax import query_range
from .validate import check_offsets, check_scale, device_guard


def _arch(device: torch.device | None = None) -> int:
    # Tables are checked for sm_80, sm_90a and sm_100a. Other parts (sm_86/89, sm_120) use the sm_80
    # table: mma.sync like sm_80, and where shared memory is smaller (99 KB) the autotuner skips a config
    # that fails with OutOfResources. The tensors' GPU, not the current one (multi-GPU hosts).
    major = torch.cuda.get_device_capability(device)[0]
    return {9: 90, 10: 100}.get(major, 80)


def pick_configs(tables: ConfigTables, nargs: dict, kw: dict) -> list[triton.Config]:
    """Autotune prune: keep the configs shipped for this GPU's architecture, input alignment, BLOCK_D,
    dtype, causality and shape."""
    arch, block_d, causal = _arch(nargs["Q"].device), kw["BLOCK_D"], bool(kw["CAUSAL"])
    fp32 = nargs["Q"].dtype == torch.float32
    aligned = bool(nargs["ALIGN"])
    tuned = tables.aligned if aligned else tables.unaligned
    # Ragged unless every tile divides T: judged at 128 (the largest tile) so that all shapes sharing
    # an autotune key (see tune_bucket) prune alike and a cached choice never meets a spilling form.
    # Unaligned inputs always take the masked (ragged) form (see the EVEN_* heuristics).
    ragged = not aligned or nargs["D"] != block_d or nargs["TQ"] % 128 != 0 or nargs["TK"] % 128 != 0
    keep = [t.config() for t in tuned if arch in t.archs_for(block_d, fp32, ragged, causal)]
    if not keep and arch in STAND_IN:  # a form this target's table leaves out: the stand-in target's picks
        keep = [t.config() for t in tuned if STAND_IN[arch] in t.archs_for(block_d, fp32, ragged, causal)]
    return keep or [tuned[-1].config()]  # not reached: the tables cover every D <= 128 and dtype


# sm_100a lists only the wgmma-sized (tcgen05) tiles it is compiled for; the forms it leaves out (fp32,
# unaligned inputs, D < 64) take sm_90a's small tiles, which the gate compiles for sm_90a only (to keep
# the variant set within its compile budget); the runtime compiled-facts prune (autotune_prune) drops
# any of them that spills on the user's sm_100 device.
STAND_IN = {100: 90}


@dataclass(frozen=True)
class ConfigTables:
    """A kernel's configs for aligned inputs (wgmma-sized tiles) and for unaligned ones."""

    aligned: list[TunedConfig]
    unaligned: list[TunedConfig]

    def autotune_configs(self) -> list[triton.Config]:
        """Every distinct config of both tables, for triton.autotune (the prune picks the table)."""
        seen = dict.fromkeys((c.block_m, c.block_n, c.num_warps, c.num_stages)
                             for c in (*self.aligned, *self.unaligned))
        return [TunedConfig(*k).config() for k in seen]

    def tuned(self, kernel):
        return triton.autotune(
            configs=self.autotune_configs(), key=AUTOTUNE_KEY,
            prune_configs_by={"early_config_prune": lambda configs, nargs, **kw: pick_configs(self, nargs, kw)},
        )(kernel)


@triton.jit
def _bwd_preprocess_kernel(
    O,  # (B, H, TQ, D)
    DO,  # (B, H, TQ, D)
    DELTA,  # (B, H, TQ) fp32, contiguous
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    H, TQ, D,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # (batch * head, row block), row block minor
    pid_m, pid_bh, b, h = head_program((TQ + BLOCK_M - 1) // BLOCK_M, H, True)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < TQ) & (offs_d[None, :] < D)
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dom
                 + offs_d[None, :] * stride_dod, mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + pid_bh * TQ + offs_m, tl.sum(o * do, 1), mask=offs_m < TQ)


@triton.jit
def _dkdv_inner(
    dk, dv, k, v,  # (BLOCK_N, BLOCK_D): fp32 accumulators, storage-dtype tiles
    Q, DO, LSE, DELTA,  # base pointers of this (batch, head)
    stride_qm, stride_qd, stride_dom, stride_dod,
    offs_n, offs_m, offs_d,
    lo, hi, TQ, TK, D, OFF, qk_scale,
    BLOCK_M: tl.constexpr, MASKED: tl.constexpr, MASK_KEYS: tl.constexpr,
    EVEN_M: tl.constexpr, EVEN_D: tl.constexpr,  # EVEN_M: every row of [lo, hi) is < TQ
):
    MASK_QD = not (EVEN_M and EVEN_D)
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m
        q_ptrs = Q + rows[:, None] * stride_qm + offs_d[None, :] * stride_qd
        do_ptrs = DO + rows[:, None] * stride_dom + offs_d[None, :] * stride_dod
        q, do = load_tiles(q_ptrs, do_ptrs, rows, offs_d, TQ, D, MASK_QD, MASK_QD)
        if EVEN_M:
            lse = tl.load(LSE + rows)
            delta = tl.load(DELTA + rows)
        else:
            # lse = +inf past the end: p = exp2(s - inf) = 0 for those rows whatever s is.
            lse = tl.load(LSE + rows, mask=rows < TQ, other=float("inf"))
            delta = tl.load(DELTA + rows, mask=rows < TQ, other=0.0)
        s_t = tl.dot(k, tl.trans(q), input_precision="ieee")  # (BLOCK_N, BLOCK_M)
        p_t = tl.exp2(s_t * qk_scale - (lse * 1.4426950408889634)[None, :])
        if MASKED:  # causal diagonal (it hides keys past TK from every real row too)
            p_t = tl.where(rows[None, :] + OFF >= offs_n[:, None], p_t, 0.0)
        if MASK_KEYS:  # non-causal ragged key block: zero keys past TK (their k = 0, p = exp(-lse))
            p_t = tl.where(offs_n[:, None] < TK, p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision="ieee")
        dp_t = tl.dot(v, tl.trans(do), input_precision="ieee")
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk, input_precision="ieee")
    return dk, dv


@triton.heuristics(
    {
        "EVEN_M": lambda a: bool(a["ALIGN"]) and a["TQ"] % a["BLOCK_M"] == 0,
        "EVEN_N": lambda a: bool(a["ALIGN"]) and a["TK"] % a["BLOCK_N"] == 0,
        "EVEN_D": lambda a: bool(a["ALIGN"]) and a["D"] == a["BLOCK_D"],
    }
)
@triton.jit(do_not_specialize=["ALIGN"])
def _attn_bwd_dkdv_kernel(
    Q,  # (B, H, TQ, D)
    K,  # (B, H, TK, D)
    V,  # (B, H, TK, D)
    DO,  # (B, H, TQ, D)
    LSE,  # (B, H, TQ) fp32, contiguous
    DELTA,  # (B, H, TQ) fp32, contiguous
    DK,  # (B, H, TK, D), contiguous
    DV,  # (B, H, TK, D), contiguous
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    H, TQ, TK, D,
    sm_scale, qk_scale,  # qk_scale = sm_scale * log2(e)
    TQ_BUCKET, TK_BUCKET, ALIGN,  # autotune keys only (ALIGN: align_bucket; unaligned takes the masked form)
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    EVEN_M: tl.constexpr, EVEN_N: tl.constexpr, EVEN_D: tl.constexpr,
):
    # (batch * head, key block), key block minor
    pid_n, pid_bh, b, h = head_program((TK + BLOCK_N - 1) // BLOCK_N, H, True)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    DK += pid_bh * TK * D  # dk, dv are contiguous
    DV += pid_bh * TK * D
    LSE += pid_bh * TQ
    DELTA += pid_bh * TQ

    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    MASK_KV = not (EVEN_N and EVEN_D)
    k_ptrs = K + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_ptrs = V + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
    k, v = load_tiles(k_ptrs, v_ptrs, offs_n, offs_d, TK, D, MASK_KV, MASK_KV)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    OFF = TK - TQ  # row i sees keys j <= i + OFF
    if CAUSAL:
        lo, mid = query_range(n0, TQ, TK, BLOCK_M, BLOCK_N)  # [lo, mid): the diagonal's query rows
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, stride_qm, stride_qd, stride_dom, stride_dod,
                             offs_n, offs_m, offs_d, lo, mid, TQ, TK, D, OFF, qk_scale,
                             BLOCK_M, True, False, EVEN_M, EVEN_D)
        # Rows >= mid see every key of the block, and mid = TQ when the block reaches past TK.
        full_lo = mid
    else:
        full_lo = 0
    # Whole query blocks stream without row masks; a ragged last block gets its own masked stage (as
    # the forward splits its key loop), so the main loop carries no mask registers.
    full_hi = TQ // BLOCK_M * BLOCK_M
    dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, stride_qm, stride_qd, stride_dom, stride_dod,
                         offs_n, offs_m, offs_d, full_lo, full_hi, TQ, TK, D, OFF, qk_scale,
                         BLOCK_M, False, not CAUSAL and not EVEN_N, True, EVEN_D)
    if not EVEN_M:
        tail_lo = full_hi
        if tail_lo < full_lo:
            tail_lo = full_lo
        dk, dv = _dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, stride_qm, stride_qd, stride_dom, stride_dod,
                             offs_n, offs_m, offs_d, tail_lo, TQ, TQ, TK, D, OFF, qk_scale,
                             BLOCK_M, False, not CAUSAL and not EVEN_N, False, EVEN_D)

    dk = dk * sm_scale
    out_offs = offs_n[:, None] * D + offs_d[None, :]
    store_tiles(DK + out_offs, dk.to(DK.dtype.element_ty), DV + out_offs, dv.to(DV.dtype.element_ty), offs_n, offs_d,
                TK, D, MASK_KV)


@triton.jit
def _dq_inner(
    dq, q, do, lse2, delta,  # (BLOCK_M, BLOCK_D) fp32 acc, tiles; (BLOCK_M,) log2-domain lse, delta
    K, V,  # base pointers of this (batch, head)
    stride_kn, stride_kd, stride_vn, stride_vd,
    offs_m, offs_n, offs_d,
    lo, hi, TK, D, OFF, qk_scale,
    BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k, v = load_kv(K, V, cols, offs_d, stride_kn, stride_kd, stride_vn, stride_vd, TK, D, MASKED, EVEN_D)
        s = tl.dot(q, tl.trans(k), input_precision="ieee")  # (BLOCK_M, BLOCK_N)
        p = tl.exp2(s * qk_scale - lse2[:, None])
        if MASKED:
            # Zero keys past TK: their k = 0 gives p = exp(-lse), inf for lse < ~-88, and
            # inf * (dp - delta) * 0 = NaN in dq. The causal mask implies cols < TK for real rows
            # (rows past TQ have lse = +inf, so p = 0 there already).
            if CAUSAL:
                p = tl.where(cols[None, :] <= offs_m[:, None] + OFF, p, 0.0)
            else:
                p = tl.where(cols[None, :] < TK, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision="ieee")
    return dq


@triton.heuristics(
    {
        "EVEN_M": lambda a: bool(a["ALIGN"]) and a["TQ"] % a["BLOCK_M"] == 0,
        "EVEN_D": lambda a: bool(a["ALIGN"]) and a["D"] == a["BLOCK_D"],
    }
)
@triton.jit(do_not_specialize=["ALIGN"])
def _attn_bwd_dq_kernel(
    Q,  # (B, H, TQ, D)
    K,  # (B, H, TK, D)
    V,  # (B, H, TK, D)
    DO,  # (B, H, TQ, D)
    LSE,  # (B, H, TQ) fp32, contiguous
    DELTA,  # (B, H, TQ) fp32, contiguous
    DQ,  # (B, H, TQ, D), contiguous
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    H, TQ, TK, D,
    sm_scale, qk_scale,
    TQ_BUCKET, TK_BUCKET, ALIGN,  # autotune keys only (ALIGN: align_bucket; unaligned takes the masked form)
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    EVEN_M: tl.constexpr, EVEN_D: tl.constexpr,
):
    # (batch * head, row block), row block minor
    pid_m, pid_bh, b, h = head_program((TQ + BLOCK_M - 1) // BLOCK_M, H, True)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    DQ += pid_bh * TQ * D
    LSE += pid_bh * TQ
    DELTA += pid_bh * TQ

    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    MASK_QD = not (EVEN_M and EVEN_D)
    q_ptrs = Q + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    do_ptrs = DO + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod
    q, do = load_tiles(q_ptrs, do_ptrs, offs_m, offs_d, TQ, D, MASK_QD, MASK_QD)
    if EVEN_M:
        lse2 = tl.load(LSE + offs_m) * 1.4426950408889634
        delta = tl.load(DELTA + offs_m)
    else:
        # lse = +inf past the end: p = 0 for those rows (see the module docstring).
        lse2 = tl.load(LSE + offs_m, mask=offs_m < TQ, other=float("inf")) * 1.4426950408889634
        delta = tl.load(DELTA + offs_m, mask=offs_m < TQ, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    OFF = TK - TQ
    if CAUSAL:
        hi_full = (m0 + OFF + 1) // BLOCK_N * BLOCK_N  # <= TK, see the forward
        hi = m0 + BLOCK_M + OFF
        if hi > TK:
            hi = TK
    else:
        hi_full = TK // BLOCK_N * BLOCK_N
        hi = TK
    dq = _dq_inner(dq, q, do, lse2, delta, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
                   offs_m, offs_n, offs_d, 0, hi_full, TK, D, OFF, qk_scale, BLOCK_N, False, CAUSAL, EVEN_D)
    dq = _dq_inner(dq, q, do, lse2, delta, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
                   offs_m, offs_n, offs_d, hi_full, hi, TK, D, OFF, qk_scale, BLOCK_N, True, CAUSAL, EVEN_D)

    dq = dq * sm_scale
    out_offs = offs_m[:, None] * D + offs_d[None, :]
    store_tile(DQ + out_offs, dq.to(DQ.dtype.element_ty), offs_m, offs_d, TQ, D, MASK_QD)


# dK/dV configs: BLOCK_N keys owned, BLOCK_M queries streamed; dQ configs: BLOCK_M queries owned,
# BLOCK_N keys streamed. Every shipped form compiles without spills and fits shared memory, in the
# specialisation real launches get (tests/test_attention.py, the inspect gate); registers (Triton 3.9,
# fp16, D=128 unless noted) in the comments. Aligned inputs get 64x64 tiles on every target (wgmma on
# sm_90a, tcgen05 on sm_100a). Left out: dK/dV 64x128 (spills at D=128 on sm_80 and sm_90a), 64x64 with
# 4 warps (46-240 B at D=128), 64x64 3 stages (40 B ragged causal on sm_90a, 32 B at D=64 on sm_80);
# dQ 128x64 at D=128 on sm_80 (24-575 B) and ragged on sm_100a (37 B).
_D128 = {80: 128, 90: 128, 100: 128}
_NO_B200 = {80: 128, 90: 128}  # small tiles: sm_100a takes sm_90a's (STAND_IN)
_DKDV_ALIGNED: list[TunedConfig] = [
    # sm_90a 200-238 (ragged causal at D=128 spills 96 B: 32x128 takes that form), sm_100a 84-155,
    # sm_80 169-234 at D=128 (ragged at D=64 spills 8-88 B there, so no ragged form on sm_80).
    TunedConfig(64, 64, 8, 2, max_d=_D128, ragged_max_d={90: 64, 100: 128}, full_ragged_max_d={90: 128, 100: 128}),
    # Ragged only: sm_90a 222-254, sm_80 220-252 at D=64 (D=128 spills there).
    TunedConfig(32, 128, 8, 2, ragged_max_d={80: 64, 90: 128}),
    TunedConfig(32, 32, 8, 2, max_d=_NO_B200, full_ragged_max_d={90: 128}),
    TunedConfig(32, 32, 4, 2, max_d=_NO_B200, ragged_max_d={80: 64, 90: 64}, full_ragged_max_d=_NO_B200),
    TunedConfig(32, 16, 4, 2, fp32_max_d={80: 32, 90: 32}),
    TunedConfig(16, 16, 4, 2, fp32_max_d=_NO_B200, min_d={80: 64},  # causal D=32: 80 regs + 8 B
                skip=frozenset({(80, 128, True, False, True)})),  # 8 B
    TunedConfig(16, 16, 4, 1, fp32_max_d={80: 128}, min_d={80: 128},  # there: 104 regs
                skip=frozenset({(80, 128, False, False, True)})),  # non-causal even: 16 B (16x16 s2 takes it)
]
_DKDV_UNALIGNED: list[TunedConfig] = [
    TunedConfig(32, 32, 8, 2, max_d=_NO_B200, full_ragged_max_d={80: 16, 90: 128}),  # nc D=16 on sm_80: 99 regs
    TunedConfig(32, 32, 4, 2, max_d=_NO_B200, ragged_max_d={80: 64, 90: 64}, full_ragged_max_d=_NO_B200,
                skip=frozenset({(80, 16, False, True, False)})),  # 8 B
    TunedConfig(32, 16, 4, 2, fp32_max_d={80: 32, 90: 32}, skip=frozenset({(80, 16, False, True, True)})),  # 16 B
    TunedConfig(32, 16, 4, 1, fp32_max_d={80: 16}),  # nc D=16 on sm_80: 70-80 regs
    TunedConfig(16, 16, 4, 2, fp32_max_d=_NO_B200, min_d={80: 64}),
]
_DQ_ALIGNED: list[TunedConfig] = [
    # sm_80 164-255, sm_90a 113-197, sm_100a 55-116; non-causal even D=16 on sm_80: 8 B.
    TunedConfig(64, 64, 8, 2, max_d=_D128, skip=frozenset({(80, 16, False, False, False)})),
    TunedConfig(64, 32, 8, 2, max_d={80: 16}),  # D=16 on sm_80: 64-79 regs
    TunedConfig(128, 64, 8, 2, max_d={80: 64, 90: 128, 100: 128}, ragged_max_d={80: 64, 90: 128, 100: 64},
                min_d={80: 64, 90: 64, 100: 64}),  # sm_90a 167-193, sm_80 186-255 at D=64
    TunedConfig(32, 32, 4, 2, fp32_max_d={80: 64, 90: 64}, min_d={90: 32},
                skip=frozenset({(80, 16, False, False, True), (80, 32, False, False, True)})),  # 8-16 B
    # Ragged D=128 on sm_90a: 264 B; 32x16 with 8 warps takes it (74-76 regs).
    TunedConfig(32, 16, 4, 2, fp32_max_d=_NO_B200, skip=frozenset({(90, 128, c, True, True) for c in (True, False)})),
    TunedConfig(32, 16, 8, 2, fp32_max_d={90: 128}, min_d={90: 128}),
]
_DQ_UNALIGNED: list[TunedConfig] = [
    TunedConfig(64, 32, 4, 2, max_d={80: 64, 90: 64}),
    TunedConfig(64, 32, 8, 2, max_d=_NO_B200),
    TunedConfig(32, 32, 4, 2, fp32_max_d={80: 64, 90: 64}, min_d={90: 32}),
    TunedConfig(32, 16, 4, 2, fp32_max_d=_NO_B200),
]
_DKDV_INTERPRET = TunedConfig(32, 64, 4, 1)
_DQ_INTERPRET = TunedConfig(64, 32, 4, 1)
_PRE_BLOCK_M = 32  # 64 rows at D=128 made ptxas spill on sm_80 (8 warps)

AUTOTUNE_KEY = ["TQ_BUCKET", "TK_BUCKET", "ALIGN", "D", "BLOCK_D", "CAUSAL"]  # + the tensors' dtypes (Triton adds them)
DKDV_TABLES = ConfigTables(_DKDV_ALIGNED, _DKDV_UNALIGNED)
DQ_TABLES = ConfigTables(_DQ_ALIGNED, _DQ_UNALIGNED)
_dkdv_tuned = DKDV_TABLES.tuned(_attn_bwd_dkdv_kernel)
_dq_tuned = DQ_TABLES.tuned(_attn_bwd_dq_kernel)


def attention_bwd_launch(
    do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
    causal: bool, sm_scale: float,
    dkdv_config: TunedConfig | None = None, dq_config: TunedConfig | None = None,
    compute_dq: bool = True, compute_dkdv: bool = True, path: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) of attention given dO, the inputs, the output and its LSE.

    ``compute_dq`` / ``compute_dkdv`` False skip that kernel; the skipped gradients come back as
    distinct empty (0,) tensors (a custom op may not return one tensor twice). ``path`` forces the
    memory path of the dK/dV and dQ kernels ("pointer" or "tma", see flash_attention_bwd_tma.bwd_path;
    None chooses). Forced configs are pointer-table picks: they keep the pointer path unless "tma" is
    asked, and the TMA path then autotunes its own table (one fixed config under the interpreter).
    """
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    check_offsets(q=q, k=k, v=v, do=do, o=o)
    sm_scale = check_scale(sm_scale)
    tma.check_path("path", path)
    dq = launch.alloc((B, H, Tq, D) if compute_dq else (0,), q.dtype, q.device)
    dk = launch.alloc((B, H, Tk, D) if compute_dkdv else (0,), k.dtype, k.device)
    dv = launch.alloc((B, H, Tk, D) if compute_dkdv else (0,), v.dtype, v.device)
    if not (compute_dq or compute_dkdv):
        return dq, dk, dv
    if B * H * Tq * D == 0:  # no queries: dk = dv = 0 (nothing else can be empty after validation)
        return dq, dk.zero_(), dv.zero_()
    if do.dtype != q.dtype:
        do = do.to(q.dtype)
    block_d = launch.block_d(D)
    forced = dkdv_config is not None or dq_config is not None  # forced configs are pointer-table picks
    use_tma = (path is not None or not forced) and bwd_tma.bwd_path(q, k, v, do, causal, block_d, path) == "tma"
    with device_guard(q):  # Triton launches on the current GPU: make it the tensors' one
        delta = launch.alloc(tuple(lse.shape), torch.float32, lse.device)
        _bwd_preprocess_kernel[(B * H * triton.cdiv(Tq, _PRE_BLOCK_M),)](
            o, do, delta, *o.stride(), *do.stride(), H, Tq, D, BLOCK_M=_PRE_BLOCK_M, BLOCK_D=block_d)
        if use_tma:
            bwd_tma.attention_bwd_tma_launch(do, q, k, v, o, lse, delta, dq, dk, dv, causal, sm_scale,
                                             compute_dq, compute_dkdv)
            return dq, dk, dv

        common = (*q.stride(), *k.stride(), *v.stride(), *do.stride(), H, Tq, Tk, D,
                  sm_scale, sm_scale * LOG2E, tune_bucket(Tq), tune_bucket(Tk), align_bucket(q, k, v, do))
        meta = {"CAUSAL": causal, "BLOCK_D": block_d}
        if interpreter_enabled():
            dkdv_config = dkdv_config or _DKDV_INTERPRET
            dq_config = dq_config or _DQ_INTERPRET
        if compute_dkdv:
            args = (q, k, v, do, lse, delta, dk, dv, *common)
            if dkdv_config is None:
                _dkdv_tuned[lambda m: (B * H * triton.cdiv(Tk, m["BLOCK_N"]),)](*args, **meta)
            else:
                grid = (B * H * triton.cdiv(Tk, dkdv_config.block_n),)
                _attn_bwd_dkdv_kernel[grid](*args, **meta, **dkdv_config.kwargs())
        if compute_dq:
            args = (q, k, v, do, lse, delta, dq, *common)
            if dq_config is None:
                _dq_tuned[lambda m: (B * H * triton.cdiv(Tq, m["BLOCK_M"]),)](*args, **meta)
            else:
                grid = (B * H * triton.cdiv(Tq, dq_config.block_m),)
                _attn_bwd_dq_kernel[grid](*args, **meta, **dq_config.kwargs())
    return dq, dk, dv


_STRIDES = ("stride_qb stride_qh stride_qm stride_kb stride_kh stride_kn stride_vb stride_vh stride_vn "
            "stride_dob stride_doh stride_dom")


def variant_suffix(dtype: str, even: bool, causal: bool, aligned: bool = True) -> str:
    """The tail of a variant name: dtype, then ",ragged", ",noncausal", ",unaligned" where they apply."""
    return f"{dtype}{'' if even else ',ragged'}{'' if causal else ',noncausal'}{'' if aligned else ',unaligned'}"


class VariantForm(NamedTuple):
    """One compiled form of a config: head dim, dtype, evenness, causality, input alignment, targets."""

    cfg: TunedConfig
    d: int
    dtype: str
    even: bool
    causal: bool
    aligned: bool
    archs: tuple[int, ...]

    @property
    def suffix(self) -> str:
        return variant_suffix(self.dtype, self.even, self.causal, self.aligned)

    def divisible(self, signature: dict[str, str], outputs: str) -> tuple[str, ...]:
        """What Triton's launcher marks divisible by 16 in this form. Aligned: every pointer and stride,
        plus TQ, TK and D when the shape is even (T a multiple of 128, D = BLOCK_D). Unaligned (odd views,
        D not a multiple of 16): only the freshly allocated ``outputs``."""
        if not self.aligned:
            return tuple(k for k in outputs.split() if k in signature)
        out = [k for k, t in signature.items() if t.startswith("*") or k.startswith("stride_")]
        return tuple(out + (["TQ", "TK", "D"] if self.even else []))

    def tags(self, kernel: str, signature: dict[str, str], outputs: str) -> dict:
        return {"kernel": kernel, "D": self.d, "dtype": self.dtype, "even": self.even, "causal": self.causal,
                "aligned": self.aligned, "block_m": self.cfg.block_m,
                "divisible_by_16": self.divisible(signature, outputs)}


def variant_choices(tables: ConfigTables):
    """The forms to compile: every form that can run, i.e. aligned inputs causal and non-causal, fp16 and
    fp32 at each BLOCK_D (16, 32, 64, 128), even and ragged (EVEN_* = False: masked loads), where the
    tables ship it, bf16 once (its code is fp16's); unaligned inputs in the masked form only (the EVEN_*
    heuristics never pick the unmasked one for them)."""
    for aligned, configs in ((True, tables.aligned), (False, tables.unaligned)):
        for causal in (True, False):
            for i, cfg in enumerate(configs):
                evens = (True, False) if aligned else (False,)
                picks = [(dtype, d, even) for dtype in ("fp16", "fp32") for d in (16, 32, 64, 128)
                         for even in evens] + [("bf16", 64, True)] * (i == 0 and aligned)
                for dtype, d, even in picks:
                    archs = cfg.archs_for(d, dtype == "fp32", not even, causal)
                    if archs:
                        yield VariantForm(cfg, d, dtype, even, causal, aligned, archs)


def bwd_variants() -> list[KernelVariant]:
    """Every shipped dK/dV and dQ config x representative head dim / dtype / evenness / causality, plus
    preprocess."""
    out = []
    unit = dict(stride_qd=1, stride_kd=1, stride_vd=1, stride_dod=1)
    kernels = (("dkdv", _attn_bwd_dkdv_kernel, DKDV_TABLES, "Q K V DO LSE DELTA DK DV", ("EVEN_N",)),
               ("dq", _attn_bwd_dq_kernel, DQ_TABLES, "Q K V DO LSE DELTA DQ", ()))
    for name, fn, tables, ptrs, extra in kernels:
        for form in variant_choices(tables):
            cfg, d, dtype = form.cfg, form.d, form.dtype
            sig = signature(*((p, "*fp32" if p in ("LSE", "DELTA") else "*" + dtype) for p in ptrs.split()),
                            (_STRIDES, "i32"), ("H TQ TK D", "i32"), ("sm_scale qk_scale", "fp32"),
                            ("TQ_BUCKET TK_BUCKET ALIGN", "i32"))
            evens = {e: form.even for e in ("EVEN_M", "EVEN_D", *extra)}
            consts = dict(unit, CAUSAL=form.causal, BLOCK_D=d, **evens, **cfg.kwargs())
            out.append(KernelVariant(
                name=f"attention_bwd_{name}[D={d},BM={cfg.block_m},BN={cfg.block_n},"
                     f"w={cfg.num_warps},s={cfg.num_stages},{form.suffix}]",
                fn=fn, signature=sig, constexprs=consts, num_warps=cfg.num_warps,
                num_stages=cfg.num_stages, archs=form.archs, expect_mma=dtype != "fp32",
                tags=form.tags(name, sig, "LSE DELTA DK DV DQ"),
            ))
    for d in (64, 128):
        sig = signature(("O DO", "*fp16"), ("DELTA", "*fp32"),
                        ("stride_ob stride_oh stride_om stride_dob stride_doh stride_dom H TQ D", "i32"))
        out.append(KernelVariant(
            name=f"attention_bwd_preprocess[D={d},BM={_PRE_BLOCK_M},fp16]", fn=_bwd_preprocess_kernel,
            signature=sig, constexprs=dict(stride_od=1, stride_dod=1, BLOCK_M=_PRE_BLOCK_M, BLOCK_D=d),
            num_warps=4, num_stages=2, archs=(80, 90), expect_mma=False,
            tags={"kernel": "preprocess", "D": d, "dtype": "fp16", "even": True, "causal": None},
        ))
    return out
