"""Backward kernels of ``linear_cross_entropy``, and the tile configs, launch choices and variant builder the
forward shares.

Both kernels recompute the logit tile they need from x, W (and the bias) and the saved per-row lse, form
the logit gradient in registers (``_grad_tile``; the formula is in ``linear_cross_entropy``'s docstring)
and multiply it straight into the gradient they own, so neither the logits nor their gradient reach
global memory. Every logit tile is (tokens, vocab) = (BLOCK_M, BLOCK_N), so the per-token values (target,
lse, coefficients) live along the tile's rows, where the MMA layout holds few of them per thread:

- ``_lce_bwd_dx_kernel``, grid (row blocks of BLOCK_M, S vocab splits): walks its split's vocab tiles;
  per tile, dl is rounded to the storage dtype once and dx_rows += dl @ W_tile runs in BLOCK_K column
  chunks.
- ``_lce_bwd_dw_kernel``, grid (vocab blocks of BLOCK_N): walks every token tile; per tile it adds the
  column sums of dl to db (registers) and runs dW_rows^T += x_tile^T @ dl in BLOCK_K chunks of C: dl is
  then the MMA's B operand, which stays in shared memory across the chunks (as the A operand of
  dl^T @ x it took registers and spilled in the 128-wide tiles).

A (rows, C) fp32 accumulator does not fit in registers for GPT-sized C (64 x 768 x 4 B = 192 KB), and
splitting C across programs would repeat the full-C logit recompute once per split. So each program
keeps its accumulator in global fp32 memory that it alone owns (its dx rows of its split; its dW rows):
the first tile stores, later tiles load-add-store chunk by chunk. The working set per program is
(rows x C x 4) bytes, so a wave of programs keeps it in L2. No other program touches those rows: no
atomics, deterministic, and re-running a launch (the autotuner's timing runs) gives the same result.
A ``tl.debug_barrier`` before each tile's load-add-store orders it after the previous tile's stores,
which other threads of the program may have made (the store's and the load's layouts need not match).
The chunk loop is not software-pipelined (``num_stages=1``: prefetched chunks would carry two more
(rows, BLOCK_K) offset tiles in registers), so each chunk waits on its L2 read; how much of that the
other programs on the SM hide has not been measured on a GPU. With S > 1 splits the host sums the
(S, N, C) partials; the casts to the storage dtype are host-side.

Cost per backward (N tokens, V vocab, C hidden): 8 N V C FLOPs (two recomputes and two gradient GEMMs),
and the accumulators' read-modify-write: 8 N C bytes per vocab tile for dx and 8 V C per token tile for
dW, served from L2. The dx split count S (at most 4) only fills the GPU when N is small.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl

from .device_functions import softcap as apply_softcap
from .device_functions import tile_dot
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, align_bucket, signature
from .launch import sm_count
from .validate import device_guard, max_offset

# ----------------------------------------------------------------------------- jit helpers


@triton.jit
def _grad_tile(X, W, B, rm, tgt, lse, ga, gb, v0, V, C, stride_xn, stride_wv, softcap, smooth_on, smooth_off,
               HAS_BIAS: tl.constexpr, SOFTCAP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr, EVEN_C: tl.constexpr):
    # The fp32 logit gradient for tokens rm (BLOCK_M) x vocab columns v0 .. v0 + BLOCK_N, recomputed from x and
    # W: dl = p * ga - gb * ((1 - eps) onehot + eps / V), p = exp(l - lse), times 1 - tanh^2 through the
    # soft-cap (tanh = l / cap, from the capped logit, so no second tile stays live); 0 on columns past V.
    # tgt, lse, ga, gb are per token (the tile's rows). Column tests compare an arange with per-row or
    # scalar values, so no per-column index vector is held (in the MMA layout each thread holds a quarter of
    # the columns: a (BLOCK_N,) vector costs BLOCK_N / 4 registers).
    cols = tl.arange(0, BLOCK_N)
    rv = (v0 + cols) % V  # wrapped columns read real W rows; their gradient is zeroed below
    z = tile_dot(X, W, rm, rv, stride_xn, stride_wv, C, BLOCK_M, BLOCK_N, BLOCK_K, EVEN_C)
    if HAS_BIAS:
        z += tl.load(B + rv).to(tl.float32)[None, :]
    if SOFTCAP:
        z = apply_softcap(z, softcap)
    p = tl.exp2((z - lse[:, None]) * 1.4426950408889634)
    hit = cols[None, :] == (tgt - v0)[:, None]  # ignored rows (tgt = -1) never hit
    d = p * ga[:, None] - gb[:, None] * (tl.where(hit, smooth_on, 0.0) + smooth_off)
    if SOFTCAP:
        t = z / softcap
        d = d * (1.0 - t * t)
    return tl.where(cols[None, :] < V - v0, d, 0.0)


# ----------------------------------------------------------------------------- kernels


@triton.jit(do_not_specialize=["ALIGN"])
def _lce_bwd_dx_kernel(
    X, W, B,  # x (N, C), W (V, C), bias (V,) read only when HAS_BIAS
    T, LSE, GA, GB,  # (N,) int32 targets (-1: ignored), fp32 lse and the two gradient coefficients
    DX,  # (S, N, C) fp32, this split's partial dx
    N, V, C,
    N_BUCKET, ALIGN,  # autotune key only (ALIGN: align_bucket, picks the aligned or unaligned configs)
    stride_xn, stride_wv,
    softcap, smooth_on, smooth_off,
    HAS_BIAS: tl.constexpr, SOFTCAP: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_C: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    splits = tl.num_programs(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < N
    rm = offs_m % N  # wrapped rows: real data for the loads; nothing of theirs is stored
    tgt = tl.load(T + rm)
    lse = tl.load(LSE + rm)
    ga = tl.load(GA + rm)
    gb = tl.load(GB + rm)
    n_tiles = tl.cdiv(V, BLOCK_N)
    t_lo = pid_s * n_tiles // splits
    t_hi = (pid_s + 1) * n_tiles // splits  # the launcher keeps S <= n_tiles: no split is empty
    offs_c = tl.arange(0, BLOCK_K)
    offs_v = tl.arange(0, BLOCK_N)
    dx_rows = (pid_s * N + offs_m) * C
    for t in range(t_lo, t_hi):
        v0 = t * BLOCK_N
        d = _grad_tile(X, W, B, rm, tgt, lse, ga, gb, v0, V, C, stride_xn, stride_wv, softcap, smooth_on,
                       smooth_off, HAS_BIAS, SOFTCAP, BLOCK_M, BLOCK_N, BLOCK_K, EVEN_C)
        d = d.to(W.dtype.element_ty)
        # The previous tile's stores (other threads' too) land before this tile's loads.
        tl.debug_barrier()
        # The first tile starts the accumulator (its loads are masked off: 0); the others add to it.
        c_lim = tl.where(t > t_lo, C, 0)
        w_rows = ((v0 + offs_v) % V) * stride_wv
        for k in tl.range(0, tl.cdiv(C, BLOCK_K), num_stages=1):
            cols = k * BLOCK_K + offs_c
            if EVEN_C:
                w = tl.load(W + (w_rows[:, None] + cols[None, :]))
            else:
                w = tl.load(W + (w_rows[:, None] + cols[None, :]), mask=cols[None, :] < C, other=0.0)
            acc_ptrs = DX + (dx_rows[:, None] + cols[None, :])
            acc = tl.load(acc_ptrs, mask=row_ok[:, None] & (cols[None, :] < c_lim), other=0.0)
            acc = tl.dot(d, w, acc=acc)
            tl.store(acc_ptrs, acc, mask=row_ok[:, None] & (cols[None, :] < C))


@triton.jit(do_not_specialize=["ALIGN"])
def _lce_bwd_dw_kernel(
    X, W, B,  # x (N, C), W (V, C), bias (V,) read only when HAS_BIAS
    T, LSE, GA, GB,  # (N,) int32 targets (-1: ignored), fp32 lse and the two gradient coefficients
    DW,  # (V, C) fp32
    DB,  # (V,) fp32, written only when HAS_BIAS
    N, V, C,
    N_BUCKET, ALIGN,  # autotune key only
    stride_xn, stride_wv,
    softcap, smooth_on, smooth_off,
    HAS_BIAS: tl.constexpr, SOFTCAP: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_C: tl.constexpr,
):
    v0 = tl.program_id(0) * BLOCK_N
    offs_v = tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, BLOCK_K)
    db = tl.zeros((BLOCK_N,), tl.float32)
    for t in range(0, tl.cdiv(N, BLOCK_M)):
        offs_m = t * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = offs_m < N
        rm = offs_m % N
        # Wrapped tokens get zero coefficients: their gradient rows are 0.
        tgt = tl.load(T + rm)
        lse = tl.load(LSE + rm)
        ga = tl.where(row_ok, tl.load(GA + rm), 0.0)
        gb = tl.where(row_ok, tl.load(GB + rm), 0.0)
        d = _grad_tile(X, W, B, rm, tgt, lse, ga, gb, v0, V, C, stride_xn, stride_wv, softcap, smooth_on,
                       smooth_off, HAS_BIAS, SOFTCAP, BLOCK_M, BLOCK_N, BLOCK_K, EVEN_C)
        if HAS_BIAS:
            db += tl.sum(d, axis=0)
        d = d.to(X.dtype.element_ty)
        tl.debug_barrier()  # the previous token tile's stores land before this tile's loads
        c_lim = tl.where(t > 0, C, 0)
        x_rows = rm * stride_xn
        # dW^T chunk (BLOCK_K, BLOCK_N) += x_chunk^T @ dl: the gradient tile is the MMA's B operand, which
        # stays in shared memory across the chunks (as the A operand it would take registers).
        for k in tl.range(0, tl.cdiv(C, BLOCK_K), num_stages=1):
            cols = k * BLOCK_K + offs_c
            if EVEN_C:
                xt = tl.load(X + (x_rows[None, :] + cols[:, None]))
            else:
                xt = tl.load(X + (x_rows[None, :] + cols[:, None]), mask=cols[:, None] < C, other=0.0)
            acc_ptrs = DW + ((v0 + offs_v) * C)[None, :] + cols[:, None]
            col_ok = offs_v[None, :] < V - v0
            acc = tl.load(acc_ptrs, mask=col_ok & (cols[:, None] < c_lim), other=0.0)
            acc = tl.dot(xt, d, acc=acc)
            tl.store(acc_ptrs, acc, mask=col_ok & (cols[:, None] < C))
    if HAS_BIAS:
        tl.store(DB + v0 + offs_v, db, mask=offs_v < V - v0)


# ----------------------------------------------------------------------------- configs and launch choices


class TileConfig(NamedTuple):
    """One tile: (b0, b1) = (BLOCK_M, BLOCK_N) for the forward and dx, (BLOCK_N, BLOCK_M) for dW (the kernel's
    own output rows lead), BLOCK_K the C chunk of every dot."""

    b0: int
    b1: int
    bk: int
    num_warps: int
    num_stages: int
    elem_bytes: tuple[int, ...] = (2,)  # element sizes it ships for (2: fp16/bf16, 4: fp32)
    # "aligned": 16-byte aligned bases and rows (C a multiple of 8 in 16-bit), what LM heads give; "unaligned":
    # odd C or views, whose scalar loads need more registers.
    form: str = "aligned"


# Per kernel, every entry compiles spill-free on sm_80, sm_89 and sm_90a with Triton 3.9 and with the oldest
# supported Triton, 3.3 (variants() lists them all for the gate), and its 64-row (or taller) products run
# wgmma on sm_90a. Shared memory is num_stages x (b0 + b1) x BLOCK_K x e at most (96 KB for the largest:
# within sm_89's 99 KB). The 128 x 128 logit tile is 64 fp32 registers per thread at 8 warps; the 4-warp forms
# of the 128-wide tiles reach 255 registers (and spill in dW), so 8 warps. Unaligned inputs (odd C, views)
# compile to scalar loads: they get 64 x 64 x 32 with 8 warps (94-240 registers), where 4 warps reach 251.
FWD_CONFIGS: tuple[TileConfig, ...] = (
    TileConfig(128, 128, 64, 8, 3),  # 254-255 registers with Triton 3.9, no spill
    TileConfig(128, 64, 64, 8, 3),
    TileConfig(64, 128, 64, 8, 3),
    TileConfig(128, 64, 32, 8, 3, (4,)),  # fp32: half the chunk for the same shared memory
    TileConfig(64, 128, 32, 8, 3, (4,)),
    TileConfig(64, 64, 32, 4, 3, (2, 4)),  # small N or V
    TileConfig(64, 64, 32, 8, 2, (2, 4), "unaligned"),
)
# dx keeps its accumulator chunk and the rounded gradient tile beside the logit tile: 128 x 128 takes 32-wide
# chunks (x 64 spills 48 B on sm_80 with Triton 3.3).
DX_CONFIGS: tuple[TileConfig, ...] = (
    TileConfig(128, 128, 32, 8, 3),
    *FWD_CONFIGS[1:],
)
# dW, as (BLOCK_N, BLOCK_M, BLOCK_K). Triton 3.3 spills more here than 3.9: 128 x 128 x 64 (88-560 B),
# 128 x 64 x 64 on sm_90a (88 B), and every fp32 tile tried but 64 x 64 x 32 with 8 warps (8-256 B).
DW_CONFIGS: tuple[TileConfig, ...] = (
    TileConfig(64, 128, 64, 8, 3),
    TileConfig(128, 64, 32, 8, 3),
    TileConfig(64, 64, 32, 8, 2, (2, 4)),
    TileConfig(64, 64, 32, 8, 2, (2, 4), "unaligned"),
)
MAX_BLOCK_N = max(c.b1 for c in (*FWD_CONFIGS, *DX_CONFIGS))  # widest vocab tile of the split kernels
DX_NAMES = ("BLOCK_M", "BLOCK_N", "BLOCK_K")
DW_NAMES = ("BLOCK_N", "BLOCK_M", "BLOCK_K")


def tile_configs(names: tuple[str, str, str], configs: tuple[TileConfig, ...]) -> list:
    """triton.Config list with the kernel's own block names; each carries its TileConfig for the prune."""
    out = []
    for cfg in configs:
        c = triton.Config(dict(zip(names, cfg[:3], strict=True)), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        c.tile = cfg
        out.append(c)
    return out


def prune_configs(configs, named_args, **kwargs):
    """early_config_prune: the configs shipped for this element size and alignment form (never none)."""
    es = named_args["X"].element_size()
    form = "aligned" if named_args.get("ALIGN", 1) else "unaligned"
    return [c for c in configs if es in c.tile.elem_bytes and c.tile.form == form] or configs[-1:]


def interpret_blocks(vocab: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K) under the interpreter, where every tl op is a numpy call: 16 tokens,
    32-wide C chunks, and vocab tiles of a quarter of V (rounded up to a power of two, 32 to 1024), so small
    vocabularies still take several tiles (online softmax, masked tails) and V = 50257 only 50."""
    return 16, min(1024, max(32, triton.next_power_of_2(triton.cdiv(vocab, 4)))), 32


def num_splits(n_rows: int, vocab: int, device: torch.device, *, cap: int, blocks=None) -> int:
    """Vocab splits S of the forward and dx grids: enough (row blocks x S) programs for one per SM with the
    tallest row tile (128), at most ``cap``, and never more than the vocab tiles of the widest config, so no
    split is empty. Under the interpreter (``blocks`` given) 2 wherever V spans two tiles, so the tests run
    the merge."""
    if blocks is not None:
        return max(1, min(2, triton.cdiv(vocab, blocks[1])))
    if device.type != "cuda":
        return 1
    want = triton.cdiv(sm_count(device), triton.cdiv(n_rows, 128))
    return max(1, min(cap, want, triton.cdiv(vocab, MAX_BLOCK_N)))


def n_bucket(n: int) -> int:
    """Autotune key for the token count: power-of-2 buckets, so new batch shapes reuse tunings."""
    return triton.next_power_of_2(max(n, 1))


INT32_LIMIT = 2**31


def check_spans(x: torch.Tensor, weight: torch.Tensor) -> None:
    """The kernels index with 32-bit offsets (a tile of 64-bit ones costs the registers the logit tile needs):
    x, W and the fp32 dW (V x C) must each span fewer than 2**31 elements."""
    N, C = x.shape
    V = weight.shape[0]
    for name, t in (("x", x), ("weight", weight)):
        span = max_offset(t) + 1
        if span >= INT32_LIMIT:
            raise ValueError(f"{name}: spans {span} elements; linear_cross_entropy indexes with 32-bit offsets "
                             f"(fewer than 2**31): split the batch{' or the vocabulary' if name == 'weight' else ''}")
    if (V + MAX_BLOCK_N) * C >= INT32_LIMIT or N * C >= INT32_LIMIT:
        raise ValueError(f"weight: V x C = {V} x {C} (or x's N x C) reaches 2**31 elements with the fp32 gradient "
                         "buffers; linear_cross_entropy indexes with 32-bit offsets")


_EVEN_C = {"EVEN_C": lambda a: a["C"] % a["BLOCK_K"] == 0}
_dx_tuned = triton.autotune(
    configs=tile_configs(DX_NAMES, DX_CONFIGS), key=["N_BUCKET", "ALIGN", "V", "C", "HAS_BIAS", "SOFTCAP"],
    prune_configs_by={"early_config_prune": prune_configs},
)(triton.heuristics(_EVEN_C)(_lce_bwd_dx_kernel))
_dw_tuned = triton.autotune(
    configs=tile_configs(DW_NAMES, DW_CONFIGS), key=["N_BUCKET", "ALIGN", "V", "C", "HAS_BIAS", "SOFTCAP"],
    prune_configs_by={"early_config_prune": prune_configs},
)(triton.heuristics(_EVEN_C)(_lce_bwd_dw_kernel))


def linear_cross_entropy_bwd(x, weight, bias, tgt32, lse, ga, gb, label_smoothing, softcap, need_dx, need_dw,
                             need_db):
    """(dx, dW, db) in their inputs' dtypes, None where not needed. x (N, C) and weight (V, C) with unit
    stride along C; tgt32 int32 (-1 on ignored rows); lse, ga, gb (N,) fp32 (see the module docstring)."""
    N, C = x.shape
    V = weight.shape[0]
    blocks = interpret_blocks(V) if interpreter_enabled() else None
    scalars = (float(softcap or 1.0), 1.0 - label_smoothing, label_smoothing / V)
    flags = dict(HAS_BIAS=bias is not None, SOFTCAP=softcap is not None)
    b = bias if bias is not None else lse  # dummy pointer, never read
    align = align_bucket(x, weight)
    dx = dw = db = None
    with device_guard(x):
        if need_dx:
            if N == 0:
                dx = torch.zeros_like(x)
            else:
                S = num_splits(N, V, x.device, cap=4, blocks=blocks)
                while S > 1 and S * N * C >= INT32_LIMIT:
                    S -= 1
                part = torch.empty((S, N, C), dtype=torch.float32, device=x.device)
                args = (x, weight, b, tgt32, lse, ga, gb, part, N, V, C, n_bucket(N), align, x.stride(0),
                        weight.stride(0), *scalars)
                if blocks is not None:
                    bm, bn, bk = blocks
                    _lce_bwd_dx_kernel[(triton.cdiv(N, bm), S)](*args, **flags, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                                                                EVEN_C=C % bk == 0, num_warps=4, num_stages=1)
                else:
                    _dx_tuned[lambda meta: (triton.cdiv(N, meta["BLOCK_M"]), S)](*args, **flags)
                dx = (part[0] if S == 1 else part.sum(0)).to(x.dtype)
        if need_dw or need_db:
            dw32 = torch.empty((V, C), dtype=torch.float32, device=x.device)
            # With a bias the kernel always writes db (V floats), asked for or not.
            db32 = torch.empty(V, dtype=torch.float32, device=x.device) if bias is not None else lse
            if N == 0:
                dw32.zero_()
                db32.zero_()
            else:
                args = (x, weight, b, tgt32, lse, ga, gb, dw32, db32, N, V, C, n_bucket(N), align, x.stride(0),
                        weight.stride(0), *scalars)
                if blocks is not None:
                    bm, bn, bk = blocks
                    _lce_bwd_dw_kernel[(triton.cdiv(V, bn),)](*args, **flags, BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=bk,
                                                              EVEN_C=C % bk == 0, num_warps=4, num_stages=1)
                else:
                    _dw_tuned[lambda meta: (triton.cdiv(V, meta["BLOCK_N"]),)](*args, **flags)
            dw = dw32.to(weight.dtype) if need_dw else None
            db = db32.to(bias.dtype) if need_db else None
    return dx, dw, db


# ----------------------------------------------------------------------------- AOT variants

_DTYPES = {2: ("fp16", "bf16"), 4: ("fp32",)}
_OUT_PTRS = ("PART", "LSE", "GA", "GB", "DX", "DW", "DB")  # fp32 whatever the input dtype


def kernel_variants(tag: str, fn: Any, names: tuple[str, str, str], configs: tuple[TileConfig, ...], ptrs: str,
                    outputs: str, flags: dict[str, bool]) -> list[KernelVariant]:
    """One kernel's variants (the forward's, dx's or dW's): every tile of ``configs`` in each dtype it ships
    for (16-bit tiles in fp16 and bf16), with the option ``flags`` on, in the form it ships for: aligned
    (GPT-2's C = 768: pointers, C and the row strides multiples of 16; N and V = 50257 are not) or unaligned
    (odd C: only the fresh ``outputs`` are aligned). The masked-C path (EVEN_C False) is compiled: more
    registers than the even one. ``names``: the kernel's block names, in ``TileConfig`` order."""
    return [_variant(tag, fn, names, ptrs, outputs, flags, cfg, ci, dtype)
            for ci, cfg in enumerate(configs) for es in cfg.elem_bytes for dtype in _DTYPES[es]]


def _variant(tag, fn, names, ptrs, outputs, flags, cfg, ci, dtype):
    sig = signature(*((p, "*i32" if p == "T" else "*fp32" if p in _OUT_PTRS else f"*{dtype}") for p in ptrs.split()),
                    ("N V C N_BUCKET ALIGN stride_xn stride_wv", "i32"),
                    (("softcap",) if tag == "fwd" else ("softcap", "smooth_on", "smooth_off"), "fp32"))
    consts = dict(zip(names, cfg[:3], strict=True), **flags, EVEN_C=False)
    aligned = cfg.form == "aligned"
    # What the launcher marks divisible by 16 (ALIGN is never specialised).
    divisible = (tuple(ptrs.split()) + ("C", "N_BUCKET", "stride_xn", "stride_wv")) if aligned else tuple(outputs.split())
    # The dots' M dimension: the token tile for the logits, and for dW's (BLOCK_K x BLOCK_N) product also
    # BLOCK_K; wgmma wants 64 rows or more.
    rows = min(consts["BLOCK_M"], consts["BLOCK_K"]) if tag == "dw" else consts["BLOCK_M"]
    fl = ",".join(k for k, v in flags.items() if v)
    return KernelVariant(
        name=f"linear_cross_entropy_{tag}[{cfg.b0}x{cfg.b1}x{cfg.bk},w{cfg.num_warps},s{cfg.num_stages},{dtype},"
             f"{fl}{'' if aligned else ',unaligned'}]",
        fn=fn, signature=sig, constexprs=consts, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        archs=(80, 89, 90, 100), expect_mma=True,
        tags={"kernel": tag, "config": ci, "dtype": dtype, "aligned": aligned, "block_m": rows,
              "divisible_by_16": divisible},
    )


def variants() -> list[KernelVariant]:
    """The dx and dW kernels' variants (``kernel_variants``) over ``DX_CONFIGS`` and ``DW_CONFIGS``, with the
    bias and the soft-cap on (dW's names give the tile as BLOCK_N x BLOCK_M x BLOCK_K)."""
    flags = dict(HAS_BIAS=True, SOFTCAP=True)
    return (kernel_variants("dx", _lce_bwd_dx_kernel, DX_NAMES, DX_CONFIGS, "X W B T LSE GA GB DX", "DX", flags)
            + kernel_variants("dw", _lce_bwd_dw_kernel, DW_NAMES, DW_CONFIGS, "X W B T LSE GA GB DW DB", "DW DB",
                              flags))
