"""FlashAttention-2 backward through TMA tensor descriptors (Hopper sm_90a, Blackwell sm_100a).

Same algorithm and semantics as the pointer kernels in flash_attention_bwd.py (deterministic, no
atomics; a dK/dV kernel that owns BLOCK_N keys and streams the query blocks that see them, in the
transposed frame; a dQ kernel that owns BLOCK_M queries and streams key blocks; end-aligned causal
mask); only the memory path differs. q, k, v, dO and the gradients dq, dk, dv go through host
``TensorDescriptor``s built once per launch: 4-D descriptors over the (B, H, T, D) tensors with boxes
[1, 1, BLOCK, BLOCK_D]. The hardware bounds each copy per (batch, head) slice, so rows past T and
columns past D load as zeros and stores past them are dropped. LSE and delta ((B, H, TQ) fp32,
contiguous) are read with masked pointer loads: rows past TQ get lse = +inf, so their probabilities are
exp2(s - inf) = 0. Keys past TK load as zeros, whose probability exp(-lse) is not zero, so they are
masked in dQ's diagonal / ragged tail stage, where a row sums over keys. dK/dV needs no key mask: in
its transposed frame a key's probabilities feed only that key's own dk, dv rows, which the clipped
stores drop (the pointer kernel masks them anyway; here that would cost a select per score in every
non-causal block, since one compiled form serves every T).

The preprocess kernel (delta = rowsum(dO * O)) is the pointer one, run by ``attention_bwd_launch``.
Scope: fp16 and bf16 (fp32 stays on the pointer path, see flash_attention_tma.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import launch, tma
from .attention_config import TunedConfig, tune_bucket
from .device_functions import head_program
from .flash_attention_tma import TMA_AUTOTUNE_KEY, fwd_unfit_reason, seq_align_bucket, tma_target
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, signature, tensordesc
from .launch import DTYPE_NAMES, LOG2E
from .online_softmax import key_range, query_range
from .validate import device_guard


@triton.jit
def _dkdv_tma_inner(
    dk, dv, k, v,  # (BLOCK_N, BLOCK_D): fp32 accumulators, storage-dtype tiles
    desc_q, desc_do, LSE, DELTA,  # LSE, DELTA: this (batch, head)'s rows
    b, h, offs_n, offs_m, lo, hi, TQ, OFF, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, MASKED: tl.constexpr,
):
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m
        q = desc_q.load([b, h, start_m, 0]).reshape(BLOCK_M, BLOCK_D)  # rows past TQ: zeros
        do = desc_do.load([b, h, start_m, 0]).reshape(BLOCK_M, BLOCK_D)
        # lse = +inf past the end: p = exp2(s - inf) = 0 for those rows whatever s is.
        lse = tl.load(LSE + rows, mask=rows < TQ, other=float("inf"))
        delta = tl.load(DELTA + rows, mask=rows < TQ, other=0.0)
        s_t = tl.dot(k, tl.trans(q))  # (BLOCK_N, BLOCK_M)
        p_t = tl.exp2(s_t * qk_scale - (lse * 1.4426950408889634)[None, :])
        if MASKED:  # causal diagonal (it hides keys past TK from every real row too)
            p_t = tl.where(rows[None, :] + OFF >= offs_n[:, None], p_t, 0.0)
        dv = tl.dot(p_t.to(do.dtype), do, dv)
        dp_t = tl.dot(v, tl.trans(do))
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(q.dtype), q, dk)
    return dk, dv


# Integers stay unspecialised (one compiled form per config serves every shape, as in the TMA forward);
# the descriptors carry the alignment.
@triton.jit(do_not_specialize=["H", "TQ", "TK", "TQ_BUCKET", "TK_BUCKET", "T_EVEN"])
def _attn_bwd_dkdv_tma_kernel(
    desc_q,  # (B, H, TQ, D), box [1, 1, BLOCK_M, BLOCK_D]
    desc_k,  # (B, H, TK, D), box [1, 1, BLOCK_N, BLOCK_D]
    desc_v,  # (B, H, TK, D), box [1, 1, BLOCK_N, BLOCK_D]
    desc_do,  # (B, H, TQ, D), box [1, 1, BLOCK_M, BLOCK_D]
    desc_dk,  # (B, H, TK, D), box [1, 1, BLOCK_N, BLOCK_D]
    desc_dv,  # (B, H, TK, D), box [1, 1, BLOCK_N, BLOCK_D]
    LSE,  # (B, H, TQ) fp32, contiguous
    DELTA,  # (B, H, TQ) fp32, contiguous
    H, TQ, TK,
    sm_scale, qk_scale,  # qk_scale = sm_scale * log2(e)
    TQ_BUCKET, TK_BUCKET, T_EVEN,  # autotune keys only
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DTYPE: tl.constexpr,  # autotune key only: the autotuner sees no dtype on a descriptor
):
    # (batch * head, key block), key block minor
    pid_n, pid_bh, b, h = head_program((TK + BLOCK_N - 1) // BLOCK_N, H, False)
    LSE += pid_bh.to(tl.int64) * TQ
    DELTA += pid_bh.to(tl.int64) * TQ

    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    k = desc_k.load([b, h, n0, 0]).reshape(BLOCK_N, BLOCK_D)  # keys past TK, columns past D: zeros
    v = desc_v.load([b, h, n0, 0]).reshape(BLOCK_N, BLOCK_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    OFF = TK - TQ  # row i sees keys j <= i + OFF
    if CAUSAL:
        lo, mid = query_range(n0, TQ, TK, BLOCK_M, BLOCK_N)  # [lo, mid): the diagonal's query rows
        dk, dv = _dkdv_tma_inner(dk, dv, k, v, desc_q, desc_do, LSE, DELTA, b, h, offs_n, offs_m,
                                 lo, mid, TQ, OFF, qk_scale, BLOCK_M, BLOCK_D, True)
        full_lo = mid
    else:
        full_lo = 0
    dk, dv = _dkdv_tma_inner(dk, dv, k, v, desc_q, desc_do, LSE, DELTA, b, h, offs_n, offs_m,
                             full_lo, TQ, TQ, OFF, qk_scale, BLOCK_M, BLOCK_D, False)

    dk = dk * sm_scale
    desc_dk.store([b, h, n0, 0], dk.to(desc_dk.dtype).reshape(1, 1, BLOCK_N, BLOCK_D))  # clipped to TK, D
    desc_dv.store([b, h, n0, 0], dv.to(desc_dv.dtype).reshape(1, 1, BLOCK_N, BLOCK_D))


@triton.jit
def _dq_tma_inner(
    dq, q, do, lse2, delta,  # (BLOCK_M, BLOCK_D) fp32 acc, tiles; (BLOCK_M,) log2-domain lse, delta
    desc_k, desc_v, b, h, offs_m, offs_n, lo, hi, TK, OFF, qk_scale,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k = desc_k.load([b, h, start_n, 0]).reshape(BLOCK_N, BLOCK_D)  # keys past TK: zeros
        v = desc_v.load([b, h, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
        s = tl.dot(q, tl.trans(k))  # (BLOCK_M, BLOCK_N)
        p = tl.exp2(s * qk_scale - lse2[:, None])
        if MASKED:  # zero keys past TK (p = exp(-lse) there) and, if causal, past the diagonal
            if CAUSAL:
                p = tl.where(cols[None, :] <= offs_m[:, None] + OFF, p, 0.0)
            else:
                p = tl.where(cols[None, :] < TK, p, 0.0)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq)
    return dq


@triton.jit(do_not_specialize=["H", "TQ", "TK", "TQ_BUCKET", "TK_BUCKET", "T_EVEN"])
def _attn_bwd_dq_tma_kernel(
    desc_q,  # (B, H, TQ, D), box [1, 1, BLOCK_M, BLOCK_D]
    desc_k,  # (B, H, TK, D), box [1, 1, BLOCK_N, BLOCK_D]
    desc_v,  # (B, H, TK, D), box [1, 1, BLOCK_N, BLOCK_D]
    desc_do,  # (B, H, TQ, D), box [1, 1, BLOCK_M, BLOCK_D]
    desc_dq,  # (B, H, TQ, D), box [1, 1, BLOCK_M, BLOCK_D]
    LSE,  # (B, H, TQ) fp32, contiguous
    DELTA,  # (B, H, TQ) fp32, contiguous
    H, TQ, TK,
    sm_scale, qk_scale,
    TQ_BUCKET, TK_BUCKET, T_EVEN,  # autotune keys only
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DTYPE: tl.constexpr,  # autotune key only
):
    # (batch * head, row block), row block minor
    pid_m, pid_bh, b, h = head_program((TQ + BLOCK_M - 1) // BLOCK_M, H, False)
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    q = desc_q.load([b, h, m0, 0]).reshape(BLOCK_M, BLOCK_D)
    do = desc_do.load([b, h, m0, 0]).reshape(BLOCK_M, BLOCK_D)
    rows = pid_bh.to(tl.int64) * TQ + offs_m
    # lse = +inf past the end: p = 0 for those rows (see the module docstring).
    lse2 = tl.load(LSE + rows, mask=offs_m < TQ, other=float("inf")) * 1.4426950408889634
    delta = tl.load(DELTA + rows, mask=offs_m < TQ, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    OFF = TK - TQ
    hi_full, hi = key_range(m0, TQ, TK, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _dq_tma_inner(dq, q, do, lse2, delta, desc_k, desc_v, b, h, offs_m, offs_n, 0, hi_full, TK, OFF,
                       qk_scale, BLOCK_N, BLOCK_D, False, CAUSAL)
    dq = _dq_tma_inner(dq, q, do, lse2, delta, desc_k, desc_v, b, h, offs_m, offs_n, hi_full, hi, TK, OFF,
                       qk_scale, BLOCK_N, BLOCK_D, True, CAUSAL)
    dq = dq * sm_scale
    desc_dq.store([b, h, m0, 0], dq.to(desc_dq.dtype).reshape(1, 1, BLOCK_M, BLOCK_D))  # clipped to TQ, D


# TMA backward configs (BLOCK_M, BLOCK_N, warps, stages) with the largest BLOCK_D each ships for, per target
# (90 = sm_90a, 100 = sm_100a). dK/dV: BLOCK_N keys owned, BLOCK_M queries streamed; dQ: BLOCK_M queries
# owned, BLOCK_N keys streamed. Every shipped form (D 64 and 128, causal and not; one form serves every T)
# compiles on Triton 3.9 with 0 spills, wgmma (sm_90a) / tcgen05 (sm_100a), UTMALDG loads, shared memory
# <= 232448 B (tma_bwd_variants). Comments: registers / shared KB, causal fp16, "D=128 | D=64" (non-causal
# within 2 registers, or fewer). Left out: dK/dV 64x128 causal at D=128 on sm_90a (255 regs + 24 B stack),
# dK/dV 128x64 on sm_90a (255 regs + 104-464 B stack; only non-causal D=64 is clean).
def _cfg(block_m: int, block_n: int, warps: int, stages: int, max_d: dict[int, int],
         full_max_d: dict[int, int] | None = None) -> TunedConfig:
    # BLOCK_D 16 and 32 are not compiled or checked: D <= 32 takes the pointer path (min_d). One form serves
    # even and ragged T, so the ragged limits are the even ones.
    return TunedConfig(block_m, block_n, warps, stages, max_d=max_d, full_max_d=full_max_d,
                       full_ragged_max_d=full_max_d, min_d=dict.fromkeys(max_d | (full_max_d or {}), 64))


_BOTH = {90: 128, 100: 128}
_TMA_DKDV_CONFIGS: list[TunedConfig] = [
    _cfg(64, 64, 8, 2, _BOTH),  # sm_90a 225/97 | 173/49; sm_100a 99/129 | 86/65
    _cfg(64, 128, 8, 2, {90: 64, 100: 128}, _BOTH),  # sm_90a nc 242/129 | 200/65; sm_100a 167/161 | 148/81
    _cfg(128, 64, 8, 2, {100: 128}),  # sm_100a 167/226 | 156/114
]
_TMA_DQ_CONFIGS: list[TunedConfig] = [
    _cfg(64, 64, 8, 2, _BOTH),  # sm_90a 150/97 | 108/49; sm_100a 64/113 | 48/57
    _cfg(64, 64, 4, 2, _BOTH),  # sm_90a 154/97 | 122/49; sm_100a 88/113 | 84/57
    _cfg(128, 64, 8, 2, _BOTH),  # sm_90a 155/128 | 122/64; sm_100a 92/145 | 78/73
    _cfg(128, 128, 8, 2, _BOTH),  # sm_90a 220/193 | 188/97; sm_100a 161/225 | 151/113
]
_TMA_INTERPRET = TunedConfig(64, 64, 4, 1)  # under the interpreter: one config (descriptor boxes >= 16 B)


def _boxes(owned: str, streamed: str, owned_descs: tuple[str, ...], streamed_descs: tuple[str, ...]):
    """Autotune pre-hook: each config reads its own tile shape, so the descriptors' boxes follow it."""

    def hook(nargs: dict) -> None:
        bd = nargs["BLOCK_D"]
        for names, rows in ((owned_descs, owned), (streamed_descs, streamed)):
            for name in names:
                nargs[name].block_shape = [1, 1, nargs[rows], bd]

    return hook


_DKDV_HOOK = _boxes("BLOCK_N", "BLOCK_M", ("desc_k", "desc_v", "desc_dk", "desc_dv"), ("desc_q", "desc_do"))
_DQ_HOOK = _boxes("BLOCK_M", "BLOCK_N", ("desc_q", "desc_do", "desc_dq"), ("desc_k", "desc_v"))


def _shipped(table: list[TunedConfig], target: int | None, block_d: int, causal: bool) -> set[tuple[int, ...]]:
    return {(t.block_m, t.block_n, t.num_warps, t.num_stages) for t in table
            if target in t.archs_for(block_d, False, False, causal) + t.archs_for(block_d, False, True, causal)}


def _prune(table: list[TunedConfig], configs: list[triton.Config], nargs: dict, kw: dict) -> list[triton.Config]:
    """Autotune prune: the configs the table ships for this device's target, BLOCK_D and causality."""
    target = tma_target(tma.device_capability(nargs["desc_q"].base.device))
    keep = _shipped(table, target, kw["BLOCK_D"], bool(kw["CAUSAL"]))
    return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in keep]


def _tuned(kernel, table: list[TunedConfig], hook):
    return triton.autotune(
        configs=[triton.Config(c.kwargs(), num_warps=c.num_warps, num_stages=c.num_stages, pre_hook=hook)
                 for c in table],
        key=TMA_AUTOTUNE_KEY,
        prune_configs_by={"early_config_prune": lambda configs, nargs, **kw: _prune(table, configs, nargs, kw)},
    )(kernel)


_dkdv_tma_tuned = _tuned(_attn_bwd_dkdv_tma_kernel, _TMA_DKDV_CONFIGS, _DKDV_HOOK)
_dq_tma_tuned = _tuned(_attn_bwd_dq_tma_kernel, _TMA_DQ_CONFIGS, _DQ_HOOK)


def _unfit(q: torch.Tensor, capability: tuple[int, int] | None, block_d: int, causal: bool) -> str | None:
    """Why this backward cannot take the TMA path apart from the tensors' layout (None if it can)."""
    why = fwd_unfit_reason(q, capability, block_d, False, causal, TunedConfig(64, 64, 8, 2))  # dtype, Triton, device
    if why is not None or capability is None:
        return why
    target = tma_target(capability)
    if not (_shipped(_TMA_DKDV_CONFIGS, target, block_d, causal) and _shipped(_TMA_DQ_CONFIGS, target, block_d, causal)):
        return f"no TMA backward config ships for BLOCK_D={block_d} on sm_{target} (D <= 32 takes the pointer path)"
    return None


def bwd_path(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor, causal: bool, block_d: int,
             path: str | None) -> str:
    """The backward's memory path: ``path`` ("pointer", "tma") checked, or None to choose per launch.

    None picks TMA where this Triton and device have it (sm_90, sm_100), q is fp16/bf16, D is a multiple
    of 8 (16-byte rows) with a shipped config (BLOCK_D >= 64) and q, k, v, dO and the gradients meet TMA's
    layout rules; else the pointer path (also on CPU, the interpreter). A forced "tma" that cannot run
    raises ValueError naming the rule."""
    path = tma.check_path("path", path)
    if path == tma.POINTER:
        return tma.POINTER
    cap = tma.device_capability(q.device)
    why = _unfit(q, cap, block_d, causal)
    boxes = [(t, [1, 1, 64, block_d]) for t in (q, k, v, do)]
    if path is None:
        return tma.choose_path(boxes, capability=cap) if why is None and _grads_fit(q) else tma.POINTER
    if why is None:
        names = ("q", "k", "v", "do")
        why = next((f"{n}: {r}" for n, (t, box) in zip(names, boxes, strict=True) if (r := tma.tma_unfit(t, box))),
                   None)
    if why is None and not _grads_fit(q):
        why = (f"the gradients (contiguous (B, H, T, D)): rows of {q.shape[-1] * q.element_size()} B are not "
               "a multiple of 16 bytes (D must be a multiple of 8)")
    if why is not None:
        raise ValueError(f"path='tma' cannot run: {why}")
    return path


def _grads_fit(q: torch.Tensor) -> bool:
    # dq, dk, dv are fresh contiguous (B, H, T, D) tensors: their rows are D elements apart.
    return q.shape[-1] * q.element_size() % 16 == 0


def attention_bwd_tma_launch(
    do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
    delta: torch.Tensor, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor,
    causal: bool, sm_scale: float, compute_dq: bool, compute_dkdv: bool,
) -> None:
    """Write the gradients into ``dq`` (if ``compute_dq``) and ``dk``, ``dv`` (if ``compute_dkdv``) through
    TMA descriptors. Inputs are validated, non-empty and TMA-fit (``bwd_path``), ``delta`` is the
    preprocess kernel's rowsum(dO * O); ``o`` is not read here. Autotuned on a GPU, one fixed config under
    the interpreter."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    block_d = launch.block_d(D)
    config = _TMA_INTERPRET if interpreter_enabled() else None
    bm, bn = (config.block_m, config.block_n) if config is not None else (64, 64)  # the pre-hooks reset these

    def desc(t: torch.Tensor, rows: int):
        return tma.make_descriptor(t, [1, 1, rows, block_d])

    tail = (lse, delta, H, Tq, Tk, sm_scale, sm_scale * LOG2E, tune_bucket(Tq), tune_bucket(Tk),
            seq_align_bucket(Tq, Tk))
    meta = {"CAUSAL": causal, "BLOCK_D": block_d, "DTYPE": DTYPE_NAMES[q.dtype]}
    with device_guard(q):
        if compute_dkdv:
            args = (desc(q, bm), desc(k, bn), desc(v, bn), desc(do, bm), desc(dk, bn), desc(dv, bn), *tail)
            if config is None:
                _dkdv_tma_tuned[lambda m: (B * H * triton.cdiv(Tk, m["BLOCK_N"]),)](*args, **meta)
            else:
                _attn_bwd_dkdv_tma_kernel[(B * H * triton.cdiv(Tk, bn),)](
                    *args, **meta, **config.kwargs(), num_warps=config.num_warps, num_stages=config.num_stages)
        if compute_dq:
            args = (desc(q, bm), desc(k, bn), desc(v, bn), desc(do, bm), desc(dq, bm), *tail)
            if config is None:
                _dq_tma_tuned[lambda m: (B * H * triton.cdiv(Tq, m["BLOCK_M"]),)](*args, **meta)
            else:
                _attn_bwd_dq_tma_kernel[(B * H * triton.cdiv(Tq, bm),)](
                    *args, **meta, **config.kwargs(), num_warps=config.num_warps, num_stages=config.num_stages)


def _variant(kernel: str, cfg: TunedConfig, d: int, dtype: str, causal: bool, archs: tuple[int, ...]) -> KernelVariant:
    if kernel == "dkdv_tma":
        fn, owned, descs = _attn_bwd_dkdv_tma_kernel, ("k", "v", "dk", "dv"), ("q", "k", "v", "do", "dk", "dv")
    else:
        fn, owned, descs = _attn_bwd_dq_tma_kernel, ("q", "do", "dq"), ("q", "k", "v", "do", "dq")
    owned_rows = cfg.block_n if kernel == "dkdv_tma" else cfg.block_m
    streamed_rows = cfg.block_m if kernel == "dkdv_tma" else cfg.block_n
    sig = signature(*((f"desc_{n}", tensordesc(dtype, (1, 1, owned_rows if n in owned else streamed_rows, d)))
                      for n in descs),
                    ("LSE DELTA", "*fp32"), ("H TQ TK", "i32"), ("sm_scale qk_scale", "fp32"),
                    ("TQ_BUCKET TK_BUCKET T_EVEN", "i32"))
    consts = dict(CAUSAL=causal, BLOCK_D=d, DTYPE=dtype, **cfg.kwargs())
    return KernelVariant(
        name=f"attention_bwd_{kernel}[D={d},BM={cfg.block_m},BN={cfg.block_n},w={cfg.num_warps},"
             f"s={cfg.num_stages},{dtype}{'' if causal else ',noncausal'}]",
        fn=fn, signature=sig, constexprs=consts, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        archs=archs, expect_mma=True, expect_tma=True,
        # even None: one form serves even and ragged T. Only LSE and DELTA (fresh fp32 buffers) are marked: the
        # integers are do_not_specialize and descriptors carry no divisibility.
        tags={"kernel": kernel, "D": d, "dtype": dtype, "even": None, "causal": causal,
              "block_m": cfg.block_m, "divisible_by_16": ["LSE", "DELTA"]},
    )


def tma_bwd_variants() -> list[KernelVariant]:
    """Every shipped TMA dK/dV and dQ config x D (64, 128) x causal / non-causal, fp16 (bf16 once per
    kernel), for the targets the tables ship it on. None on a Triton without tensor descriptors."""
    if not tma.descriptors_available():
        return []
    out = []
    for kernel, table in (("dkdv_tma", _TMA_DKDV_CONFIGS), ("dq_tma", _TMA_DQ_CONFIGS)):
        for i, cfg in enumerate(table):
            for d, causal in ((d, c) for d in (64, 128) for c in (True, False)):
                archs = tuple(sorted(set(cfg.archs_for(d, False, False, causal) + cfg.archs_for(d, False, True, causal))))
                if not archs:
                    continue
                for dtype in ("fp16", "bf16") if (i, d, causal) == (0, 64, True) else ("fp16",):
                    out.append(_variant(kernel, cfg, d, dtype, causal, archs))
    return out
