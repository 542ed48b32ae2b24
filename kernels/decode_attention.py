"""KV-cache decode attention (flash-decoding) in Triton: one query token per (batch, head) row.

Algorithm (Dao et al., "Flash-Decoding for long-context inference", 2023): the cache range
[0, T_max) is cut into ``splits`` contiguous chunks of ``split_len`` positions (a multiple of
BLOCK_N) so that B*H*splits programs fill the GPU even at batch 1. Kernel 1 (split): each program
runs an fp32 online softmax (exp2, with sm_scale * log2(e) folded into q) over the BLOCK_N-key tiles
of its chunk clipped to ``lengths[b]``, and writes a NORMALISED partial output (fp32, (B, H, S, D))
and its base-2 log-sum-exp ``log2(sum_j 2^(s_j))`` of the scaled scores (fp32, (B, H, S)). Kernel 2
(merge): per (b, h), out = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M), M = max_s lse_s. With one
split, kernel 1 writes the final output itself and the merge is not launched (one launch).

Scope:
- q: (B, H, D); k_cache, v_cache: (B, H, T_max, D) with any strides and a unit last stride (batch
  slices of a bigger preallocated cache work without copies); lengths: (B,) int32/int64 on the same
  device; row b attends to positions [0, lengths[b]). fp16, bf16, fp32 (one dtype for all float
  tensors); 1 <= D <= 128, padded to BLOCK_D (next power of two, >= 16) and masked (EVEN_D drops the
  mask). Output: fresh contiguous (B, H, D) in q's dtype. Inference only (backward raises).
- k_new/v_new (B, H, D) fuse the cache append: position lengths[b]-1 (``lengths`` counts the new
  token) is written with them in place. Race-free: exactly one split owns that position (the last
  non-empty one); it reads cache positions [lo, min(lo + split_len, lengths[b] - 1)) and takes the new
  key/value from k_new/v_new instead of the cache (one extra online-softmax step), then stores them.
  No program reads the stale cache row, and no other program touches it.
- Splits are chosen on the host from B*H, T_max (the cache CAPACITY: reading lengths would need a
  device sync per token and break CUDA-graph capture) and the SM count (132 off-GPU): about two
  programs per SM, each split at least MIN_SPLIT_TILES tiles, at most one split per tile. Splits
  starting at or past lengths[b] write lse = -inf and zero partials without loading anything;
  lengths[b] == 0 gives an all-zero output row. ``num_splits`` forces a count; it is clamped to the
  number of BLOCK_N tiles, and splits that would start past T_max after rounding split_len up to
  BLOCK_N are dropped (e.g. T_max=256, BLOCK_N=64, 3 requested -> split_len 128, 2 splits).
- lengths are clamped to [0, T_max] inside the kernel (memory safety for unchecked input; an append
  past the end then lands at T_max - 1). With
  ``check_lengths`` (default) the launcher also checks the values on the host (one sync), except
  while a CUDA graph is being captured: min >= 0 (>= 1 with k_new), max <= T_max.

Block sizes: no autotuning. The split count depends on BLOCK_N and must be known on the host before
the launch, and an autotuner would time configs on the first call (inside a CUDA-graph capture, or
with a sync). One fixed config per BLOCK_D and input alignment for every arch instead (``decode_config``):
decode is bandwidth-bound, so each streams 4-8 KiB fp16 K/V tiles with 4 warps, half that for unaligned
inputs (scalar loads); all forms compile spill-free for sm_80/sm_89/sm_90a (``variants()``,
tests/test_decode_attention.py). Dots are broadcast-multiply
+ tl.sum in fp32 (one query row: no tensor-core tile to fill), so fp32 inputs are exact on GPUs too.

Limits: offsets inside one (batch, head) cache slice are int32 ((T_max-1)*stride_t + D-1 < 2**31,
checked); T_max <= 2**30. The partials cost B*H*S*(D+1)*4 bytes written and read once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import launch, spills
from .device_functions import (
    append_step,
    decode_accumulate,
    decode_softmax_init,
    decode_softmax_weights,
    key_mask,
    key_scores,
    load_row,
    split_end,
    split_program,
    store_row,
    write_empty_split,
    write_split,
)
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, align_bucket, signature
from .launch import DTYPE_NAMES, LOG2E, capturing, sm_count
from .validate import (
    check_bool,
    check_offsets,
    check_optional_count,
    check_same,
    check_scale,
    check_sm_scale,
    check_tensor,
    device_guard,
)

MAX_HEAD_DIM = 128
MAX_T = 2**30  # keeps split starts + split_len inside int32
DEFAULT_SM_COUNT = 132  # off-GPU (interpreter): an H100 SXM, so splits match a common target
WAVES = 2  # programs per SM the split count aims for
MIN_SPLIT_TILES = 2  # a split streams at least this many BLOCK_N tiles (amortises q load + partial write)
MERGE_BLOCK_S = 16  # splits merged per step: bounds the merge's registers whatever the split count


@triton.heuristics({"EVEN_D": lambda a: a["D"] == a["BLOCK_D"]})
@triton.jit
def _decode_split_kernel(
    Q,  # (B, H, D)
    K, V,  # (B, H, T_MAX, D) caches
    KN, VN,  # (B, H, D) new key/value (HAS_NEW), else unused
    LENS,  # (B,) int32/int64
    O,  # (B, H, D) contiguous, written when SINGLE
    PO,  # (B, H, S, D) fp32 contiguous: normalised partial outputs
    PLSE,  # (B, H, S) fp32 contiguous: base-2 log-sum-exp of the scaled scores per split
    stride_qb, stride_qh,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_knb, stride_knh, stride_vnb, stride_vnh,
    stride_l,
    H, T_MAX, D, SPLITS, SPLIT_LEN,
    qk_scale,  # sm_scale * log2(e)
    HAS_NEW: tl.constexpr, SINGLE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
):
    pid = tl.program_id(0)  # (batch * head, split), split minor
    bh, b, h, n, lo = split_program(LENS, stride_l, H, T_MAX, SPLITS, SPLIT_LEN)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    O += bh * D
    PO += pid.to(tl.int64) * D
    if lo < n:
        q = load_row(Q + b * stride_qb + h * stride_qh + offs_d, d_ok, EVEN_D).to(tl.float32)
        q = q * qk_scale  # scores come out in log2 units
        K += b * stride_kb + h * stride_kh
        V += b * stride_vb + h * stride_vh
        offs_n = tl.arange(0, BLOCK_N)
        m_i, l_i, acc = decode_softmax_init(BLOCK_N, BLOCK_D)
        if HAS_NEW:
            if n - 1 < lo + SPLIT_LEN:  # this split owns position n-1 (n - 1 >= lo holds here)
                # The new key first (the order of online-softmax steps is free): nothing of it stays
                # live across the tile loop.
                kn, vn, m_i, l_i, acc = append_step(q, KN + b * stride_knb + h * stride_knh + offs_d,
                                                    VN + b * stride_vnb + h * stride_vnh + offs_d, d_ok, l_i, acc,
                                                    EVEN_D)
                # The append itself: the same dtype, so the cache holds exactly k_new / v_new.
                store_row(K + (n - 1) * stride_kt + offs_d, kn, d_ok, EVEN_D)
                store_row(V + (n - 1) * stride_vt + offs_d, vn, d_ok, EVEN_D)
        hi = split_end(lo, SPLIT_LEN, n, HAS_NEW)
        for start in range(lo, hi, BLOCK_N):
            cols = start + offs_n
            row_ok = cols < hi
            mask = key_mask(row_ok, d_ok, EVEN_D)
            k = tl.load(K + cols[:, None] * stride_kt + offs_d[None, :], mask=mask, other=0.0)
            s = key_scores(q, k, row_ok)  # (BLOCK_N,)
            m_new, alpha, p = decode_softmax_weights(s, m_i)
            v = tl.load(V + cols[:, None] * stride_vt + offs_d[None, :], mask=mask, other=0.0)
            l_i, acc = decode_accumulate(p, v, alpha, l_i, acc)
            m_i = m_new
        write_split(O, PO, PLSE, pid, offs_d, d_ok, acc, l_i, m_i, SINGLE)
    else:  # empty split (or an empty row): nothing to load
        write_empty_split(O, PO, PLSE, pid, offs_d, d_ok, BLOCK_D, SINGLE)


@triton.jit
def _decode_merge_kernel(
    PO,  # (B, H, S, D) fp32
    PLSE,  # (B, H, S) fp32
    O,  # (B, H, D) contiguous, q's dtype
    D, SPLITS,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    PO += bh * SPLITS * D
    PLSE += bh * SPLITS
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    m_i = tl.max(tl.full([BLOCK_S], float("-inf"), tl.float32), 0)
    l_i = tl.sum(tl.zeros([BLOCK_S], tl.float32), 0)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for s0 in range(0, SPLITS, BLOCK_S):  # online merge, BLOCK_S splits at a time
        rows = s0 + offs_s
        lse = tl.load(PLSE + rows, mask=rows < SPLITS, other=float("-inf"))
        o = tl.load(PO + rows[:, None] * D + offs_d[None, :], mask=(rows[:, None] < SPLITS) & d_ok[None, :],
                    other=0.0)
        m_new = tl.maximum(m_i, tl.max(lse, 0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all empty so far: avoid -inf - -inf
        alpha = tl.exp2(m_i - m_safe)
        w = tl.exp2(lse - m_safe)  # empty splits: 0
        l_i = l_i * alpha + tl.sum(w, 0)
        acc = acc * alpha + tl.sum(w[:, None] * o, 0)
        m_i = m_new
    out = tl.where(l_i > 0, acc / tl.maximum(l_i, 1e-30), 0.0)  # lengths[b] == 0: zeros
    tl.store(O + bh * D + offs_d, out.to(O.dtype.element_ty), mask=d_ok)


@dataclass(frozen=True)
class DecodeConfig:
    block_n: int
    num_warps: int
    num_stages: int


# BLOCK_D -> config: 4-8 KiB fp16 K and V tiles per step (8-16 KiB fp32). One table for every arch: each
# entry compiles spill-free for sm_80, sm_89 and sm_90a at 64-96 registers (variants()). num_stages does
# not matter on Triton 3.9 (it software-pipelines only loads that feed tl.dot; the code for 1-3 stages is
# identical): latency is hidden by occupancy instead, 20-32 resident warps per SM.
_ALIGNED_CONFIGS = {16: DecodeConfig(128, 4, 2), 32: DecodeConfig(64, 4, 2), 64: DecodeConfig(64, 4, 2),
                    128: DecodeConfig(32, 4, 2)}
# Unaligned inputs (align_bucket 0: an odd view of q or a cache) compile to scalar loads, which the
# aligned D=64/128 tiles keep in flight at 167-168 registers (two forms spill on sm_90a): half the keys
# per step brings them back to 63-120 registers. D=16/32 keep their tiles (<= 96 registers unaligned).
_UNALIGNED_CONFIGS = {16: DecodeConfig(128, 4, 2), 32: DecodeConfig(64, 4, 2), 64: DecodeConfig(32, 4, 2),
                      128: DecodeConfig(16, 4, 2)}
_CONFIGS: dict[bool, dict[int, DecodeConfig]] = {True: _ALIGNED_CONFIGS, False: _UNALIGNED_CONFIGS}
INTERPRET_CONFIG = DecodeConfig(16, 4, 1)  # under the interpreter: small tiles, so tiny caches span several splits
MERGE_WARPS = 4


def decode_config(d: int, aligned: bool = True) -> DecodeConfig:
    """The config a GPU launch uses for head dim ``d`` and inputs of that alignment (align_bucket)."""
    return _CONFIGS[aligned][launch.block_d(d)]


def spill_free(kernel: str, config: DecodeConfig, device: torch.device, facts: dict) -> DecodeConfig:
    """``config`` for the split kernel named ``kernel``, or the fallback the running Triton's spill entries
    list for this form and GPU (older Tritons spill a few forms; the fallback keeps BLOCK_N, so the split
    plan stands)."""
    if not spills.rules(kernel):  # the newest Tritons: nothing to look up per launch
        return config
    fb = spills.fallback_for(kernel, {**facts, "num_warps": config.num_warps, "num_stages": config.num_stages},
                             spills.target_arch(device))
    return config if fb is None else DecodeConfig(config.block_n, fb["num_warps"], fb["num_stages"])


def split_buffers(q: torch.Tensor, splits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split kernel's fp32 partial outputs (B, H, S, D) and base-2 log-sum-exps (B, H, S) for query
    ``q`` (B, H, D); empty placeholders with one split (the kernel then writes the output itself)."""
    B, H, D = q.shape
    single = splits == 1
    return (launch.alloc((0,) if single else (B, H, splits, D), torch.float32, q.device),
            launch.alloc((0,) if single else (B, H, splits), torch.float32, q.device))


def merge_splits(partial: torch.Tensor, plse: torch.Tensor, out: torch.Tensor) -> None:
    """Write ``out`` (B, H, D) from the split kernel's partials (B, H, S, D) and their base-2 log-sum-exps
    (B, H, S): out = sum_s 2^(lse_s - M) o_s / sum_s 2^(lse_s - M). Launches on the current device."""
    B, H, splits, D = partial.shape
    _decode_merge_kernel[(B * H,)](partial, plse, out, D, splits, BLOCK_S=MERGE_BLOCK_S, BLOCK_D=launch.block_d(D),
                                   num_warps=MERGE_WARPS, num_stages=1)


def pick_splits(bh: int, t_max: int, block_n: int, sms: int, requested: int | None = None) -> tuple[int, int]:
    """(splits, split_len) for B*H = ``bh`` rows over a cache of ``t_max`` positions."""
    tiles = triton.cdiv(t_max, block_n)
    if requested is None:
        splits = min(triton.cdiv(WAVES * sms, max(bh, 1)), max(1, tiles // MIN_SPLIT_TILES))
    else:
        splits = min(requested, tiles)
    split_len = triton.cdiv(triton.cdiv(t_max, splits), block_n) * block_n
    return triton.cdiv(t_max, split_len), split_len


def _check_length_values(lengths: torch.Tensor, t_max: int, has_new: bool) -> None:
    if lengths.numel() == 0 or capturing(lengths):
        return
    lo, hi = torch.stack(torch.aminmax(lengths)).tolist()  # one host sync
    need = 1 if has_new else 0
    if lo < need or hi > t_max:
        raise ValueError(f"lengths: values must lie in [{need}, T_max={t_max}]"
                         f"{' (they count the appended token)' if has_new else ''}, got min {lo}, max {hi}")


def decode_attention_launch(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor, sm_scale: float,
    k_new: torch.Tensor | None = None, v_new: torch.Tensor | None = None, num_splits: int | None = None,
    check_lengths: bool = True, config: DecodeConfig | None = None,
) -> torch.Tensor:
    """Launch on validated inputs; returns (B, H, D). ``config`` forces the block config."""
    B, H, D = q.shape
    T = k_cache.shape[2]
    check_offsets(k_cache=k_cache, v_cache=v_cache)
    sm_scale = check_scale(sm_scale)
    has_new = k_new is not None
    if check_lengths:
        _check_length_values(lengths, T, has_new)
    out = launch.alloc((B, H, D), q.dtype, q.device)
    if B * H == 0:
        return out
    bd = launch.block_d(D)
    if config is None:
        aligned = bool(align_bucket(q, k_cache, v_cache, k_new, v_new))
        config = INTERPRET_CONFIG if interpreter_enabled() else decode_config(D, aligned)
    splits, split_len = pick_splits(B * H, T, config.block_n, sm_count(q.device, DEFAULT_SM_COUNT), num_splits)
    single = splits == 1
    if q.is_cuda:
        config = spill_free("_decode_split_kernel", config, q.device,
                            dict(BLOCK_D=bd, BLOCK_N=config.block_n, SINGLE=single, HAS_NEW=has_new, EVEN_D=D == bd,
                                 dtype=DTYPE_NAMES[q.dtype]))
    partial, plse = split_buffers(q, splits)
    kn, vn = (k_new, v_new) if has_new else (q, q)  # unused pointers when not appending
    with device_guard(q):  # Triton launches on the current GPU: make it the tensors' one
        _decode_split_kernel[(B * H * splits,)](
            q, k_cache, v_cache, kn, vn, lengths, out, partial, plse,
            q.stride(0), q.stride(1), *k_cache.stride()[:3], *v_cache.stride()[:3],
            kn.stride(0), kn.stride(1), vn.stride(0), vn.stride(1), lengths.stride(0),
            H, T, D, splits, split_len, sm_scale * LOG2E,
            HAS_NEW=has_new, SINGLE=single, BLOCK_N=config.block_n, BLOCK_D=bd,
            num_warps=config.num_warps, num_stages=config.num_stages,
        )
        if not single:
            merge_splits(partial, plse, out)
    return out


# Opaque to torch.compile (register_fake gives the shape). The caches are declared mutated even
# when no k_new is given (the op writes them only then): one op, one schema.
@torch.library.custom_op(
    "tritongpt::decode_attention", mutates_args=("k_cache", "v_cache"),
    schema="(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor lengths, float sm_scale, Tensor? k_new, "
           "Tensor? v_new, int? num_splits, bool check_lengths) -> Tensor",
)
def _decode_attention_op(q, k_cache, v_cache, lengths, sm_scale, k_new, v_new, num_splits, check_lengths):
    return decode_attention_launch(q, k_cache, v_cache, lengths, sm_scale, k_new, v_new, num_splits, check_lengths)


@_decode_attention_op.register_fake
def _(q, k_cache, v_cache, lengths, sm_scale, k_new, v_new, num_splits, check_lengths):
    return q.new_empty(q.shape)


def check_decode_tensors(tensors: dict[str, object], k_name: str, v_name: str) -> tuple[int, int, int]:
    """The first checks of every decode op's arguments: each of ``tensors`` (q first, the caches named
    ``k_name`` and ``v_name``, lengths, k_new and v_new, which may be None, and any other tensor the op takes)
    a tensor on q's device (the device check before the others, so a mix-up is reported as such); q a
    (B, H, D) float tensor and the caches 4-D ones of its dtype; 1 <= D <= MAX_HEAD_DIM. Returns (B, H, D)."""
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) and not (name in ("k_new", "v_new") and t is None):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    q = tensors["q"]
    for name, t in tensors.items():
        if t is not None and name != "q" and t.device != q.device:
            raise ValueError(f"{name}: device {t.device} does not match q device {q.device}")
    check_tensor("q", q, ndim=3)
    for name in (k_name, v_name):
        check_tensor(name, tensors[name], ndim=4)
    for name in (k_name, v_name):
        check_same(name, tensors[name], "q", q)
    B, H, D = q.shape
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"q: head dim D must be in [1, {MAX_HEAD_DIM}], got {D}")
    return B, H, D


def check_decode_options(q: torch.Tensor, lengths: torch.Tensor, k_new: torch.Tensor | None,
                         v_new: torch.Tensor | None, num_splits: object, check_lengths: object) -> int | None:
    """The checks every decode op makes after its cache layout's: lengths (B,) int32/int64, k_new and v_new
    both or neither, each q's shape and dtype, num_splits None or >= 1 and check_lengths a bool. Returns
    num_splits as an int (or None)."""
    check_tensor("lengths", lengths, ndim=1, dtypes=(torch.int32, torch.int64), unit_last_stride=False)
    if lengths.shape[0] != q.shape[0]:
        raise ValueError(f"lengths: expected shape ({q.shape[0]},) (one length per row of q), "
                         f"got {tuple(lengths.shape)}")
    if (k_new is None) != (v_new is None):
        raise ValueError("k_new, v_new: pass both (append one token) or neither")
    for name, t in (("k_new", k_new), ("v_new", v_new)):
        if t is not None:
            check_tensor(name, t, ndim=3)
            check_same(name, t, "q", q)
            if t.shape != q.shape:
                raise ValueError(f"{name}: expected the shape of q {tuple(q.shape)}, got {tuple(t.shape)}")
    num_splits = check_optional_count("num_splits", num_splits)
    check_bool("check_lengths", check_lengths)
    return num_splits


def _validate(q, k_cache, v_cache, lengths, sm_scale, k_new, v_new, num_splits, check_lengths):
    """Check the public arguments (before anything runs); returns (sm_scale, num_splits) normalised."""
    B, H, D = check_decode_tensors({"q": q, "k_cache": k_cache, "v_cache": v_cache, "lengths": lengths,
                                    "k_new": k_new, "v_new": v_new}, "k_cache", "v_cache")
    if k_cache.shape[:2] != (B, H) or k_cache.shape[3] != D:
        raise ValueError(f"k_cache: expected (B, H, T_max, D) with (B, H, D) = {(B, H, D)} like q, "
                         f"got {tuple(k_cache.shape)}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache: expected the shape of k_cache {tuple(k_cache.shape)}, got {tuple(v_cache.shape)}")
    if not 1 <= k_cache.shape[2] <= MAX_T:
        raise ValueError(f"k_cache: T_max must be in [1, 2**30], got {k_cache.shape[2]}")
    num_splits = check_decode_options(q, lengths, k_new, v_new, num_splits, check_lengths)
    check_offsets(k_cache=k_cache, v_cache=v_cache)
    return check_sm_scale(sm_scale, D), num_splits


def decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor,
    sm_scale: float | None = None, *, k_new: torch.Tensor | None = None, v_new: torch.Tensor | None = None,
    num_splits: int | None = None, check_lengths: bool = True,
) -> torch.Tensor:
    """softmax(q . k_cache[b, h, :lengths[b]]^T * sm_scale) @ v_cache[b, h, :lengths[b]] -> (B, H, D).

    ``k_new``/``v_new`` (B, H, D), both or neither, are first written in place at position
    ``lengths[b] - 1`` of the caches. ``sm_scale`` defaults to 1/sqrt(D); ``num_splits`` forces the
    split count (clamped to the number of key tiles); ``check_lengths`` validates the lengths on the
    host (one device sync; skipped while a CUDA graph is captured). Rows with length 0 give zeros.
    """
    scale, splits = _validate(q, k_cache, v_cache, lengths, sm_scale, k_new, v_new, num_splits, check_lengths)
    return _decode_attention_op(q, k_cache, v_cache, lengths, scale, k_new, v_new, splits, check_lengths)


_STRIDES = ("stride_qb stride_qh stride_kb stride_kh stride_kt stride_vb stride_vh stride_vt stride_knb "
            "stride_knh stride_vnb stride_vnh stride_l").split()


def _divisible(aligned: bool, even: bool) -> list[str]:
    """What Triton's launcher marks divisible by 16 in a form. Aligned inputs (align_bucket 1): every
    pointer and every stride but the lengths' (1, a constant), plus D and T_MAX when D = BLOCK_D (a
    cache of 16k positions). Unaligned inputs (an odd view of q or of a cache): only the fresh outputs."""
    if not aligned:
        return ["O", "PO", "PLSE"]
    return ["Q", "K", "V", "KN", "VN", "LENS", "O", "PO", "PLSE", *_STRIDES[:-1], *(["D", "T_MAX"] if even else [])]


def _split_forms(block_d: int):
    """(dtype, append, single, even D, lengths dtype, aligned) forms of the split kernel to compile."""
    # bf16 compiles to fp16's code but for its converts: one form of it per head dim.
    forms = [(dt, new, single, even, "i32", True) for dt in ("fp16", "fp32") for new in (True, False)
             for single in (True, False) for even in (True, False)]
    forms += [("bf16", True, False, True, "i32", True)]
    forms += [("fp16", True, False, True, "i64", True)] * (block_d == 64)
    # Unaligned inputs: the split path (single differs only in its final store).
    forms += [(dt, new, False, even, "i32", False) for dt in ("fp16", "fp32") for new in (True, False)
              for even in (True, False)]
    return forms


def variants() -> list[KernelVariant]:
    """Split kernel per shipped config: BLOCK_D x fp16/fp32 x {append, not} x {single, split} x {even,
    ragged D} with int32 lengths for aligned inputs (plus one bf16 and one int64-lengths form), the split
    path again for unaligned inputs with that table's config, and the merge kernel per BLOCK_D x dtype;
    every one for sm_80, sm_89 and sm_90a."""
    out = []
    for block_d in _CONFIGS[True]:
        for dt, new, single, even, lens, aligned in _split_forms(block_d):
            cfg = _CONFIGS[aligned][block_d]
            sig = signature(("Q K V KN VN O", "*" + dt), ("LENS", "*" + lens), ("PO PLSE", "*fp32"), (_STRIDES, "i32"),
                            ("H T_MAX D SPLITS SPLIT_LEN", "i32"), ("qk_scale", "fp32"))
            out.append(KernelVariant(
                name=f"decode_attention_split[D={block_d},BN={cfg.block_n},w={cfg.num_warps},s={cfg.num_stages},"
                     f"{dt}{'' if even else ',ragged'}{',append' if new else ''}{',single' if single else ''}"
                     f"{',lens64' if lens == 'i64' else ''}{'' if aligned else ',unaligned'}]",
                fn=_decode_split_kernel, signature=sig,
                constexprs=dict(HAS_NEW=new, SINGLE=single, BLOCK_N=cfg.block_n, BLOCK_D=block_d, EVEN_D=even),
                num_warps=cfg.num_warps, num_stages=cfg.num_stages, archs=(80, 89, 90),
                tags={"kernel": "split", "D": block_d, "dtype": dt, "even": even, "append": new, "single": single,
                      "aligned": aligned, "divisible_by_16": _divisible(aligned, even)},
            ))
        for dt in ("fp16", "bf16", "fp32"):
            out.append(KernelVariant(
                name=f"decode_attention_merge[D={block_d},BS={MERGE_BLOCK_S},w={MERGE_WARPS},{dt}]",
                fn=_decode_merge_kernel, signature=signature(("PO PLSE", "*fp32"), ("O", "*" + dt), ("D SPLITS", "i32")),
                constexprs=dict(BLOCK_S=MERGE_BLOCK_S, BLOCK_D=block_d), num_warps=MERGE_WARPS, num_stages=1,
                archs=(80, 89, 90), tags={"kernel": "merge", "D": block_d, "dtype": dt},
            ))
    return out
