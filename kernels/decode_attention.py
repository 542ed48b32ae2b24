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

import math
import operator
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import spills
from .flash_attention_bwd import _LOG2E, _alloc, check_offsets, check_scale
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, align_bucket
from .validate import check_same, check_tensor, device_guard

MAX_HEAD_DIM = 128
MAX_T = 2**30  # keeps split starts + split_len inside int32
DEFAULT_SM_COUNT = 132  # off-GPU (interpreter): an H100 SXM, so splits match a common target
WAVES = 2  # programs per SM the split count aims for
MIN_SPLIT_TILES = 2  # a split streams at least this many BLOCK_N tiles (amortises q load + partial write)
_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
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
    split = pid % SPLITS
    bh = (pid // SPLITS).to(tl.int64)
    b = bh // H
    h = bh % H
    n = tl.load(LENS + b * stride_l)
    n = tl.minimum(tl.maximum(n, 0), T_MAX).to(tl.int32)  # clamp: unchecked lengths stay in bounds
    lo = split * SPLIT_LEN
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    O += bh * D
    PO += pid.to(tl.int64) * D
    if lo < n:
        if EVEN_D:
            q = tl.load(Q + b * stride_qb + h * stride_qh + offs_d).to(tl.float32)
        else:
            q = tl.load(Q + b * stride_qb + h * stride_qh + offs_d, mask=d_ok, other=0.0).to(tl.float32)
        q = q * qk_scale  # scores come out in log2 units
        K += b * stride_kb + h * stride_kh
        V += b * stride_vb + h * stride_vh
        offs_n = tl.arange(0, BLOCK_N)
        m_i = tl.max(tl.full([BLOCK_N], float("-inf"), tl.float32), 0)  # fp32 scalars
        l_i = tl.sum(tl.zeros([BLOCK_N], tl.float32), 0)
        acc = tl.zeros([BLOCK_D], tl.float32)
        if HAS_NEW:
            if n - 1 < lo + SPLIT_LEN:  # this split owns position n-1 (n - 1 >= lo holds here)
                # The new key first (the order of online-softmax steps is free): nothing of it stays
                # live across the tile loop.
                kn_ptrs = KN + b * stride_knb + h * stride_knh + offs_d
                vn_ptrs = VN + b * stride_vnb + h * stride_vnh + offs_d
                if EVEN_D:
                    kn = tl.load(kn_ptrs)
                    vn = tl.load(vn_ptrs)
                else:
                    kn = tl.load(kn_ptrs, mask=d_ok, other=0.0)
                    vn = tl.load(vn_ptrs, mask=d_ok, other=0.0)
                m_i = tl.sum(q * kn.to(tl.float32), 0)  # its p is exp2(0) = 1
                l_i += 1.0
                acc += vn.to(tl.float32)
                # The append itself: the same dtype, so the cache holds exactly k_new / v_new.
                if EVEN_D:
                    tl.store(K + (n - 1) * stride_kt + offs_d, kn)
                    tl.store(V + (n - 1) * stride_vt + offs_d, vn)
                else:
                    tl.store(K + (n - 1) * stride_kt + offs_d, kn, mask=d_ok)
                    tl.store(V + (n - 1) * stride_vt + offs_d, vn, mask=d_ok)
        hi = lo + SPLIT_LEN
        n_cached = n - 1 if HAS_NEW else n  # with HAS_NEW, position n-1 comes from KN/VN, not the cache
        if hi > n_cached:
            hi = n_cached
        for start in range(lo, hi, BLOCK_N):
            cols = start + offs_n
            row_ok = cols < hi
            if EVEN_D:
                mask = row_ok[:, None]
            else:
                mask = row_ok[:, None] & d_ok[None, :]
            k = tl.load(K + cols[:, None] * stride_kt + offs_d[None, :], mask=mask, other=0.0)
            s = tl.sum(q[None, :] * k.to(tl.float32), 1)  # (BLOCK_N,)
            s = tl.where(row_ok, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 0))  # finite: every tile holds a key < hi
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new)
            v = tl.load(V + cols[:, None] * stride_vt + offs_d[None, :], mask=mask, other=0.0)
            l_i = l_i * alpha + tl.sum(p, 0)
            acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), 0)
            m_i = m_new
        out = acc / l_i  # l_i >= 1: the split holds at least one key, whose p is exp2(0)
        if SINGLE:
            tl.store(O + offs_d, out.to(O.dtype.element_ty), mask=d_ok)
        else:
            tl.store(PO + offs_d, out, mask=d_ok)
            tl.store(PLSE + pid, m_i + tl.log2(l_i))
    else:  # empty split (or an empty row): nothing to load
        if SINGLE:
            tl.store(O + offs_d, tl.zeros([BLOCK_D], tl.float32).to(O.dtype.element_ty), mask=d_ok)
        else:
            tl.store(PO + offs_d, tl.zeros([BLOCK_D], tl.float32), mask=d_ok)
            tl.store(PLSE + pid, float("-inf"))


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
_INTERPRET = DecodeConfig(16, 4, 1)  # small tiles so tiny test caches still span several splits
_MERGE_WARPS = 4


def _block_d(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def decode_config(d: int, aligned: bool = True) -> DecodeConfig:
    """The config a GPU launch uses for head dim ``d`` and inputs of that alignment (align_bucket)."""
    return _CONFIGS[aligned][_block_d(d)]


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return DEFAULT_SM_COUNT


def _spill_free(config: DecodeConfig, device: torch.device, facts: dict) -> DecodeConfig:
    """The config, or the fallback the running Triton's spill entries list for this form and GPU (older
    Tritons spill a few forms; the fallback keeps BLOCK_N, so the split plan stands)."""
    if not spills.rules("_decode_split_kernel"):  # the newest Tritons: nothing to look up per launch
        return config
    arch = spills.target_arch(device)
    fb = spills.fallback_for("_decode_split_kernel", {**facts, "num_warps": config.num_warps,
                                                       "num_stages": config.num_stages}, arch)
    return config if fb is None else DecodeConfig(config.block_n, fb["num_warps"], fb["num_stages"])


def pick_splits(bh: int, t_max: int, block_n: int, sms: int, requested: int | None = None) -> tuple[int, int]:
    """(splits, split_len) for B*H = ``bh`` rows over a cache of ``t_max`` positions."""
    tiles = triton.cdiv(t_max, block_n)
    if requested is None:
        splits = min(triton.cdiv(WAVES * sms, max(bh, 1)), max(1, tiles // MIN_SPLIT_TILES))
    else:
        splits = min(requested, tiles)
    split_len = triton.cdiv(triton.cdiv(t_max, splits), block_n) * block_n
    return triton.cdiv(t_max, split_len), split_len


def _capturing(t: torch.Tensor) -> bool:
    """A CUDA graph is being captured on the current stream (then no host sync is allowed)."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def _check_length_values(lengths: torch.Tensor, t_max: int, has_new: bool) -> None:
    if lengths.numel() == 0 or _capturing(lengths):
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
    out = _alloc((B, H, D), q.dtype, q.device)
    if B * H == 0:
        return out
    block_d = _block_d(D)
    if config is None:
        aligned = bool(align_bucket(q, k_cache, v_cache, k_new, v_new))
        config = _INTERPRET if interpreter_enabled() else decode_config(D, aligned)
    splits, split_len = pick_splits(B * H, T, config.block_n, _sm_count(q.device), num_splits)
    single = splits == 1
    if q.is_cuda:
        config = _spill_free(config, q.device, dict(BLOCK_D=block_d, BLOCK_N=config.block_n, SINGLE=single,
                                                    HAS_NEW=has_new, EVEN_D=D == block_d, dtype=_DTYPES[q.dtype]))
    partial = _alloc((0,) if single else (B, H, splits, D), torch.float32, q.device)
    plse = _alloc((0,) if single else (B, H, splits), torch.float32, q.device)
    kn, vn = (k_new, v_new) if has_new else (q, q)  # unused pointers when not appending
    with device_guard(q):  # Triton launches on the current GPU: make it the tensors' one
        _decode_split_kernel[(B * H * splits,)](
            q, k_cache, v_cache, kn, vn, lengths, out, partial, plse,
            q.stride(0), q.stride(1), *k_cache.stride()[:3], *v_cache.stride()[:3],
            kn.stride(0), kn.stride(1), vn.stride(0), vn.stride(1), lengths.stride(0),
            H, T, D, splits, split_len, sm_scale * _LOG2E,
            HAS_NEW=has_new, SINGLE=single, BLOCK_N=config.block_n, BLOCK_D=block_d,
            num_warps=config.num_warps, num_stages=config.num_stages,
        )
        if not single:
            _decode_merge_kernel[(B * H,)](partial, plse, out, D, splits, BLOCK_S=MERGE_BLOCK_S, BLOCK_D=block_d,
                                           num_warps=_MERGE_WARPS, num_stages=1)
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


def _validate(q, k_cache, v_cache, lengths, sm_scale, k_new, v_new, num_splits, check_lengths):
    """Check the public arguments (before anything runs); returns (sm_scale, num_splits) normalised."""
    tensors = {"q": q, "k_cache": k_cache, "v_cache": v_cache, "lengths": lengths, "k_new": k_new, "v_new": v_new}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) and not (name in ("k_new", "v_new") and t is None):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    for name, t in tensors.items():  # first, so a device mix-up is reported as such
        if t is not None and name != "q" and t.device != q.device:
            raise ValueError(f"{name}: device {t.device} does not match q device {q.device}")
    check_tensor("q", q, ndim=3)
    check_tensor("k_cache", k_cache, ndim=4)
    check_tensor("v_cache", v_cache, ndim=4)
    check_same("k_cache", k_cache, "q", q)
    check_same("v_cache", v_cache, "q", q)
    B, H, D = q.shape
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"q: head dim D must be in [1, {MAX_HEAD_DIM}], got {D}")
    if k_cache.shape[:2] != (B, H) or k_cache.shape[3] != D:
        raise ValueError(f"k_cache: expected (B, H, T_max, D) with (B, H, D) = {(B, H, D)} like q, "
                         f"got {tuple(k_cache.shape)}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache: expected the shape of k_cache {tuple(k_cache.shape)}, got {tuple(v_cache.shape)}")
    if not 1 <= k_cache.shape[2] <= MAX_T:
        raise ValueError(f"k_cache: T_max must be in [1, 2**30], got {k_cache.shape[2]}")
    check_tensor("lengths", lengths, ndim=1, dtypes=(torch.int32, torch.int64), unit_last_stride=False)
    if lengths.shape[0] != B:
        raise ValueError(f"lengths: expected shape ({B},) (one length per row of q), got {tuple(lengths.shape)}")
    if (k_new is None) != (v_new is None):
        raise ValueError("k_new, v_new: pass both (append one token) or neither")
    for name, t in (("k_new", k_new), ("v_new", v_new)):
        if t is not None:
            check_tensor(name, t, ndim=3)
            check_same(name, t, "q", q)
            if t.shape != q.shape:
                raise ValueError(f"{name}: expected the shape of q {tuple(q.shape)}, got {tuple(t.shape)}")
    if num_splits is not None:
        if isinstance(num_splits, bool) or not hasattr(num_splits, "__index__") or isinstance(num_splits, torch.Tensor):
            raise TypeError(f"num_splits: expected an int or None, got {type(num_splits).__name__}")
        num_splits = operator.index(num_splits)  # numpy integers too
        if num_splits < 1:
            raise ValueError(f"num_splits: expected at least 1, got {num_splits}")
    if not isinstance(check_lengths, bool):
        raise TypeError(f"check_lengths: expected a bool, got {type(check_lengths).__name__}")
    check_offsets(k_cache=k_cache, v_cache=v_cache)
    if sm_scale is None:
        return 1.0 / math.sqrt(D), num_splits
    if isinstance(sm_scale, torch.SymInt | torch.SymFloat) or (
            torch.compiler.is_compiling() and isinstance(sm_scale, int | float) and not isinstance(sm_scale, bool)):
        # Traced by torch.compile(dynamic=True), a number may be symbolic: testing its value would
        # break the graph. The launcher checks the concrete value (as attention does).
        return (sm_scale if isinstance(sm_scale, float) else torch.sym_float(sm_scale)), num_splits
    return check_scale(sm_scale), num_splits


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
            sig = {p: "*" + dt for p in ("Q", "K", "V", "KN", "VN", "O")}
            sig.update(LENS="*" + lens, PO="*fp32", PLSE="*fp32", **{s: "i32" for s in _STRIDES},
                       H="i32", T_MAX="i32", D="i32", SPLITS="i32", SPLIT_LEN="i32", qk_scale="fp32")
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
                name=f"decode_attention_merge[D={block_d},BS={MERGE_BLOCK_S},w={_MERGE_WARPS},{dt}]",
                fn=_decode_merge_kernel,
                signature={"PO": "*fp32", "PLSE": "*fp32", "O": "*" + dt, "D": "i32", "SPLITS": "i32"},
                constexprs=dict(BLOCK_S=MERGE_BLOCK_S, BLOCK_D=block_d), num_warps=_MERGE_WARPS, num_stages=1,
                archs=(80, 89, 90), tags={"kernel": "merge", "D": block_d, "dtype": dt},
            ))
    return out
