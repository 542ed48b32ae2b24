"""FlashAttention-2 forward through TMA tensor descriptors (Hopper sm_90a, Blackwell sm_100a).

Same algorithm and semantics as ``_attn_fwd_kernel`` in flash_attention.py (online softmax in exp2
units, end-aligned causal mask, two-stage key loop, fp32 LSE in natural log); only the memory path
differs. q, k, v and the output go through host ``TensorDescriptor``s built once per launch: 4-D
descriptors over the (B, H, T, D) tensors with boxes [1, 1, BLOCK, BLOCK_D]. The hardware bounds each
copy per (batch, head) slice, so rows past T and columns past D load as zeros and stores past them are
dropped: the kernel has no load or store masks at all, and views whose strides are 16-byte multiples
(e.g. a packed qkv projection permuted to (B, H, T, D)) need no copy. The score mask is applied only
in the diagonal / ragged-tail stage of the key loop, as in the pointer kernel (keys past Tk load as
zeros there, so their scores are 0, not -inf, until the mask sets them).

Scope: fp16 and bf16 only. fp32 inputs take the pointer path: its dots are pinned to IEEE fp32, which
runs on FMA units (wgmma/tcgen05 have no IEEE fp32 form), so the kernel is compute-bound on FMAs and
TMA copies buy nothing, while the 64/128-row tiles TMA and wgmma want spill in fp32 (the pointer table
ships only 32x32 and 16x16 fp32 tiles). Needs Triton >= 3.4 (host descriptors) and a device with TMA
and a checked config table (sm_90, sm_100); ``flash_attention.attention_fwd_launch`` chooses the path.

Warp specialization: where this Triton's compiler supports it on the device (Triton >= 3.9 on sm_100),
both stages of the key loop run as ``tl.range(..., warp_specialize=True)`` (``WARP_SPEC``). On sm_90a
Triton 3.9 fails to compile it with 4 warps and emits the same code with 8, so Hopper gets the plain
software-pipelined loop. Warp-specializing only the unmasked stage crashes Triton 3.9's compiler
(TritonGPUHoistTMEMAlloc assertion, sm_100a), hence both stages.

The online-softmax update and the score mask are the pointer kernel's too (``online_softmax.py``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import tma
from .attention_config import TunedConfig, tune_bucket
from .device_functions import head_program
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, signature, tensordesc
from .launch import DTYPE_NAMES
from .online_softmax import finish_rows, key_range, mask_scores, softmax_step
from .validate import device_guard
from .versions import triton_version

WARP_SPEC_MIN_TRITON = (3, 9)  # checked by compiling for sm_100a; older releases not checked
WARP_SPEC_MAJOR = 10  # Blackwell datacenter parts (sm_100a): tcgen05 + TMA warp specialization


@triton.jit
def _key_block(
    acc, l_i, m_i, q,  # (BLOCK_M, BLOCK_D) fp32, (BLOCK_M,), (BLOCK_M,), (BLOCK_M, BLOCK_D)
    desc_k, desc_v, b, h, start_n, offs_m, offs_n, TK, OFF, qk_scale,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
):
    k = desc_k.load([b, h, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
    v = desc_v.load([b, h, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
    s = tl.dot(q, tl.trans(k)) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
    if MASKED:
        s = mask_scores(s, offs_m, start_n + offs_n, TK, OFF, CAUSAL)
    p, m_i, l_i, acc = softmax_step(s, m_i, l_i, acc, MASKED and CAUSAL)
    acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, l_i, m_i


@triton.jit
def _key_loop(
    acc, l_i, m_i, q, desc_k, desc_v, b, h, offs_m, offs_n, lo, hi, TK, OFF, qk_scale,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
    WARP_SPEC: tl.constexpr,
):
    # Two loops, not one with warp_specialize=WARP_SPEC: the branch not taken is never compiled, so
    # Tritons whose tl.range lacks the keyword still build the plain loop.
    if WARP_SPEC:
        for start_n in tl.range(lo, hi, BLOCK_N, warp_specialize=True):
            acc, l_i, m_i = _key_block(acc, l_i, m_i, q, desc_k, desc_v, b, h, start_n, offs_m, offs_n,
                                       TK, OFF, qk_scale, BLOCK_N, BLOCK_D, MASKED, CAUSAL)
    else:
        for start_n in range(lo, hi, BLOCK_N):
            acc, l_i, m_i = _key_block(acc, l_i, m_i, q, desc_k, desc_v, b, h, start_n, offs_m, offs_n,
                                       TK, OFF, qk_scale, BLOCK_N, BLOCK_D, MASKED, CAUSAL)
    return acc, l_i, m_i


# The integer arguments stay unspecialised, so one compiled form per config serves every shape: with
# TQ, TK marked divisible by 16, sm_100a's warp-specialized non-causal D=64 kernels spill 8 B (every tile),
# and on sm_90a the marks change nothing (registers within 1, same SASS families). Alignment needs no
# marks: the descriptors carry it (16-byte bases and strides are required to take this path at all).
@triton.jit(do_not_specialize=["H", "TQ", "TK", "TQ_BUCKET", "TK_BUCKET", "T_EVEN"])
def _attn_fwd_tma_kernel(
    desc_q,  # (B, H, TQ, D), box [1, 1, BLOCK_M, BLOCK_D]
    desc_k,  # (B, H, TK, D), box [1, 1, BLOCK_N, BLOCK_D]
    desc_v,  # (B, H, TK, D), box [1, 1, BLOCK_N, BLOCK_D]
    desc_o,  # (B, H, TQ, D), box [1, 1, BLOCK_M, BLOCK_D]
    LSE,  # (B, H, TQ) fp32, contiguous
    H, TQ, TK,
    qk_scale,  # sm_scale * log2(e)
    TQ_BUCKET, TK_BUCKET, T_EVEN,  # autotune keys only (tune_bucket of TQ, TK; seq_align_bucket)
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    WARP_SPEC: tl.constexpr,
    DTYPE: tl.constexpr,  # autotune key only: the autotuner sees no dtype on a descriptor
):
    # (batch * head, query block), query block minor
    pid_m, pid_bh, b, h = head_program((TQ + BLOCK_M - 1) // BLOCK_M, H, False)
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    q = desc_q.load([b, h, m0, 0]).reshape(BLOCK_M, BLOCK_D)  # rows past TQ, columns past D: zeros

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    OFF = TK - TQ  # end-aligned causal mask: row i sees cols <= i + OFF
    hi_full, hi = key_range(m0, TQ, TK, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _key_loop(acc, l_i, m_i, q, desc_k, desc_v, b, h, offs_m, offs_n, 0, hi_full, TK, OFF,
                              qk_scale, BLOCK_N, BLOCK_D, False, CAUSAL, WARP_SPEC)
    acc, l_i, m_i = _key_loop(acc, l_i, m_i, q, desc_k, desc_v, b, h, offs_m, offs_n, hi_full, hi, TK, OFF,
                              qk_scale, BLOCK_N, BLOCK_D, True, CAUSAL, WARP_SPEC)

    out, lse = finish_rows(acc, l_i, m_i)
    desc_o.store([b, h, m0, 0], out.to(desc_o.dtype).reshape(1, 1, BLOCK_M, BLOCK_D))  # clipped to TQ, D
    tl.store(LSE + pid_bh.to(tl.int64) * TQ + offs_m, lse, mask=offs_m < TQ)


# TMA forward configs (BLOCK_M, BLOCK_N, warps, stages) with the largest BLOCK_D each ships for, per target:
# 90 = sm_90a (software-pipelined loop), 100 = sm_100a (warp-specialized loop). Every shipped form (D 64 and
# 128, causal and not; one form serves every T) compiles on Triton 3.9 with 0 spills, wgmma (sm_90a) or
# tcgen05 (sm_100a), UTMALDG loads and a UTMASTG store, shared memory <= 232448 B (tma_fwd_variants).
# Comments: registers / shared KB, causal fp16, "D=128 | D=64" (non-causal within 1 register, or fewer).
# Left out: 4 warps on 128-row tiles at D=128 (255 registers + 16-552 B stack on sm_90a); on sm_100a 4-warp
# tiles at D=128 and 64-row ones at D=64 (8-344 B stack) and 128x128 at D=128 (8 B stack); 128x128 s4 and
# 64x128 s4 at D=128 (shared memory over the limit). 8 warps on a 64-row tile split N across warpgroups.
def _cfg(block_m: int, block_n: int, warps: int, stages: int, max_d: dict[int, int]) -> TunedConfig:
    # BLOCK_D 16 and 32 are not compiled or checked: D <= 32 takes the pointer path (min_d).
    return TunedConfig(block_m, block_n, warps, stages, max_d=max_d, min_d=dict.fromkeys(max_d, 64))


_TMA_FWD_CONFIGS: list[TunedConfig] = [
    _cfg(128, 128, 8, 3, {90: 128, 100: 64}),  # sm_90a 190/225 | 159/113; sm_100a 128/115 (issue 15's pick)
    _cfg(128, 128, 8, 4, {90: 64, 100: 64}),  # sm_90a 159/145; sm_100a 128/147
    _cfg(128, 64, 8, 3, {90: 128, 100: 128}),  # sm_90a 159/129 | 109/65; sm_100a 96/131 | 128/67
    _cfg(128, 64, 8, 4, {90: 128, 100: 128}),  # sm_90a 159/161 | 109/81; sm_100a 96/163 | 128/83
    _cfg(128, 64, 8, 6, {90: 128, 100: 128}),  # sm_90a 159/225 | 110/113; sm_100a 96/227 | 128/115
    _cfg(128, 64, 4, 3, {90: 64, 100: 64}),  # sm_90a 191/65; sm_100a 168/67
    _cfg(128, 32, 8, 4, {90: 128, 100: 128}),  # sm_90a 117/96 | 82/48; sm_100a 96/98 | 128/50
    _cfg(64, 128, 8, 3, {90: 128, 100: 128}),  # sm_90a 161/209 | 143/105; sm_100a 128/210 | 128/106
    _cfg(64, 64, 4, 3, {90: 128}),  # sm_90a 141/113 | 109/57
    _cfg(64, 64, 8, 4, {100: 128}),  # sm_100a 128/146 | 128/74
]
_TMA_INTERPRET = TunedConfig(64, 32, 4, 1)  # under the interpreter: one config, BM != BN on purpose
_TARGETS = {9: 90, 10: 100}  # compute-capability major -> config-table key
# The autotune key: T buckets and the alignment bucket (seq_align_bucket: the prune's raggedness class);
# DTYPE because the autotuner sees no dtype on a descriptor. D is left out: the kernel never reads it.
TMA_AUTOTUNE_KEY = ["TQ_BUCKET", "TK_BUCKET", "T_EVEN", "BLOCK_D", "CAUSAL", "DTYPE"]


def seq_align_bucket(tq: int, tk: int) -> int:
    """1 when TQ and TK are both multiples of 128, the largest tile (no ragged tail for any config),
    else 0: the class the prune judges raggedness by, so shapes sharing a key prune alike."""
    return int(tq % 128 == 0 and tk % 128 == 0)


def tma_target(capability: tuple[int, int] | None) -> int | None:
    """The config-table key of a device (90 for sm_90, 100 for sm_100/sm_103), None without a table."""
    return None if capability is None else _TARGETS.get(capability[0])


def use_warp_specialize(capability: tuple[int, int] | None, version: tuple[int, int] | None = None) -> bool:
    """True where the key loop is warp-specialized: Blackwell (sm_100) with a Triton checked to compile it."""
    return (capability is not None and capability[0] == WARP_SPEC_MAJOR
            and (version or triton_version()) >= WARP_SPEC_MIN_TRITON)


def _boxes(nargs: dict) -> None:
    # Autotune pre-hook: each config reads its own tile shape, so the descriptors' boxes follow it.
    bd = nargs["BLOCK_D"]
    for name, rows in (("desc_q", "BLOCK_M"), ("desc_o", "BLOCK_M"), ("desc_k", "BLOCK_N"), ("desc_v", "BLOCK_N")):
        nargs[name].block_shape = [1, 1, nargs[rows], bd]


def _shipped(target: int | None, block_d: int, ragged: bool, causal: bool) -> set[tuple[int, int, int, int]]:
    return {(t.block_m, t.block_n, t.num_warps, t.num_stages) for t in _TMA_FWD_CONFIGS
            if target in t.archs_for(block_d, False, ragged, causal)}


def _prune(configs: list[triton.Config], nargs: dict, kw: dict) -> list[triton.Config]:
    """Autotune prune: the configs the table ships for this device's target, BLOCK_D, causality and
    raggedness (judged at 128, the largest tile, so every shape sharing an autotune key prunes alike)."""
    cap = tma.device_capability(nargs["desc_q"].base.device)
    ragged = not seq_align_bucket(nargs["TQ"], nargs["TK"])
    keep = _shipped(tma_target(cap), kw["BLOCK_D"], ragged, bool(kw["CAUSAL"]))
    return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in keep]


_attn_fwd_tma_tuned = triton.autotune(
    configs=[triton.Config(c.kwargs(), num_warps=c.num_warps, num_stages=c.num_stages, pre_hook=_boxes)
             for c in _TMA_FWD_CONFIGS],
    key=TMA_AUTOTUNE_KEY,
    prune_configs_by={"early_config_prune": lambda configs, nargs, **kw: _prune(configs, nargs, kw)},
)(_attn_fwd_tma_kernel)

TMA_DTYPES = (torch.float16, torch.bfloat16)  # fp32's IEEE dots stay on the pointer path


def fwd_unfit_reason(q: torch.Tensor, capability: tuple[int, int] | None, block_d: int, ragged: bool,
                     causal: bool, config: TunedConfig | None) -> str | None:
    """Why this launch cannot take the TMA path apart from the tensors' layout (None if it can)."""
    if q.dtype not in TMA_DTYPES:
        return f"dtype {q.dtype} (fp16/bf16 only: fp32's IEEE dots run on the pointer path)"
    if not tma.descriptors_available():
        return f"Triton {'.'.join(map(str, triton_version()))} has no tensor descriptors (needs 3.4)"
    if capability is None:  # the interpreter: every layout rule is still checked
        return None
    target = tma_target(capability)
    if capability[0] < tma.MIN_CAPABILITY or target is None:
        return f"sm_{capability[0]}{capability[1]} has no checked TMA config table (sm_90, sm_100)"
    if config is None and not _shipped(target, block_d, ragged, causal):
        return f"no TMA config ships for BLOCK_D={block_d} on sm_{target} (D <= 32 takes the pointer path)"
    return None


def fwd_path(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, causal: bool, block_d: int,
             path: str | None, config: TunedConfig | None = None) -> str:
    """The forward's memory path: ``path`` ("pointer", "tma") checked, or None to choose per launch.

    None picks TMA where this Triton and device have it, q is fp16/bf16 and q, k, v and the output all
    meet TMA's layout rules (tma.choose_path), else the pointer path; the interpreter (no capability)
    and a forced ``config`` (callers pick those from the pointer tables) get the pointer path. A forced
    "tma" that cannot run raises ValueError naming the rule."""
    path = tma.check_path("path", path)
    if path == tma.POINTER or (path is None and config is not None):
        return tma.POINTER
    cap = tma.device_capability(q.device)
    ragged = not seq_align_bucket(q.shape[2], k.shape[2])
    why = fwd_unfit_reason(q, cap, block_d, ragged, causal, config)
    bm, bn = (config.block_m, config.block_n) if config is not None else (128, 128)
    boxes = [(q, [1, 1, bm, block_d]), (k, [1, 1, bn, block_d]), (v, [1, 1, bn, block_d]),
             (out, [1, 1, bm, block_d])]
    if path is None:
        return tma.choose_path(boxes, capability=cap) if why is None else tma.POINTER
    if why is None:
        names = ("q", "k", "v", "the output (contiguous (B, H, Tq, D))")
        why = next((f"{n}: {r}" for n, (t, box) in zip(names, boxes, strict=True) if (r := tma.tma_unfit(t, box))),
                   None)
    if why is not None:
        raise ValueError(f"path='tma' cannot run: {why}")
    return path


def attention_fwd_tma_launch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    causal: bool, qk_scale: float, block_d: int, config: TunedConfig | None = None,
) -> None:
    """Write attention of q, k, v into ``out`` and its row LSE into ``lse`` through TMA descriptors.

    Inputs are validated, non-empty and TMA-fit (``fwd_path``); ``qk_scale`` is sm_scale * log2(e).
    ``config`` forces the blocks; None autotunes on a GPU (one fixed config under the interpreter)."""
    B, H, Tq, _ = q.shape
    Tk = k.shape[2]
    if config is None and interpreter_enabled():
        config = _TMA_INTERPRET
    bm, bn = (config.block_m, config.block_n) if config is not None else (128, 128)  # the pre-hook resets these
    descs = [tma.make_descriptor(t, [1, 1, rows, block_d]) for t, rows in ((q, bm), (k, bn), (v, bn), (out, bm))]
    args = (*descs, lse, H, Tq, Tk, qk_scale, tune_bucket(Tq), tune_bucket(Tk), seq_align_bucket(Tq, Tk))
    meta = {"CAUSAL": causal, "BLOCK_D": block_d, "DTYPE": DTYPE_NAMES[q.dtype],
            "WARP_SPEC": use_warp_specialize(tma.device_capability(q.device))}
    with device_guard(q):
        if config is None:
            _attn_fwd_tma_tuned[lambda m: (B * H * triton.cdiv(Tq, m["BLOCK_M"]),)](*args, **meta)
        else:
            _attn_fwd_tma_kernel[(B * H * triton.cdiv(Tq, bm),)](
                *args, **meta, **config.kwargs(), num_warps=config.num_warps, num_stages=config.num_stages)


def _variant(cfg: TunedConfig, d: int, dtype: str, causal: bool, ws: bool, archs: tuple[int, ...]) -> KernelVariant:
    sig = signature(*((f"desc_{n}", tensordesc(dtype, (1, 1, cfg.block_m if n in "qo" else cfg.block_n, d)))
                      for n in "qkvo"),
                    ("LSE", "*fp32"), ("H TQ TK", "i32"), ("qk_scale", "fp32"), ("TQ_BUCKET TK_BUCKET T_EVEN", "i32"))
    consts = dict(CAUSAL=causal, BLOCK_D=d, WARP_SPEC=ws, DTYPE=dtype, **cfg.kwargs())
    return KernelVariant(
        name=f"attention_fwd_tma[D={d},BM={cfg.block_m},BN={cfg.block_n},w={cfg.num_warps},s={cfg.num_stages},"
             f"{dtype}{'' if causal else ',noncausal'}{',ws' if ws else ''}]",
        fn=_attn_fwd_tma_kernel, signature=sig, constexprs=consts, num_warps=cfg.num_warps,
        num_stages=cfg.num_stages, archs=archs, expect_mma=True, expect_tma=True,
        # even None: one form serves even and ragged T. Only LSE (a fresh buffer) is marked: the integers are
        # do_not_specialize and descriptors carry no divisibility (the launcher keys them on the block type).
        tags={"kernel": "fwd_tma", "D": d, "dtype": dtype, "even": None, "causal": causal,
              "block_m": cfg.block_m, "warp_specialize": ws, "divisible_by_16": ["LSE"]},
    )


def tma_fwd_variants() -> list[KernelVariant]:
    """Every shipped TMA config x D (64, 128) x causal / non-causal, fp16 (bf16 once), for the targets its
    table ships it on (for even or ragged T: both run this one form); split per target where warp
    specialization differs (sm_100a). None on a Triton without tensor descriptors."""
    if not tma.descriptors_available():
        return []
    out = []
    for i, cfg in enumerate(_TMA_FWD_CONFIGS):
        for d, causal in ((d, c) for d in (64, 128) for c in (True, False)):
            by_ws: dict[bool, list[int]] = {}
            for cc in sorted(set(cfg.archs_for(d, False, False, causal) + cfg.archs_for(d, False, True, causal))):
                by_ws.setdefault(use_warp_specialize((cc // 10, 0)), []).append(cc)
            for dtype in ("fp16", "bf16") if (i, d, causal) == (0, 64, True) else ("fp16",):
                out += [_variant(cfg, d, dtype, causal, ws, tuple(archs)) for ws, archs in by_ws.items()]
    return out
