"""Paged-KV-cache decode attention (flash-decoding over a page pool) in Triton, for continuous batching.

The split-KV algorithm of ``decode_attention`` (Dao et al., "Flash-Decoding for long-context inference",
2023) with the cache stored as pages of a shared pool (Kwon et al., "Efficient Memory Management for
Large Language Model Serving with PagedAttention", 2023): row b's position p lives at page
``block_tables[b, p // page_size]``, slot ``p % page_size``. Kernel 1 (split) streams BLOCK_N positions
per step, looking up each position's page in the block table (a tile spans BLOCK_N / page_size whole
pages, or lies inside one page when pages are larger than the tile), and writes a normalised fp32
partial output and its base-2 log-sum-exp per split. Kernel 2 is ``decode_attention``'s merge kernel,
unchanged (same partial layout); with one split kernel 1 writes the output itself.

Scope:
- q: (B, H, D); k_pool, v_pool: (num_pages, H, page_size, D), any strides with a unit last stride, q's
  dtype (fp16, bf16, fp32); 1 <= D <= 128; page_size a power of two >= 16. block_tables: (B, max_pages)
  int32 (int64 is converted on the host: one small copy); entries at or past a row's last used page are
  never read (they may hold -1). Capacity = max_pages * page_size. lengths: (B,) int32/int64; row b attends
  to positions [0, lengths[b]); 0 gives a zero row. Output: fresh contiguous (B, H, D) in q's dtype.
  Inference only (backward raises).
- k_new/v_new (B, H, D) fuse the append at position lengths[b]-1 exactly as ``decode_attention`` does:
  the one split that owns that position takes the new key/value from k_new/v_new, never from the pool,
  and stores them into the pool. The page holding that position must belong to row b alone (a server
  shares only full prefix pages between rows); pages that rows merely read may be shared freely.
- Splits are chosen on the host from B*H, the capacity and the SM count (``decode_attention.pick_splits``:
  no device sync, CUDA-graph safe); each split is a whole number of BLOCK_N tiles.
- Memory safety for unchecked input: lengths are clamped to [0, capacity] and page ids to
  [0, num_pages) in the kernel. ``check_lengths`` (default) checks on the host with one sync, except while
  a CUDA graph is captured: lengths in [0 or 1, capacity] and every block-table entry a row uses in
  [0, num_pages).

Block sizes: ``decode_attention``'s fixed table (``decode_config``) for every page size, but 8 warps for
fp16/bf16 with a ragged D of 33-63 (``paged_config``); the split plan needs BLOCK_N on the host, so there is
no autotuning. Every form compiles spill-free for sm_80/sm_89/sm_90a at 48-162 registers (``variants()``).
The per-position page lookup keeps each row of a tile a contiguous D-vector, so the loads are the same
16-byte vectors as the contiguous kernel's; the block-table entries of the next tile are loaded one step
ahead, so a tile waits on one memory round trip, not two.

Limits: offsets inside one page are int32 ((page_size-1)*stride_t + D-1 < 2**31, checked); page and head
offsets are int64, so pools of any size work. Capacity <= 2**30.
"""

from __future__ import annotations

import math
import operator

import torch
import triton
import triton.language as tl

from . import spills
from .decode_attention import (
    _DTYPES,
    _INTERPRET,
    _MERGE_WARPS,
    MAX_HEAD_DIM,
    MAX_T,
    MERGE_BLOCK_S,
    DecodeConfig,
    _block_d,
    _capturing,
    _decode_merge_kernel,
    _sm_count,
    decode_config,
    pick_splits,
)
from .flash_attention_bwd import _LOG2E, _alloc, check_scale
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, align_bucket
from .validate import check_same, check_tensor, device_guard

# (BLOCK_D, aligned, even D, half dtype) -> config where decode_attention's table does not fit the paged
# kernel. The per-row page offsets (int64, for K and V) cost registers that the contiguous kernel does not
# spend: fp16/bf16 with a ragged D of 33-63 at BLOCK_N=64 compiles to 80 registers + 40 B of stack on sm_90a
# with 4 warps; 8 warps on the same BLOCK_N (the split plan stands) keep it spill-free.
_OVERRIDES = {(64, True, False, True): DecodeConfig(64, 8, 2)}
# Powers of two make the page/slot split a shift and a mask; >= 16 keeps the capacity a multiple of 16 (the
# compiled forms mark it divisible) and of the smallest tile.
MIN_PAGE_SIZE = 16
MIN_BLOCK_N = 16  # the smallest tile any config streams: bounds the split count
INT32_MAX = 2**31 - 1


@triton.jit
def _page_ids(BT, pos, ok, NUM_PAGES, PAGE_SIZE: tl.constexpr):
    # Pool page of each position. Where ``ok`` is false no table entry is read; ids are clamped so an
    # unchecked table cannot send a load outside the pool. Callers widen to int64 before multiplying by a
    # page stride (page * stride spans the whole pool); int32 ids keep the loop-carried prefetch small.
    page = tl.load(BT + pos // PAGE_SIZE, mask=ok, other=0)
    return tl.minimum(tl.maximum(page, 0), NUM_PAGES - 1)


@triton.heuristics({"EVEN_D": lambda a: a["D"] == a["BLOCK_D"]})
@triton.jit
def _paged_decode_split_kernel(
    Q,  # (B, H, D)
    K, V,  # (NUM_PAGES, H, PAGE_SIZE, D) pools
    KN, VN,  # (B, H, D) new key/value (HAS_NEW), else unused
    BT,  # (B, max_pages) int32, unit last stride
    LENS,  # (B,) int32/int64
    O,  # (B, H, D) contiguous, written when SINGLE
    PO,  # (B, H, S, D) fp32 contiguous: normalised partial outputs
    PLSE,  # (B, H, S) fp32 contiguous: base-2 log-sum-exp of the scaled scores per split
    stride_qb, stride_qh,
    stride_kp, stride_kh, stride_kt,
    stride_vp, stride_vh, stride_vt,
    stride_knb, stride_knh, stride_vnb, stride_vnh,
    stride_btb, stride_l,
    H, CAPACITY, NUM_PAGES, D, SPLITS, SPLIT_LEN,
    qk_scale,  # sm_scale * log2(e)
    HAS_NEW: tl.constexpr, SINGLE: tl.constexpr, PAGE_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
):
    pid = tl.program_id(0)  # (batch * head, split), split minor
    split = pid % SPLITS
    bh = (pid // SPLITS).to(tl.int64)
    b = bh // H
    h = bh % H
    n = tl.load(LENS + b * stride_l)
    n = tl.minimum(tl.maximum(n, 0), CAPACITY).to(tl.int32)  # clamp: unchecked lengths stay in bounds
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
        K += h * stride_kh
        V += h * stride_vh
        BT += b * stride_btb
        offs_n = tl.arange(0, BLOCK_N)
        m_i = tl.max(tl.full([BLOCK_N], float("-inf"), tl.float32), 0)  # fp32 scalars
        l_i = tl.sum(tl.zeros([BLOCK_N], tl.float32), 0)
        acc = tl.zeros([BLOCK_D], tl.float32)
        if HAS_NEW:
            if n - 1 < lo + SPLIT_LEN:  # this split owns position n-1 (n - 1 >= lo holds here)
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
                # The append: the same dtype, so the pool holds exactly k_new / v_new.
                page = _page_ids(BT, n - 1, n > 0, NUM_PAGES, PAGE_SIZE).to(tl.int64)
                slot = (n - 1) % PAGE_SIZE
                k_row = K + page * stride_kp + slot * stride_kt + offs_d
                v_row = V + page * stride_vp + slot * stride_vt + offs_d
                if EVEN_D:
                    tl.store(k_row, kn)
                    tl.store(v_row, vn)
                else:
                    tl.store(k_row, kn, mask=d_ok)
                    tl.store(v_row, vn, mask=d_ok)
        hi = lo + SPLIT_LEN
        n_cached = n - 1 if HAS_NEW else n  # with HAS_NEW, position n-1 comes from KN/VN, not the pool
        if hi > n_cached:
            hi = n_cached
        cols = lo + offs_n
        pages = _page_ids(BT, cols, cols < hi, NUM_PAGES, PAGE_SIZE)
        for start in range(lo, hi, BLOCK_N):
            cols = start + offs_n
            row_ok = cols < hi
            if EVEN_D:
                mask = row_ok[:, None]
            else:
                mask = row_ok[:, None] & d_ok[None, :]
            slots = cols % PAGE_SIZE
            k_rows = pages.to(tl.int64) * stride_kp + slots * stride_kt
            v_rows = pages.to(tl.int64) * stride_vp + slots * stride_vt
            k = tl.load(K + k_rows[:, None] + offs_d[None, :], mask=mask, other=0.0)
            v = tl.load(V + v_rows[:, None] + offs_d[None, :], mask=mask, other=0.0)
            nxt = cols + BLOCK_N  # the next tile's pages, fetched while this tile computes
            pages = _page_ids(BT, nxt, nxt < hi, NUM_PAGES, PAGE_SIZE)
            s = tl.sum(q[None, :] * k.to(tl.float32), 1)  # (BLOCK_N,)
            s = tl.where(row_ok, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 0))  # finite: every tile holds a key < hi
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new)
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


def paged_config(d: int, aligned: bool = True, even: bool = True, half: bool = True) -> DecodeConfig:
    """The config a GPU launch uses for head dim ``d``, inputs of that alignment (align_bucket), an even
    (D = BLOCK_D) or ragged head dim and fp16/bf16 (``half``) or fp32 inputs."""
    return _OVERRIDES.get((_block_d(d), aligned, even, half), decode_config(d, aligned))


def _spill_free(config: DecodeConfig, device: torch.device, facts: dict) -> DecodeConfig:
    """The config, or the fallback the running Triton's spill entries list for this form and GPU (same
    BLOCK_N, so the split plan stands)."""
    if not spills.rules("_paged_decode_split_kernel"):
        return config
    fb = spills.fallback_for("_paged_decode_split_kernel", {**facts, "num_warps": config.num_warps,
                                                             "num_stages": config.num_stages},
                              spills.target_arch(device))
    return config if fb is None else DecodeConfig(config.block_n, fb["num_warps"], fb["num_stages"])


def _check_values(lengths: torch.Tensor, block_tables: torch.Tensor, page_size: int, num_pages: int,
                  has_new: bool) -> None:
    """lengths within [0 or 1, capacity] and the block-table entries rows use within the pool (one sync)."""
    if lengths.numel() == 0 or _capturing(lengths):
        return
    capacity = block_tables.shape[1] * page_size
    used_pages = (lengths.clamp(0, capacity) + page_size - 1) // page_size  # (B,)
    used = torch.arange(block_tables.shape[1], device=lengths.device) < used_pages[:, None]
    bad = used & ((block_tables < 0) | (block_tables >= num_pages))
    lo, hi, n_bad = torch.stack([*torch.aminmax(lengths), bad.sum().to(lengths.dtype)]).tolist()
    need = 1 if has_new else 0
    if lo < need or hi > capacity:
        raise ValueError(f"lengths: values must lie in [{need}, capacity={capacity}] (max_pages * page_size)"
                         f"{' (they count the appended token)' if has_new else ''}, got min {lo}, max {hi}")
    if n_bad:
        row, page = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"block_tables: {n_bad} entries that rows use are not page ids in [0, num_pages={num_pages}),"
                         f" e.g. block_tables[{row}, {page}] = {int(block_tables[row, page])}")


def paged_decode_attention_launch(
    q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_tables: torch.Tensor, lengths: torch.Tensor,
    sm_scale: float, k_new: torch.Tensor | None = None, v_new: torch.Tensor | None = None,
    num_splits: int | None = None, check_lengths: bool = True, config: DecodeConfig | None = None,
) -> torch.Tensor:
    """Launch on validated inputs; returns (B, H, D). ``config`` forces the block config."""
    B, H, D = q.shape
    num_pages, _, page_size, _ = k_pool.shape
    capacity = block_tables.shape[1] * page_size
    sm_scale = check_scale(sm_scale)
    has_new = k_new is not None
    if check_lengths:
        _check_values(lengths, block_tables, page_size, num_pages, has_new)
    table = block_tables.to(torch.int32).contiguous()  # a no-op for the usual contiguous int32 table
    out = _alloc((B, H, D), q.dtype, q.device)
    if B * H == 0:
        return out
    block_d = _block_d(D)
    if config is None:
        aligned = bool(align_bucket(q, k_pool, v_pool, k_new, v_new))
        config = _INTERPRET if interpreter_enabled() else paged_config(D, aligned, D == block_d,
                                                                        q.dtype != torch.float32)
    splits, split_len = pick_splits(B * H, capacity, config.block_n, _sm_count(q.device), num_splits)
    single = splits == 1
    if q.is_cuda:
        config = _spill_free(config, q.device, dict(BLOCK_D=block_d, BLOCK_N=config.block_n, SINGLE=single,
                                                    HAS_NEW=has_new, EVEN_D=D == block_d, PAGE_SIZE=page_size,
                                                    dtype=_DTYPES[q.dtype]))
    partial = _alloc((0,) if single else (B, H, splits, D), torch.float32, q.device)
    plse = _alloc((0,) if single else (B, H, splits), torch.float32, q.device)
    kn, vn = (k_new, v_new) if has_new else (q, q)  # unused pointers when not appending
    with device_guard(q):  # Triton launches on the current GPU: make it the tensors' one
        _paged_decode_split_kernel[(B * H * splits,)](
            q, k_pool, v_pool, kn, vn, table, lengths, out, partial, plse,
            q.stride(0), q.stride(1), *k_pool.stride()[:3], *v_pool.stride()[:3],
            kn.stride(0), kn.stride(1), vn.stride(0), vn.stride(1), table.stride(0), lengths.stride(0),
            H, capacity, num_pages, D, splits, split_len, sm_scale * _LOG2E,
            HAS_NEW=has_new, SINGLE=single, PAGE_SIZE=page_size, BLOCK_N=config.block_n, BLOCK_D=block_d,
            num_warps=config.num_warps, num_stages=config.num_stages,
        )
        if not single:
            _decode_merge_kernel[(B * H,)](partial, plse, out, D, splits, BLOCK_S=MERGE_BLOCK_S, BLOCK_D=block_d,
                                           num_warps=_MERGE_WARPS, num_stages=1)
    return out


# Opaque to torch.compile (register_fake gives the shape). The pools are declared mutated even when no
# k_new is given (the op writes them only then): one op, one schema.
@torch.library.custom_op(
    "tritongpt::paged_decode_attention", mutates_args=("k_pool", "v_pool"),
    schema="(Tensor q, Tensor(a!) k_pool, Tensor(b!) v_pool, Tensor block_tables, Tensor lengths, float sm_scale, "
           "Tensor? k_new, Tensor? v_new, int? num_splits, bool check_lengths) -> Tensor",
)
def _paged_decode_attention_op(q, k_pool, v_pool, block_tables, lengths, sm_scale, k_new, v_new, num_splits,
                               check_lengths):
    return paged_decode_attention_launch(q, k_pool, v_pool, block_tables, lengths, sm_scale, k_new, v_new,
                                         num_splits, check_lengths)


@_paged_decode_attention_op.register_fake
def _(q, k_pool, v_pool, block_tables, lengths, sm_scale, k_new, v_new, num_splits, check_lengths):
    return q.new_empty(q.shape)


def _check_pool(name: str, pool: torch.Tensor) -> None:
    num_pages, _, page_size, d = pool.shape
    if num_pages < 1:
        raise ValueError(f"{name}: expected at least one page, got shape {tuple(pool.shape)}")
    if page_size < MIN_PAGE_SIZE or page_size & (page_size - 1):
        raise ValueError(f"{name}: page_size (dim 2) must be a power of two >= {MIN_PAGE_SIZE}, got {page_size}")
    if (page_size - 1) * pool.stride(2) + d - 1 > INT32_MAX:
        raise ValueError(f"{name}: one page spans more than 2**31 elements (strides {tuple(pool.stride())}); "
                         f"the kernel indexes within a page with 32-bit offsets: pass {name}.contiguous()")


def _validate(q, k_pool, v_pool, block_tables, lengths, sm_scale, k_new, v_new, num_splits, check_lengths):
    """Check the public arguments (before anything runs); returns (sm_scale, num_splits) normalised."""
    tensors = {"q": q, "k_pool": k_pool, "v_pool": v_pool, "block_tables": block_tables, "lengths": lengths,
               "k_new": k_new, "v_new": v_new}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) and not (name in ("k_new", "v_new") and t is None):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    for name, t in tensors.items():  # first, so a device mix-up is reported as such
        if t is not None and name != "q" and t.device != q.device:
            raise ValueError(f"{name}: device {t.device} does not match q device {q.device}")
    check_tensor("q", q, ndim=3)
    check_tensor("k_pool", k_pool, ndim=4)
    check_tensor("v_pool", v_pool, ndim=4)
    check_same("k_pool", k_pool, "q", q)
    check_same("v_pool", v_pool, "q", q)
    B, H, D = q.shape
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"q: head dim D must be in [1, {MAX_HEAD_DIM}], got {D}")
    if k_pool.shape[1] != H or k_pool.shape[3] != D:
        raise ValueError(f"k_pool: expected (num_pages, H, page_size, D) with (H, D) = {(H, D)} like q, "
                         f"got {tuple(k_pool.shape)}")
    if v_pool.shape != k_pool.shape:
        raise ValueError(f"v_pool: expected the shape of k_pool {tuple(k_pool.shape)}, got {tuple(v_pool.shape)}")
    _check_pool("k_pool", k_pool)
    _check_pool("v_pool", v_pool)
    check_tensor("block_tables", block_tables, ndim=2, dtypes=(torch.int32, torch.int64), unit_last_stride=False)
    if block_tables.shape[0] != B or block_tables.shape[1] < 1:
        raise ValueError(f"block_tables: expected shape ({B}, max_pages) with max_pages >= 1 (one row per row of "
                         f"q), got {tuple(block_tables.shape)}")
    page_size = k_pool.shape[2]
    if block_tables.shape[1] * page_size > MAX_T:
        raise ValueError(f"block_tables: capacity max_pages * page_size = {block_tables.shape[1] * page_size} "
                         f"exceeds 2**30 positions")
    if B * H * triton.cdiv(block_tables.shape[1] * page_size, MIN_BLOCK_N) > INT32_MAX:
        raise ValueError("block_tables: B * H * splits could exceed the 2**31 - 1 grid limit: split the batch")
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
    if sm_scale is None:
        return 1.0 / math.sqrt(D), num_splits
    if isinstance(sm_scale, torch.SymInt | torch.SymFloat) or (
            torch.compiler.is_compiling() and isinstance(sm_scale, int | float) and not isinstance(sm_scale, bool)):
        # Traced by torch.compile(dynamic=True), a number may be symbolic: the launcher checks the value.
        return (sm_scale if isinstance(sm_scale, float) else torch.sym_float(sm_scale)), num_splits
    return check_scale(sm_scale), num_splits


def paged_decode_attention(
    q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_tables: torch.Tensor, lengths: torch.Tensor,
    sm_scale: float | None = None, *, k_new: torch.Tensor | None = None, v_new: torch.Tensor | None = None,
    num_splits: int | None = None, check_lengths: bool = True,
) -> torch.Tensor:
    """Decode attention over a paged KV cache -> (B, H, D).

    Row b attends to positions [0, lengths[b]) of its cache, position p being slot ``p % page_size`` of pool
    page ``block_tables[b, p // page_size]``. ``k_new``/``v_new`` (B, H, D), both or neither, are first
    written into the pools at position ``lengths[b] - 1``. ``sm_scale`` defaults to 1/sqrt(D);
    ``num_splits`` forces the split count (clamped to the number of key tiles); ``check_lengths`` checks the
    lengths and the used block-table entries on the host (one device sync; skipped while a CUDA graph is
    captured). Rows with length 0 give zeros.
    """
    scale, splits = _validate(q, k_pool, v_pool, block_tables, lengths, sm_scale, k_new, v_new, num_splits,
                              check_lengths)
    return _paged_decode_attention_op(q, k_pool, v_pool, block_tables, lengths, scale, k_new, v_new, splits,
                                      check_lengths)


# ----------------------------------------------------------------------------- compile-only gate

_STRIDES = ("stride_qb stride_qh stride_kp stride_kh stride_kt stride_vp stride_vh stride_vt stride_knb "
            "stride_knh stride_vnb stride_vnh stride_btb stride_l").split()
_PAGE_SIZES = (16, 128)  # several pages per tile; a tile inside one page


def _divisible(aligned: bool, even: bool) -> list[str]:
    """What Triton's launcher marks divisible by 16 in a form. Aligned inputs (align_bucket 1): every
    pointer, every stride but the lengths' (1, a constant) and CAPACITY (a multiple of page_size >= 16),
    plus D when D = BLOCK_D; the block table's row stride (max_pages) counts as aligned too (a power-of-two
    max context over pages of 16). NUM_PAGES is left unmarked: a pool's size is arbitrary. Unaligned inputs
    (an odd view of q or of a pool): only the fresh outputs, the table copy and CAPACITY."""
    if not aligned:
        return ["BT", "O", "PO", "PLSE", "CAPACITY"]
    return ["Q", "K", "V", "KN", "VN", "BT", "LENS", "O", "PO", "PLSE", *_STRIDES[:-1], "CAPACITY",
            *(["D"] if even else [])]


def _split_forms(block_d: int):
    """(dtype, append, single, even D, page size, aligned) forms of the split kernel to compile."""
    if block_d < 64:  # small heads: the heaviest forms only
        return [(dt, True, False, even, 16, True) for dt in ("fp16", "fp32") for even in (True, False)]
    forms = [(dt, new, single, even, 16, True) for dt in ("fp16", "fp32") for new in (True, False)
             for single in (True, False) for even in (True, False)]
    # Pages larger than the tile: the page-id math folds differently; the split path covers it.
    forms += [(dt, new, False, even, 128, True) for dt in ("fp16", "fp32") for new in (True, False)
              for even in (True, False)]
    # bf16 compiles to fp16's code but for its converts: its heaviest even and ragged forms per head dim.
    forms += [("bf16", True, False, even, 16, True) for even in (True, False)]
    # Unaligned inputs: the split path (single differs only in its final store).
    forms += [(dt, new, False, even, 16, False) for dt in ("fp16", "fp32") for new in (True, False)
              for even in (True, False)]
    return forms


def variants() -> list[KernelVariant]:
    """Split kernel per shipped config (the merge kernel is ``decode_attention``'s, listed there): for
    BLOCK_D 64 and 128, fp16/fp32 x {append, not} x {single, split} x {even, ragged D} at page size 16, the
    split path at page size 128, bf16's appending split path (even and ragged), and the split path for unaligned inputs with that table's
    config; BLOCK_D 16/32 in their heaviest forms; every one for sm_80, sm_89 and sm_90a."""
    out = []
    for block_d in (16, 32, 64, 128):
        for dt, new, single, even, page, aligned in _split_forms(block_d):
            cfg = paged_config(block_d, aligned, even, dt != "fp32")
            sig = {p: "*" + dt for p in ("Q", "K", "V", "KN", "VN", "O")}
            sig.update(BT="*i32", LENS="*i32", PO="*fp32", PLSE="*fp32", **{s: "i32" for s in _STRIDES},
                       H="i32", CAPACITY="i32", NUM_PAGES="i32", D="i32", SPLITS="i32", SPLIT_LEN="i32",
                       qk_scale="fp32")
            out.append(KernelVariant(
                name=f"paged_decode_attention_split[D={block_d},BN={cfg.block_n},P={page},w={cfg.num_warps},"
                     f"s={cfg.num_stages},{dt}{'' if even else ',ragged'}{',append' if new else ''}"
                     f"{',single' if single else ''}{'' if aligned else ',unaligned'}]",
                fn=_paged_decode_split_kernel, signature=sig,
                constexprs=dict(HAS_NEW=new, SINGLE=single, PAGE_SIZE=page, BLOCK_N=cfg.block_n, BLOCK_D=block_d,
                                EVEN_D=even),
                num_warps=cfg.num_warps, num_stages=cfg.num_stages, archs=(80, 89, 90),
                tags={"kernel": "split", "D": block_d, "dtype": dt, "even": even, "append": new, "single": single,
                      "page_size": page, "aligned": aligned, "divisible_by_16": _divisible(aligned, even)},
            ))
    return out
