"""``@triton.jit`` device functions that kernels of several modules call: program-id layouts, masked tile
loads and stores, GEMM operand slices, the fused epilogues' activations, and the steps of the decode split
kernels (contiguous and paged). Triton inlines each into its callers, so the callers compile as if the
code were written out in place.

The attention kernels' online-softmax steps and loop bounds have their own module (``online_softmax``).
"""

from __future__ import annotations

import triton
import triton.language as tl

# ----------------------------------------------------------------------------- program ids


@triton.jit
def grouped_pid(pid, num_pid_0, num_pid_1, GROUP: tl.constexpr):
    # Walk GROUP rows of output tiles column by column so neighbouring programs share operand
    # tiles in L2 (Triton matmul tutorial's "grouped ordering").
    num_pid_in_group = GROUP * num_pid_1
    group_id = pid // num_pid_in_group
    first_pid_0 = group_id * GROUP
    group_size = tl.minimum(num_pid_0 - first_pid_0, GROUP)
    pid_0 = first_pid_0 + ((pid % num_pid_in_group) % group_size)
    pid_1 = (pid % num_pid_in_group) // group_size
    return pid_0, pid_1


@triton.jit
def head_program(num_blocks, H, WIDE: tl.constexpr):
    # (block, bh, b, h) of this program in a one-axis grid laid out (batch * head) major and ``num_blocks``
    # blocks minor, the attention and decode kernels' grid (B*H is not held to CUDA's 65535 limit of the other
    # axes). WIDE: bh, b and h in int64, for pointer offsets across the whole batch.
    pid = tl.program_id(0)
    block = pid % num_blocks
    bh = pid // num_blocks
    if WIDE:
        bh = bh.to(tl.int64)
    return block, bh, bh // H, bh % H


# ----------------------------------------------------------------------------- masked tiles


@triton.jit
def load_tile(ptrs, rows, cols, N_ROWS, N_COLS, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr):
    # The (rows, cols) tile at ``ptrs``, zero at rows >= N_ROWS (MASK_ROWS) and columns >= N_COLS
    # (MASK_COLS); unmasked when neither applies.
    if MASK_ROWS and MASK_COLS:
        tile = tl.load(ptrs, mask=(rows[:, None] < N_ROWS) & (cols[None, :] < N_COLS), other=0.0)
    elif MASK_ROWS:
        tile = tl.load(ptrs, mask=rows[:, None] < N_ROWS, other=0.0)
    elif MASK_COLS:
        tile = tl.load(ptrs, mask=cols[None, :] < N_COLS, other=0.0)
    else:
        tile = tl.load(ptrs)
    return tile


@triton.jit
def store_tile(ptrs, value, rows, cols, N_ROWS, N_COLS, MASKED: tl.constexpr):
    # Store a (rows, cols) tile, dropping rows >= N_ROWS and columns >= N_COLS when MASKED.
    if MASKED:
        tl.store(ptrs, value, mask=(rows[:, None] < N_ROWS) & (cols[None, :] < N_COLS))
    else:
        tl.store(ptrs, value)


@triton.jit
def load_tiles(a_ptrs, b_ptrs, rows, cols, N_ROWS, N_COLS, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr):
    # Two tiles of one shape (k and v, q and dO), with load_tile's masks, computed once for both.
    if MASK_ROWS and MASK_COLS:
        mask = (rows[:, None] < N_ROWS) & (cols[None, :] < N_COLS)
        a = tl.load(a_ptrs, mask=mask, other=0.0)
        b = tl.load(b_ptrs, mask=mask, other=0.0)
    elif MASK_ROWS:
        a = tl.load(a_ptrs, mask=rows[:, None] < N_ROWS, other=0.0)
        b = tl.load(b_ptrs, mask=rows[:, None] < N_ROWS, other=0.0)
    elif MASK_COLS:
        a = tl.load(a_ptrs, mask=cols[None, :] < N_COLS, other=0.0)
        b = tl.load(b_ptrs, mask=cols[None, :] < N_COLS, other=0.0)
    else:
        a = tl.load(a_ptrs)
        b = tl.load(b_ptrs)
    return a, b


@triton.jit
def store_tiles(a_ptrs, a, b_ptrs, b, rows, cols, N_ROWS, N_COLS, MASKED: tl.constexpr):
    # Store two tiles of one shape (dk and dv), with store_tile's mask, computed once for both.
    if MASKED:
        mask = (rows[:, None] < N_ROWS) & (cols[None, :] < N_COLS)
        tl.store(a_ptrs, a, mask=mask)
        tl.store(b_ptrs, b, mask=mask)
    else:
        tl.store(a_ptrs, a)
        tl.store(b_ptrs, b)


@triton.jit
def load_kv(K, V, cols, offs_d, stride_kn, stride_kd, stride_vn, stride_vd, TK, D, MASKED: tl.constexpr,
            EVEN_D: tl.constexpr):
    # The attention kernels' (BLOCK_N, BLOCK_D) key and value tiles at keys ``cols``: MASKED (the diagonal or
    # ragged-tail stage) loads keys past TK as zeros, and every stage columns past D unless EVEN_D.
    k_ptrs = K + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_ptrs = V + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd
    return load_tiles(k_ptrs, v_ptrs, cols, offs_d, TK, D, MASKED, MASKED or not EVEN_D)


@triton.jit
def load_row(ptrs, ok, EVEN: tl.constexpr):
    # A vector at ``ptrs``, zero where ``ok`` is false unless EVEN (every lane valid).
    if EVEN:
        row = tl.load(ptrs)
    else:
        row = tl.load(ptrs, mask=ok, other=0.0)
    return row


@triton.jit
def store_row(ptrs, value, ok, EVEN: tl.constexpr):
    # Store a vector, dropping the lanes where ``ok`` is false unless EVEN.
    if EVEN:
        tl.store(ptrs, value)
    else:
        tl.store(ptrs, value, mask=ok)


@triton.jit
def tile_dot(A, B, ra, rb, stride_a, stride_b, C, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
             BLOCK_K: tl.constexpr, EVEN_C: tl.constexpr):
    # (BLOCK_A, BLOCK_B) fp32 tile of A[ra] @ B[rb]^T: rows of two (rows, C) matrices with unit stride along C.
    # int32 offsets from the base pointers (the launcher checks the spans), rebuilt from the row vectors on
    # every step: a loop-carried 2-D offset (or 64-bit pointer) tile would stay live across the callers'
    # loops and cost registers the logit tile needs.
    offs_k = tl.arange(0, BLOCK_K)
    row_a = ra * stride_a
    row_b = rb * stride_b
    acc = tl.zeros((BLOCK_A, BLOCK_B), dtype=tl.float32)
    for k in range(0, tl.cdiv(C, BLOCK_K)):
        kk = k * BLOCK_K + offs_k
        if EVEN_C:
            a = tl.load(A + (row_a[:, None] + kk[None, :]))
            b = tl.load(B + (row_b[None, :] + kk[:, None]))
        else:
            a = tl.load(A + (row_a[:, None] + kk[None, :]), mask=kk[None, :] < C, other=0.0)
            b = tl.load(B + (row_b[None, :] + kk[:, None]), mask=kk[:, None] < C, other=0.0)
        acc = tl.dot(a, b, acc=acc)
    return acc


# ----------------------------------------------------------------------------- activations


@triton.jit
def gelu_tanh(z):
    # gelu_tanh(z) = z * sigmoid(2u), u = sqrt(2/pi) (z + 0.044715 z^3); sigmoid avoids the
    # cancellation in 0.5 (1 + tanh u) for negative z. z^2 is clamped so huge |z| cannot overflow;
    # the exp argument is capped at 80 so e * s * s in the derivative stays finite (s ~ 1e-35).
    # Returns (gelu(z), s, e) with s = sigmoid(2u), e = exp(-2u): the derivative reuses both.
    u = 0.7978845608028654 * z * (1.0 + 0.044715 * tl.minimum(z * z, 1.0e4))
    e = tl.exp(tl.minimum(-2.0 * u, 80.0))
    s = 1.0 / (1.0 + e)
    return z * s, s, e


@triton.jit
def gelu_tanh_grad(z, s, e):
    # gelu'(z) = s + 2 z s (1 - s) du/dz, with s (1 - s) = e s^2: no cancellation at large z.
    du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * tl.minimum(z * z, 1.0e4))
    return s + 2.0 * z * (e * s * s) * du


@triton.jit
def softcap(z, cap):
    # cap * tanh(z / cap). tanh(|u|) = (1 - e) / (1 + e), e = exp(-2|u|) in (0, 1], never overflows; below
    # |u| = 1/8, where 1 - e cancels, an odd Taylor polynomial (next term < 3e-9 relative) keeps fp32 accuracy.
    u = z / cap
    a = tl.abs(u)
    e = tl.exp2(-2.8853900817779268 * a)  # 2 log2(e)
    big = (1.0 - e) / (1.0 + e)
    a2 = a * a
    small = a * (1.0 + a2 * (-0.3333333333333333 + a2 * (0.13333333333333333 + a2 * -0.05396825396825397)))
    t = tl.where(a < 0.125, small, big)
    return cap * tl.where(u < 0, -t, t)


# ----------------------------------------------------------------------------- decode split kernels
# The split kernels of decode_attention (contiguous caches) and paged_decode_attention (page pools) differ
# only in where a key row lives; these are the steps both take, in log2 units (q is pre-scaled by
# sm_scale * log2(e)), with the running max m, sum l and output acc in fp32 over one query row.


@triton.jit
def split_program(LENS, stride_l, H, CAPACITY, SPLITS, SPLIT_LEN):
    # (bh, b, h, n, lo) of this split-kernel program, grid (batch * head, split) with the split minor: row
    # b's length n clamped to [0, CAPACITY] (unchecked lengths stay in bounds) and the split's first position.
    split, bh, b, h = head_program(SPLITS, H, True)
    n = tl.load(LENS + b * stride_l)
    n = tl.minimum(tl.maximum(n, 0), CAPACITY).to(tl.int32)
    return bh, b, h, n, split * SPLIT_LEN


@triton.jit
def decode_softmax_init(BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    # (m, l, acc) before any key: m = -inf and l = 0 as fp32 scalars, acc zeros (BLOCK_D,).
    m_i = tl.max(tl.full([BLOCK_N], float("-inf"), tl.float32), 0)
    l_i = tl.sum(tl.zeros([BLOCK_N], tl.float32), 0)
    acc = tl.zeros([BLOCK_D], tl.float32)
    return m_i, l_i, acc


@triton.jit
def append_step(q, kn_ptrs, vn_ptrs, d_ok, l_i, acc, EVEN_D: tl.constexpr):
    # The appended token's key and value (read from k_new / v_new, never from the cache) as the split's
    # first online-softmax step: its score is the running max, so its p is exp2(0) = 1. Returns
    # (k_new row, v_new row, m, l, acc); the caller stores the rows into its cache.
    kn = load_row(kn_ptrs, d_ok, EVEN_D)
    vn = load_row(vn_ptrs, d_ok, EVEN_D)
    m_i = tl.sum(q * kn.to(tl.float32), 0)
    return kn, vn, m_i, l_i + 1.0, acc + vn.to(tl.float32)


@triton.jit
def split_end(lo, SPLIT_LEN, n, HAS_NEW: tl.constexpr):
    # End of the cached keys this split reads: its chunk clipped to the row's length; with HAS_NEW the
    # last position comes from k_new / v_new, not the cache.
    hi = lo + SPLIT_LEN
    n_cached = n - 1 if HAS_NEW else n
    if hi > n_cached:  # not tl.minimum: Triton 3.6's interpreter cannot range() over its result
        hi = n_cached
    return hi


@triton.jit
def key_mask(row_ok, d_ok, EVEN_D: tl.constexpr):
    # Load mask of a (BLOCK_N, BLOCK_D) key or value tile: keys past the split's end, and columns past D.
    if EVEN_D:
        mask = row_ok[:, None]
    else:
        mask = row_ok[:, None] & d_ok[None, :]
    return mask


@triton.jit
def key_scores(q, k, row_ok):
    # Scores (BLOCK_N,) of one query row against a key tile: broadcast-multiply and sum in fp32 (one row
    # fills no tensor-core tile), -inf past the split's end.
    s = tl.sum(q[None, :] * k.to(tl.float32), 1)
    return tl.where(row_ok, s, float("-inf"))


@triton.jit
def decode_softmax_weights(s, m_i):
    # First half of the online-softmax update with one block of scores: the new running max (finite: every
    # block holds a key before the split's end), the rescale of what came before, and the block's
    # unnormalised probabilities. The caller loads the value tile, then calls decode_accumulate.
    m_new = tl.maximum(m_i, tl.max(s, 0))
    return m_new, tl.exp2(m_i - m_new), tl.exp2(s - m_new)


@triton.jit
def decode_accumulate(p, v, alpha, l_i, acc):
    # Second half: the running sum and output, rescaled by alpha, plus the block's p and p @ v.
    return l_i * alpha + tl.sum(p, 0), acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), 0)


@triton.jit
def write_split(O, PO, PLSE, pid, offs_d, d_ok, acc, l_i, m_i, SINGLE: tl.constexpr):
    # A split's result, normalised (l >= 1: the split holds at least one key, whose p is exp2(0)): the output
    # row itself when it is the only split (SINGLE), else its fp32 partial output and base-2 log-sum-exp for
    # the merge kernel. O, PO: this program's rows; PLSE + pid its log-sum-exp.
    out = acc / l_i
    if SINGLE:
        tl.store(O + offs_d, out.to(O.dtype.element_ty), mask=d_ok)
    else:
        tl.store(PO + offs_d, out, mask=d_ok)
        tl.store(PLSE + pid, m_i + tl.log2(l_i))


@triton.jit
def write_empty_split(O, PO, PLSE, pid, offs_d, d_ok, BLOCK_D: tl.constexpr, SINGLE: tl.constexpr):
    # A split with no key (it starts at or past the row's length, or the row is empty): zeros, and
    # log-sum-exp -inf, which the merge weighs 0.
    if SINGLE:
        tl.store(O + offs_d, tl.zeros([BLOCK_D], tl.float32).to(O.dtype.element_ty), mask=d_ok)
    else:
        tl.store(PO + offs_d, tl.zeros([BLOCK_D], tl.float32), mask=d_ok)
        tl.store(PLSE + pid, float("-inf"))
