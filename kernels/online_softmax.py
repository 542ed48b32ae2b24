"""The online-softmax steps of the attention forward and the loop bounds of forward and backward, shared
by the pointer and TMA kernels.

Scores are in log2 units (q.k scaled by sm_scale * log2(e)), so every exponential is an ``exp2``; the
running max ``m`` and sum ``l`` are per query row, fp32.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def key_range(m0, TQ, TK, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(hi_full, hi) for the query block starting at row m0: keys below hi_full are visible to every row
    of the block (no mask work), keys in [hi_full, hi) are the diagonal / ragged tail (masked)."""
    OFF = TK - TQ  # end-aligned causal mask: row i sees cols <= i + OFF
    if CAUSAL:
        hi_full = (m0 + OFF + 1) // BLOCK_N * BLOCK_N  # m0 + OFF + 1 <= TK, so no clamp
        hi = m0 + BLOCK_M + OFF
        if hi > TK:  # not tl.minimum: Triton 3.6's interpreter cannot range() over its result
            hi = TK
    else:
        hi_full = TK // BLOCK_N * BLOCK_N
        hi = TK
    return hi_full, hi


@triton.jit
def query_range(n0, TQ, TK, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(lo, mid) for the causal backward's key block starting at key n0: query rows in [lo, mid) meet the
    block's diagonal (masked), rows >= mid see every key of it; both are multiples of BLOCK_M but mid,
    which is clamped to TQ (mid = TQ when the block reaches past TK)."""
    OFF = TK - TQ  # row i sees keys j <= i + OFF
    lo = n0 - OFF
    if lo < 0:
        lo = 0
    lo = lo // BLOCK_M * BLOCK_M
    mid = n0 + BLOCK_N - 1 - OFF
    if mid < 0:
        mid = 0
    mid = (mid + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    if mid > TQ:
        mid = TQ
    return lo, mid


@triton.jit
def mask_scores(s, offs_m, cols, TK, OFF, CAUSAL: tl.constexpr):
    """Scores of keys past TK (and, if CAUSAL, keys after the end-aligned diagonal row + OFF) -> -inf."""
    keep = cols[None, :] < TK
    if CAUSAL:
        keep = keep & (cols[None, :] <= offs_m[:, None] + OFF)
    return tl.where(keep, s, float("-inf"))


@triton.jit
def softmax_step(s, m_i, l_i, acc, GUARD_EMPTY: tl.constexpr):
    """One online-softmax update for a (BLOCK_M, BLOCK_N) block of scores ``s`` in log2 units.

    Returns (p, m, l, acc): the block's unnormalised probabilities (fp32), the new running max and
    sum, and ``acc`` rescaled to the new max (the caller adds p @ v). GUARD_EMPTY keeps a row with
    no visible key so far (max still -inf, only under a causal mask) from computing -inf - -inf = nan.
    """
    m_new = tl.maximum(m_i, tl.max(s, 1))
    if GUARD_EMPTY:
        m_new = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    return p, m_new, l_i * alpha + tl.sum(p, 1), acc * alpha[:, None]


@triton.jit
def finish_rows(acc, l_i, m_i):
    """The normalised output rows and their log-sum-exp in natural log (m, l are in log2 units)."""
    return acc / l_i[:, None], (m_i + tl.log2(l_i)) * 0.6931471805599453
