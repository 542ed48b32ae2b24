"""Paged-KV-cache decode attention (flash-decoding over a page pool) in Triton, for continuous batching.

The split-KV algorithm of ``decode_attention`` (Dao et al., "Flash-Decoding for long-context inference",
2023) with the cache stored as pages of a shared pool (Kwon et al., "Efficient Memory Management for
Large Language Model Serving with PagedAttention", 2023): row b's position p lives at page
``block_tables[b, p // page_size]``, slot ``p % page_size``. Kernel 1 (split) streams BLOCK_N positions
per step, looking up each position's page in the block table (a tile spans BLOCK_N / page_size whole
pages, or lies inside one page when pages are larger than the tile), and writes a normalised fp32
partial output and its base-2 log-sum-exp per split; apart from where a key row lives, its steps are
``decode_attention``'s split kernel's (both call ``device_functions``). Kernel 2 is ``decode_attention``'s
merge (``merge_splits``, same partial layout); with one split kernel 1 writes the output itself.

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

import torch
import triton
import triton.language as tl

from . import launch
from .decode_attention import (
    DEFAULT_SM_COUNT,
    INTERPRET_CONFIG,
    MAX_T,
    DecodeConfig,
    check_decode_options,
    check_decode_tensors,
    decode_config,
    merge_splits,
    pick_splits,
    spill_free,
    split_buffers,
)
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
from .validate import INT32_MAX, check_scale, check_sm_scale, check_tensor, device_guard, slice_extent

# (BLOCK_D, aligned, even D, half dtype) -> config where decode_attention's table does not fit the paged
# kernel. The per-row page offsets (int64, for K and V) cost registers that the contiguous kernel does not
# spend: fp16/bf16 with a ragged D of 33-63 at BLOCK_N=64 compiles to 80 registers + 40 B of stack on sm_90a
# with 4 warps; 8 warps on the same BLOCK_N (the split plan stands) keep it spill-free.
_OVERRIDES = {(64, True, False, True): DecodeConfig(64, 8, 2)}
# Powers of two make the page/slot split a shift and a mask; >= 16 keeps the capacity a multiple of 16 (the
# compiled forms mark it divisible) and of the smallest tile.
MIN_PAGE_SIZE = 16
MIN_BLOCK_N = 16  # the smallest tile any config streams: bounds the split count


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
    bh, b, h, n, lo = split_program(LENS, stride_l, H, CAPACITY, SPLITS, SPLIT_LEN)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    O += bh * D
    PO += pid.to(tl.int64) * D
    if lo < n:
        q = load_row(Q + b * stride_qb + h * stride_qh + offs_d, d_ok, EVEN_D).to(tl.float32)
        q = q * qk_scale  # scores come out in log2 units
        K += h * stride_kh
        V += h * stride_vh
        BT += b * stride_btb
        offs_n = tl.arange(0, BLOCK_N)
        m_i, l_i, acc = decode_softmax_init(BLOCK_N, BLOCK_D)
        if HAS_NEW:
            if n - 1 < lo + SPLIT_LEN:  # this split owns position n-1 (n - 1 >= lo holds here)
                kn, vn, m_i, l_i, acc = append_step(q, KN + b * stride_knb + h * stride_knh + offs_d,
                                                    VN + b * stride_vnb + h * stride_vnh + offs_d, d_ok, l_i, acc,
                                                    EVEN_D)
                # The append: the same dtype, so the pool holds exactly k_new / v_new.
                page = _page_ids(BT, n - 1, n > 0, NUM_PAGES, PAGE_SIZE).to(tl.int64)
                slot = (n - 1) % PAGE_SIZE
                k_row = K + page * stride_kp + slot * stride_kt + offs_d
                v_row = V + page * stride_vp + slot * stride_vt + offs_d
                store_row(k_row, kn, d_ok, EVEN_D)
                store_row(v_row, vn, d_ok, EVEN_D)
        hi = split_end(lo, SPLIT_LEN, n, HAS_NEW)
        cols = lo + offs_n
        pages = _page_ids(BT, cols, cols < hi, NUM_PAGES, PAGE_SIZE)
        for start in range(lo, hi, BLOCK_N):
            cols = start + offs_n
            row_ok = cols < hi
            mask = key_mask(row_ok, d_ok, EVEN_D)
            slots = cols % PAGE_SIZE
            k_rows = pages.to(tl.int64) * stride_kp + slots * stride_kt
            v_rows = pages.to(tl.int64) * stride_vp + slots * stride_vt
            k = tl.load(K + k_rows[:, None] + offs_d[None, :], mask=mask, other=0.0)
            v = tl.load(V + v_rows[:, None] + offs_d[None, :], mask=mask, other=0.0)
            nxt = cols + BLOCK_N  # the next tile's pages, fetched while this tile computes
            pages = _page_ids(BT, nxt, nxt < hi, NUM_PAGES, PAGE_SIZE)
            s = key_scores(q, k, row_ok)  # (BLOCK_N,)
            m_new, alpha, p = decode_softmax_weights(s, m_i)
            l_i, acc = decode_accumulate(p, v, alpha, l_i, acc)
            m_i = m_new
        write_split(O, PO, PLSE, pid, offs_d, d_ok, acc, l_i, m_i, SINGLE)
    else:  # empty split (or an empty row): nothing to load
        write_empty_split(O, PO, PLSE, pid, offs_d, d_ok, BLOCK_D, SINGLE)


def paged_config(d: int, aligned: bool = True, even: bool = True, half: bool = True) -> DecodeConfig:
    """The config a GPU launch uses for head dim ``d``, inputs of that alignment (align_bucket), an even
    (D = BLOCK_D) or ragged head dim and fp16/bf16 (``half``) or fp32 inputs."""
    return _OVERRIDES.get((launch.block_d(d), aligned, even, half), decode_config(d, aligned))


def _check_values(lengths: torch.Tensor, block_tables: torch.Tensor, page_size: int, num_pages: int,
                  has_new: bool) -> None:
    """lengths within [0 or 1, capacity] and the block-table entries rows use within the pool (one sync)."""
    if lengths.numel() == 0 or capturing(lengths):
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
    out = launch.alloc((B, H, D), q.dtype, q.device)
    if B * H == 0:
        return out
    bd = launch.block_d(D)
    if config is None:
        aligned = bool(align_bucket(q, k_pool, v_pool, k_new, v_new))
        config = INTERPRET_CONFIG if interpreter_enabled() else paged_config(D, aligned, D == bd,
                                                                              q.dtype != torch.float32)
    splits, split_len = pick_splits(B * H, capacity, config.block_n, sm_count(q.device, DEFAULT_SM_COUNT),
                                    num_splits)
    single = splits == 1
    if q.is_cuda:
        config = spill_free("_paged_decode_split_kernel", config, q.device,
                            dict(BLOCK_D=bd, BLOCK_N=config.block_n, SINGLE=single, HAS_NEW=has_new, EVEN_D=D == bd,
                                 PAGE_SIZE=page_size, dtype=DTYPE_NAMES[q.dtype]))
    partial, plse = split_buffers(q, splits)
    kn, vn = (k_new, v_new) if has_new else (q, q)  # unused pointers when not appending
    with device_guard(q):  # Triton launches on the current GPU: make it the tensors' one
        _paged_decode_split_kernel[(B * H * splits,)](
            q, k_pool, v_pool, kn, vn, table, lengths, out, partial, plse,
            q.stride(0), q.stride(1), *k_pool.stride()[:3], *v_pool.stride()[:3],
            kn.stride(0), kn.stride(1), vn.stride(0), vn.stride(1), table.stride(0), lengths.stride(0),
            H, capacity, num_pages, D, splits, split_len, sm_scale * LOG2E,
            HAS_NEW=has_new, SINGLE=single, PAGE_SIZE=page_size, BLOCK_N=config.block_n, BLOCK_D=bd,
            num_warps=config.num_warps, num_stages=config.num_stages,
        )
        if not single:
            merge_splits(partial, plse, out)
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
    num_pages, _, page_size, _ = pool.shape
    if num_pages < 1:
        raise ValueError(f"{name}: expected at least one page, got shape {tuple(pool.shape)}")
    if page_size < MIN_PAGE_SIZE or page_size & (page_size - 1):
        raise ValueError(f"{name}: page_size (dim 2) must be a power of two >= {MIN_PAGE_SIZE}, got {page_size}")
    if slice_extent(pool) > INT32_MAX:  # (page_size - 1) * stride_t + D - 1
        raise ValueError(f"{name}: one page spans more than 2**31 elements (strides {tuple(pool.stride())}); "
                         f"the kernel indexes within a page with 32-bit offsets: pass {name}.contiguous()")


def _validate(q, k_pool, v_pool, block_tables, lengths, sm_scale, k_new, v_new, num_splits, check_lengths):
    """Check the public arguments (before anything runs); returns (sm_scale, num_splits) normalised."""
    B, H, D = check_decode_tensors({"q": q, "k_pool": k_pool, "v_pool": v_pool, "block_tables": block_tables,
                                    "lengths": lengths, "k_new": k_new, "v_new": v_new}, "k_pool", "v_pool")
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
    num_splits = check_decode_options(q, lengths, k_new, v_new, num_splits, check_lengths)
    return check_sm_scale(sm_scale, D), num_splits


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
            sig = signature(("Q K V KN VN O", "*" + dt), ("BT LENS", "*i32"), ("PO PLSE", "*fp32"), (_STRIDES, "i32"),
                            ("H CAPACITY NUM_PAGES D SPLITS SPLIT_LEN", "i32"), ("qk_scale", "fp32"))
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
