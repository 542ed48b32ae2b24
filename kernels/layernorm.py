"""LayerNorm with an optional fused residual add: Triton forward and backward kernels.

Algorithm (Ba et al. 2016, as ``torch.nn.functional.layer_norm`` over the last dimension):
``h = x + residual`` (optional), ``y = (h - mean) * rstd * weight + bias`` with
``rstd = 1 / sqrt(var + eps)`` and the biased variance, statistics in fp32.

Forward, one row per program:
- ``N <= MAX_FUSED_N`` (8192): the whole row lives in registers. Two passes over registers: the
  mean, then the variance of the centred row (never E[x^2] - E[x]^2). Both passes work on the
  row shifted by its first element, which keeps rows with a large common offset (mean 1e4,
  std 1) exact in the subtraction and makes constant rows give ``y = bias`` exactly.
- Larger rows: a looped variant. Pass 1 reads the row in chunks and merges per-chunk (mean,
  centred sum of squares) with Chan's parallel formula (stable, one read); pass 2 normalises.
- With a residual, ``h`` is formed in fp32, rounded once to x's dtype (the same value as torch's
  ``x + residual``), stored, and the normalisation uses that rounded ``h``.
- ``mean`` and ``rstd`` (fp32, shape (M,)) are saved for the backward.

Backward: a persistent grid of G programs (a few per SM); program p handles rows p, p+G, ...
``dx = rstd * (w*dy - xhat * mean(xhat*w*dy) - mean(w*dy)) (+ grad_h)``, and accumulates
``dw = sum(dy * xhat)``, ``db = sum(dy)`` in fp32 registers, writing (G, N) fp32 partials that
``torch.sum(0)`` reduces. No atomics, no locks, deterministic. Rows above MAX_FUSED_N_BWD use a
looped variant: per-row projections first, then column chunks outer / rows inner so the
partials still stay in registers (x and dy are read twice; the second read mostly hits L2).

Scope and limits:
- x: fp16, bf16 or fp32, any leading dims, last dim contiguous. Leading dims that collapse to
  one row stride (e.g. a slice of a wider tensor) are used without a copy; others are copied.
- weight / bias: 1-D of size N, each either x's dtype or fp32 (mixed precision), or None (then
  1 / 0). residual: same shape and dtype as x. y and h come back contiguous in x's dtype; the
  gradients come back in the dtype of their input.
- Any N >= 1. Every shipped config compiles spill-free for sm_80, sm_89 and sm_90a (registers
  do not grow with N on the looped paths; checked up to N = 65536).
- Block sizes come from a deterministic heuristic rather than autotuning: the kernel is
  bandwidth-bound with one obvious tile (the row) and num_warps follows BLOCK_N.
- On a GPU ``rsqrt`` and ``/`` are the fast approximate forms (a few ulp in fp32).
- Not yet timed on a GPU: the num_warps / backward-grid heuristics are reasoned, not measured.
"""


import torch
import triton
import triton.language as tl

from . import launch
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, signature
from .validate import check_device, check_float, check_tensor, device_guard

# Forward: largest row kept whole in registers. 16384 (16 warps, 128 registers/thread cap) spilled
# 8 B on sm_90a once pointers carry their 16-byte alignment hints, so larger rows take the loop.
MAX_FUSED_N = 8192
MAX_FUSED_N_BWD = 4096  # backward keeps x, dy, w and two fp32 accumulators per element
LOOP_BLOCK_N, LOOP_NUM_WARPS = 4096, 8  # chunk of the looped forward
LOOP_BLOCK_N_BWD, LOOP_NUM_WARPS_BWD = 2048, 16  # looped backward: 4096 x 8 warps spills on sm_90a


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _add_residual(x, R, H, row, cols, mask, stride_r, stride_h):
    # h = x + residual formed in fp32, rounded once to h's dtype (the same value as torch's x + residual) and
    # stored; the normalisation goes on with that rounded h, returned in fp32.
    r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
    h = (x + r).to(H.dtype.element_ty)
    tl.store(H + row * stride_h + cols, h, mask=mask)
    return h.to(tl.float32)


@triton.jit
def _normalised_row(X, DY, MEAN, RSTD, row, cols, m, valid, stride_x, stride_dy):
    # One row of the backward: xhat = (x - mean) * rstd (0 where masked), dy in fp32, and rstd.
    x = tl.load(X + row * stride_x + cols, mask=m, other=0.0).to(tl.float32)
    dy = tl.load(DY + row * stride_dy + cols, mask=m, other=0.0).to(tl.float32)
    mean = tl.load(MEAN + row, mask=valid, other=0.0)
    rstd = tl.load(RSTD + row, mask=valid, other=0.0)
    return tl.where(m, (x - mean) * rstd, 0.0), dy, rstd


@triton.jit
def _store_dx(DX, DH, row, cols, m, stride_dx, stride_dh, xhat, wdy, c1, c2, rstd, HAS_DRES: tl.constexpr):
    # dx = rstd * (w*dy - xhat * c1 - c2) (+ the gradient reaching h), with c1 = mean(xhat*w*dy), c2 = mean(w*dy).
    dx = (wdy - (xhat * c1 + c2)) * rstd
    if HAS_DRES:
        dx += tl.load(DH + row * stride_dh + cols, mask=m, other=0.0).to(tl.float32)
    tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=m)


@triton.jit
def _ln_fwd_kernel(
    X,  # (M, N) input rows, row stride stride_x
    R,  # (M, N) residual rows (read when HAS_RESIDUAL)
    W,  # (N,) weight (read when HAS_WEIGHT)
    B,  # (N,) bias (read when HAS_BIAS)
    Y,  # (M, N) output
    H,  # (M, N) output x + residual (written when HAS_RESIDUAL)
    MEAN,  # (M,) fp32
    RSTD,  # (M,) fp32
    stride_x,
    stride_r,
    stride_y,
    stride_h,
    M,
    N,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ROWS_PER_PROG: tl.constexpr,
):
    # Each program normalises ROWS_PER_PROG consecutive rows, one at a time, with the weight and
    # bias loaded once: re-loading them per row would add 2/3 of the row's own traffic (fp16).
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b = tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)
    first = tl.program_id(0).to(tl.int64) * ROWS_PER_PROG
    for i in range(ROWS_PER_PROG):
        row = first + i
        row_ok = row < M
        # `cols < N` with the row bound folded in (the interpreter mishandles `mask & scalar`).
        mask = cols < tl.where(row_ok, N, 0)
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        # Shift by the row's first element: exact for offset rows, and constant rows centre to 0.
        x0 = tl.load(X + row * stride_x, mask=row_ok, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            x = _add_residual(x, R, H, row, cols, mask, stride_r, stride_h)
            r0 = tl.load(R + row * stride_r, mask=row_ok, other=0.0).to(tl.float32)
            x0 = (x0 + r0).to(H.dtype.element_ty).to(tl.float32)
        d = tl.where(mask, x - x0, 0.0)
        mean_d = tl.sum(d, axis=0) / N
        c = tl.where(mask, d - mean_d, 0.0)
        var = tl.sum(c * c, axis=0) / N
        rstd = tl.rsqrt(var + eps)
        tl.store(MEAN + row, x0 + mean_d, mask=row_ok)
        tl.store(RSTD + row, rstd, mask=row_ok)
        y = c * rstd
        if HAS_WEIGHT:
            y = y * w
        if HAS_BIAS:
            y = y + b
        tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _ln_fwd_looped_kernel(
    X,  # (M, N) input rows, row stride stride_x
    R,  # (M, N) residual rows (read when HAS_RESIDUAL)
    W,  # (N,) weight (read when HAS_WEIGHT)
    B,  # (N,) bias (read when HAS_BIAS)
    Y,  # (M, N) output
    H,  # (M, N) output x + residual (written when HAS_RESIDUAL)
    MEAN,  # (M,) fp32
    RSTD,  # (M,) fp32
    stride_x,
    stride_r,
    stride_y,
    stride_h,
    N,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    x0 = tl.load(X + row * stride_x).to(tl.float32)
    if HAS_RESIDUAL:
        x0 = (x0 + tl.load(R + row * stride_r).to(tl.float32)).to(H.dtype.element_ty).to(tl.float32)
    # Pass 1: per-chunk mean and centred sum of squares, merged with Chan's formula.
    count = 0.0
    mean_d = 0.0
    m2 = 0.0
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = cols < N
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            x = _add_residual(x, R, H, row, cols, mask, stride_r, stride_h)
        d = tl.where(mask, x - x0, 0.0)
        n_b = tl.minimum(N - start, BLOCK_N).to(tl.float32)
        mean_b = tl.sum(d, axis=0) / n_b
        c = tl.where(mask, d - mean_b, 0.0)
        m2_b = tl.sum(c * c, axis=0)
        n_ab = count + n_b
        delta = mean_b - mean_d
        mean_d = mean_d + delta * (n_b / n_ab)
        m2 = m2 + m2_b + delta * delta * (count * n_b / n_ab)
        count = n_ab
    rstd = tl.rsqrt(m2 / N + eps)
    tl.store(MEAN + row, x0 + mean_d)
    tl.store(RSTD + row, rstd)
    if HAS_RESIDUAL:
        tl.debug_barrier()  # pass 2 reads h back; make this program's stores visible to all its threads
    # Pass 2: normalise.
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = cols < N
        if HAS_RESIDUAL:
            x = tl.load(H + row * stride_h + cols, mask=mask, other=0.0).to(tl.float32)
        else:
            x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        y = ((x - x0) - mean_d) * rstd
        if HAS_WEIGHT:
            y = y * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            y = y + tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _ln_bwd_kernel(
    DY,  # (M, N) grad of y, row stride stride_dy
    DH,  # (M, N) grad of h (read when HAS_DRES)
    X,  # (M, N) normalised input (h when a residual was fused)
    W,  # (N,) weight (read when HAS_WEIGHT)
    MEAN,  # (M,) fp32
    RSTD,  # (M,) fp32
    DX,  # (M, N) output grad of x (and of the residual)
    DW,  # (G, N) fp32 partial sums of dweight (written when COMPUTE_DW)
    DB,  # (G, N) fp32 partial sums of dbias (written when COMPUTE_DB)
    stride_dy,
    stride_dh,
    stride_x,
    stride_dx,
    M,
    N,
    rows_per_prog,
    HAS_DRES: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    COMPUTE_DW: tl.constexpr,
    COMPUTE_DB: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    num_progs = tl.num_programs(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    # Rows pid, pid + G, ...; a trailing row >= M is fully masked and contributes zeros.
    for i in range(0, rows_per_prog):
        row = pid + i * num_progs
        valid = row < M
        # Not `mask & valid`: Triton 3.9's interpreter broadcasts that into an int32 mask (2026-11).
        m = cols < tl.where(valid, N, 0)
        xhat, dy, rstd = _normalised_row(X, DY, MEAN, RSTD, row, cols, m, valid, stride_x, stride_dy)
        if HAS_WEIGHT:
            wdy = w * dy
        else:
            wdy = dy
        c1 = tl.sum(xhat * wdy, axis=0) / N
        c2 = tl.sum(wdy, axis=0) / N
        _store_dx(DX, DH, row, cols, m, stride_dx, stride_dh, xhat, wdy, c1, c2, rstd, HAS_DRES)
        if COMPUTE_DW:
            dw_acc += dy * xhat
        if COMPUTE_DB:
            db_acc += dy
    if COMPUTE_DW:
        tl.store(DW + pid * N + cols, dw_acc, mask=mask)
    if COMPUTE_DB:
        tl.store(DB + pid * N + cols, db_acc, mask=mask)


@triton.jit
def _ln_bwd_looped_kernel(
    DY,  # (M, N) grad of y, row stride stride_dy
    DH,  # (M, N) grad of h (read when HAS_DRES)
    X,  # (M, N) normalised input (h when a residual was fused)
    W,  # (N,) weight (read when HAS_WEIGHT)
    MEAN,  # (M,) fp32
    RSTD,  # (M,) fp32
    PROJ,  # (M, 2) fp32 scratch: mean(xhat*w*dy), mean(w*dy) per row
    DX,  # (M, N) output grad of x (and of the residual)
    DW,  # (G, N) fp32 partial sums of dweight (written when COMPUTE_DW)
    DB,  # (G, N) fp32 partial sums of dbias (written when COMPUTE_DB)
    stride_dy,
    stride_dh,
    stride_x,
    stride_dx,
    M,
    N,
    rows_per_prog,
    HAS_DRES: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    COMPUTE_DW: tl.constexpr,
    COMPUTE_DB: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    num_progs = tl.num_programs(0).to(tl.int64)
    # Phase 1: the two row projections, chunk by chunk.
    for i in range(0, rows_per_prog):
        row = pid + i * num_progs
        valid = row < M
        mean = tl.load(MEAN + row, mask=valid, other=0.0)
        rstd = tl.load(RSTD + row, mask=valid, other=0.0)
        acc1 = tl.zeros([BLOCK_N], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK_N], dtype=tl.float32)
        for start in range(0, N, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            m = cols < tl.where(valid, N, 0)
            x = tl.load(X + row * stride_x + cols, mask=m, other=0.0).to(tl.float32)
            dy = tl.load(DY + row * stride_dy + cols, mask=m, other=0.0).to(tl.float32)
            xhat = tl.where(m, (x - mean) * rstd, 0.0)
            if HAS_WEIGHT:
                dy = dy * tl.load(W + cols, mask=m, other=0.0).to(tl.float32)
            acc1 += xhat * dy
            acc2 += dy
        tl.store(PROJ + 2 * row, tl.sum(acc1, axis=0) / N, mask=valid)
        tl.store(PROJ + 2 * row + 1, tl.sum(acc2, axis=0) / N, mask=valid)
    tl.debug_barrier()  # phase 2 reads PROJ written by other threads of this program
    # Phase 2: column chunks outer, rows inner, so dw/db partials stay in registers.
    for start in range(0, N, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        mask = cols < N
        if HAS_WEIGHT:
            w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        db_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        for i in range(0, rows_per_prog):
            row = pid + i * num_progs
            valid = row < M
            m = cols < tl.where(valid, N, 0)
            xhat, dy, rstd = _normalised_row(X, DY, MEAN, RSTD, row, cols, m, valid, stride_x, stride_dy)
            c1 = tl.load(PROJ + 2 * row, mask=valid, other=0.0)
            c2 = tl.load(PROJ + 2 * row + 1, mask=valid, other=0.0)
            if HAS_WEIGHT:
                wdy = w * dy
            else:
                wdy = dy
            _store_dx(DX, DH, row, cols, m, stride_dx, stride_dh, xhat, wdy, c1, c2, rstd, HAS_DRES)
            if COMPUTE_DW:
                dw_acc += dy * xhat
            if COMPUTE_DB:
                db_acc += dy
        if COMPUTE_DW:
            tl.store(DW + pid * N + cols, dw_acc, mask=mask)
        if COMPUTE_DB:
            tl.store(DB + pid * N + cols, db_acc, mask=mask)


# ----------------------------------------------------------------------------------------------
# Launch heuristics
# ----------------------------------------------------------------------------------------------


def _fwd_config(n: int) -> tuple[bool, int, int]:
    """(looped, BLOCK_N, num_warps) for the forward at hidden size n."""
    if n > MAX_FUSED_N:
        return True, LOOP_BLOCK_N, LOOP_NUM_WARPS
    block = max(16, triton.next_power_of_2(n))
    # ~8 elements (16 B of fp16) per thread keeps loads vectorised and registers low.
    return False, block, min(16, max(1, block // 256))


def _bwd_config(n: int) -> tuple[bool, int, int]:
    """(looped, BLOCK_N, num_warps) for the backward at hidden size n."""
    if n > MAX_FUSED_N_BWD:
        return True, LOOP_BLOCK_N_BWD, LOOP_NUM_WARPS_BWD
    block = max(16, triton.next_power_of_2(n))
    # ~4 elements per thread: at 8 (the forward's choice) sm_90a spills at BLOCK_N=2048, 8 warps.
    return False, block, min(16, max(1, block // 128))


def _bwd_grid(m: int, num_warps: int, device: torch.device) -> int:
    """Number of persistent backward programs.

    Enough warps per SM to hide latency (~32), but no more programs than rows: each program
    writes one fp32 row of dw/db partials, and that traffic grows with the grid.
    """
    if interpreter_enabled() or device.type != "cuda":
        return max(1, min(m, 4))  # the interpreter runs programs one after another
    sms = launch.sm_count(device)
    return max(1, min(m, sms * max(1, 32 // num_warps)))


def _rows_per_program(m: int, num_warps: int, device: torch.device) -> int:
    """Rows each forward program handles (a power of two, so few variants compile): enough
    programs to fill the GPU (as many as the backward's persistent grid), each amortising its
    weight/bias load over up to 64 rows."""
    programs = _bwd_grid(m, num_warps, device)
    return min(64, triton.next_power_of_2(triton.cdiv(m, programs)))


def _as_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """(..., n) -> (M, n) with unit column stride; a view when the leading dims allow one."""
    if n > 1 and t.stride(-1) != 1:
        t = t.contiguous()
    try:
        return t.view(-1, n)
    except RuntimeError:  # leading dims do not collapse to one stride (e.g. a transposed view)
        return t.reshape(-1, n)


def _row_stride(t: torch.Tensor) -> int:
    return t.stride(0) if t.shape[0] > 1 else t.shape[1]


# ----------------------------------------------------------------------------------------------
# Host launchers as custom ops (opaque to torch.compile)
# ----------------------------------------------------------------------------------------------


@torch.library.custom_op(
    "tritongpt::layer_norm_fwd",
    mutates_args=(),
    schema="(Tensor x, Tensor? weight, Tensor? bias, Tensor? residual, float eps)"
    " -> (Tensor, Tensor, Tensor, Tensor)",
)
def _layer_norm_fwd(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (y, h, mean, rstd); h is empty when residual is None."""
    n = x.shape[-1]
    x2 = _as_rows(x, n)
    m = x2.shape[0]
    y = launch.alloc(x.shape, dtype=x.dtype, device=x.device)
    h = launch.alloc(x.shape if residual is not None else (0,), dtype=x.dtype, device=x.device)
    mean = launch.alloc(m, dtype=torch.float32, device=x.device)
    rstd = launch.alloc(m, dtype=torch.float32, device=x.device)
    if m == 0:
        return y, h, mean, rstd
    r2 = _as_rows(residual, n) if residual is not None else x2
    h2 = h.view(-1, n) if residual is not None else y.view(-1, n)
    y2 = y.view(-1, n)
    looped, block, warps = _fwd_config(n)
    ptrs = (x2, r2, weight if weight is not None else x2, bias if bias is not None else x2, y2, h2, mean, rstd)
    flags = dict(HAS_RESIDUAL=residual is not None, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None)
    with device_guard(x):
        if looped:
            _ln_fwd_looped_kernel[(m,)](
                *ptrs, _row_stride(x2), _row_stride(r2), n, n, n, eps, **flags, BLOCK_N=block, num_warps=warps,
            )  # fmt: skip
        else:
            rows = _rows_per_program(m, warps, x.device)
            _ln_fwd_kernel[(triton.cdiv(m, rows),)](
                *ptrs, _row_stride(x2), _row_stride(r2), n, n, m, n, eps, **flags, BLOCK_N=block,
                ROWS_PER_PROG=rows, num_warps=warps,
            )  # fmt: skip
    return y, h, mean, rstd


@_layer_norm_fwd.register_fake
def _(x, weight, bias, residual, eps):
    m = x.numel() // x.shape[-1] if x.shape[-1] else 0
    h = x.new_empty(x.shape if residual is not None else (0,))
    stats = x.new_empty((m,), dtype=torch.float32)
    return x.new_empty(x.shape), h, stats, stats.new_empty((m,))


@torch.library.custom_op(
    "tritongpt::layer_norm_bwd",
    mutates_args=(),
    schema="(Tensor dy, Tensor? dh, Tensor x, Tensor? weight, Tensor? bias, Tensor mean, Tensor rstd,"
    " bool need_dweight=True, bool need_dbias=True) -> (Tensor, Tensor, Tensor)",
)
def _layer_norm_bwd(
    dy: torch.Tensor,
    dh: torch.Tensor | None,
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    need_dweight: bool = True,
    need_dbias: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (dx, dweight, dbias); x is the normalised input (h when a residual was fused).

    dweight / dbias are empty when weight / bias is None or their gradient is not needed (then
    their partial sums are neither computed nor written).
    """
    need_dweight = need_dweight and weight is not None
    need_dbias = need_dbias and bias is not None
    n = x.shape[-1]
    x2 = _as_rows(x, n)
    dy2 = _as_rows(dy, n)
    m = x2.shape[0]
    dx = launch.alloc(x.shape, dtype=x.dtype, device=x.device)
    if m == 0:  # no rows: zero parameter grads (empty when the parameter is None or not needed)
        return dx, *(
            x.new_zeros(p.shape if need else (0,), dtype=(p if p is not None else x).dtype)
            for p, need in ((weight, need_dweight), (bias, need_dbias))
        )
    dh2 = _as_rows(dh, n) if dh is not None else dy2
    dx2 = dx.view(-1, n)
    looped, block, warps = _bwd_config(n)
    grid = _bwd_grid(m, warps, x.device)
    rows_per_prog = triton.cdiv(m, grid)
    dw_part = launch.alloc((grid, n), dtype=torch.float32, device=x.device) if need_dweight else mean
    db_part = launch.alloc((grid, n), dtype=torch.float32, device=x.device) if need_dbias else mean
    common = dict(
        HAS_DRES=dh is not None, HAS_WEIGHT=weight is not None, COMPUTE_DW=need_dweight,
        COMPUTE_DB=need_dbias, BLOCK_N=block, num_warps=warps,
    )  # fmt: skip
    strides = (_row_stride(dy2), _row_stride(dh2), _row_stride(x2), n, m, n, rows_per_prog)
    w_arg = weight if weight is not None else x2
    with device_guard(x):
        if looped:
            proj = launch.alloc((m, 2), dtype=torch.float32, device=x.device)
            _ln_bwd_looped_kernel[(grid,)](
                dy2, dh2, x2, w_arg, mean, rstd, proj, dx2, dw_part, db_part, *strides, **common
            )
        else:
            _ln_bwd_kernel[(grid,)](dy2, dh2, x2, w_arg, mean, rstd, dx2, dw_part, db_part, *strides, **common)
        dw_out = dw_part.sum(0).to(weight.dtype) if need_dweight else x.new_empty(0)
        db_out = db_part.sum(0).to(bias.dtype) if need_dbias else x.new_empty(0)
    return dx, dw_out, db_out


@_layer_norm_bwd.register_fake
def _(dy, dh, x, weight, bias, mean, rstd, need_dweight=True, need_dbias=True):
    n = x.shape[-1]
    need_dw, need_db = need_dweight and weight is not None, need_dbias and bias is not None
    dw = x.new_empty((n,) if need_dw else (0,), dtype=weight.dtype if weight is not None else x.dtype)
    db = x.new_empty((n,) if need_db else (0,), dtype=bias.dtype if bias is not None else x.dtype)
    return x.new_empty(x.shape), dw, db


def _setup_context(ctx, inputs, output):
    x, weight, bias, residual, _eps = inputs
    _y, h, mean, rstd = output
    ctx.has_residual = residual is not None
    ctx.save_for_backward(h if residual is not None else x, weight, bias, mean, rstd)


def _backward(ctx, dy, dh, _dmean, _drstd):
    xh, weight, bias, mean, rstd = ctx.saved_tensors
    if dy is None:
        dy = torch.zeros_like(xh)
    dh = dh if ctx.has_residual else None
    need_dw, need_db = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    dx, dw, db = torch.ops.tritongpt.layer_norm_bwd(dy, dh, xh, weight, bias, mean, rstd, need_dw, need_db)
    return (
        dx,
        dw if weight is not None and need_dw else None,
        db if bias is not None and need_db else None,
        dx if ctx.has_residual else None,
        None,
    )


torch.library.register_autograd("tritongpt::layer_norm_fwd", _backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def _check_param(name: str, p: object, x: torch.Tensor) -> None:
    check_tensor(name, p, ndim=1)
    assert isinstance(p, torch.Tensor)
    if p.shape[0] != x.shape[-1]:
        raise ValueError(
            f"{name}: expected shape ({x.shape[-1]},) to match x's last dim, got {tuple(p.shape)}"
        )
    if p.dtype not in (x.dtype, torch.float32):
        raise TypeError(f"{name}: dtype must be x's dtype ({x.dtype}) or torch.float32, got {p.dtype}")
    if p.device != x.device:
        raise ValueError(f"{name}: device {p.device} does not match x device {x.device}")


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm over the last dim of ``x``, optionally fused with ``h = x + residual``.

    Returns ``y`` when ``residual`` is None, else ``(y, h)`` with ``y = layer_norm(h)``.
    x: fp16 / bf16 / fp32 (..., N); weight / bias: (N,) in x's dtype or fp32, or None;
    residual: same shape and dtype as x. Differentiable in all tensor arguments.
    """
    check_tensor("x", x)
    if x.dim() == 0 or x.shape[-1] < 1:
        raise ValueError(f"x: the last (normalised) dimension must be >= 1, got shape {tuple(x.shape)}")
    if weight is not None:
        _check_param("weight", weight, x)
    if bias is not None:
        _check_param("bias", bias, x)
    if residual is not None:
        check_tensor("residual", residual)
        if residual.shape != x.shape:
            raise ValueError(f"residual: expected shape {tuple(x.shape)} (x's), got {tuple(residual.shape)}")
        if residual.dtype != x.dtype:
            raise TypeError(f"residual: dtype {residual.dtype} does not match x dtype {x.dtype}")
        check_device("residual", residual)
        if residual.device != x.device:
            raise ValueError(f"residual: device {residual.device} does not match x device {x.device}")
    if not isinstance(eps, torch.SymFloat):  # symbolic under torch.compile(dynamic=True): no value to check
        eps = check_float("eps", eps, positive=True)
        if eps < 1.2e-38:  # below fp32's smallest normal the kernel would see 0 (or a denormal)
            raise ValueError(f"eps: {eps} is below fp32's range; use at least 1.2e-38")
    y, h, _mean, _rstd = torch.ops.tritongpt.layer_norm_fwd(x, weight, bias, residual, float(eps))
    return y if residual is None else (y, h)


# ----------------------------------------------------------------------------------------------
# Ahead-of-time variants
# ----------------------------------------------------------------------------------------------


def variants() -> list[KernelVariant]:
    """Every block size the launchers can pick (fp16, all features on), plus dtype variants."""
    out: list[KernelVariant] = []
    fwd_ints = ["stride_x", "stride_r", "stride_y", "stride_h", "N"]
    bwd_ints = ["stride_dy", "stride_dh", "stride_x", "stride_dx", "M", "N", "rows_per_prog"]

    def fwd(n: int, dt: str, wdt: str) -> KernelVariant:
        looped, block, warps = _fwd_config(n)
        fn = _ln_fwd_looped_kernel if looped else _ln_fwd_kernel
        ptr = {k: f"*{dt}" for k in ("X", "R", "Y", "H")} | {"W": f"*{wdt}", "B": f"*{wdt}"}
        ints = fwd_ints if looped else fwd_ints[:-1] + ["M", "N"]  # in argument order
        sig = signature(*((k, ptr.get(k, "*fp32")) for k in ["X", "R", "W", "B", "Y", "H", "MEAN", "RSTD"]),
                        (ints, "i32"), ("eps", "fp32"))
        cx = dict(HAS_RESIDUAL=True, HAS_WEIGHT=True, HAS_BIAS=True, BLOCK_N=block)
        if not looped:
            cx["ROWS_PER_PROG"] = 16
        name = f"layer_norm_fwd{'_looped' if looped else ''}[N={n},BN={block},{dt},w={wdt}]"
        return KernelVariant(
            name,
            fn,
            sig,
            cx,
            num_warps=warps,
            num_stages=1,
            archs=(80, 89, 90),
            tags={"N": n, "looped": looped},
        )

    def bwd(n: int, dt: str, wdt: str) -> KernelVariant:
        looped, block, warps = _bwd_config(n)
        fn = _ln_bwd_looped_kernel if looped else _ln_bwd_kernel
        ptr = {k: f"*{dt}" for k in ("DY", "DH", "X", "DX")} | {"W": f"*{wdt}"}
        names = ["DY", "DH", "X", "W", "MEAN", "RSTD"] + (["PROJ"] if looped else []) + ["DX", "DW", "DB"]
        sig = signature(*((k, ptr.get(k, "*fp32")) for k in names), (bwd_ints, "i32"))
        cx = dict(HAS_DRES=True, HAS_WEIGHT=True, COMPUTE_DW=True, COMPUTE_DB=True, BLOCK_N=block)
        name = f"layer_norm_bwd{'_looped' if looped else ''}[N={n},BN={block},{dt},w={wdt}]"
        return KernelVariant(
            name,
            fn,
            sig,
            cx,
            num_warps=warps,
            num_stages=1,
            archs=(80, 89, 90),
            tags={"N": n, "looped": looped},
        )

    # One representative N per block size the heuristics choose, then the looped path.
    # (N=768, GPT-2, stands for BLOCK_N=1024.)
    sizes = [16, 32, 64, 128, 256, 512, 768, 2048, 4096]
    for n in sizes + [8192, 16384, 65536]:  # then looped
        out.append(fwd(n, "fp16", "fp16"))
    for n in sizes + [8192, 65536]:  # both looped
        out.append(bwd(n, "fp16", "fp16"))
    # Other dtype paths (fp32 rows use twice the registers of fp16 ones on load).
    for n in (768, 8192, 16384, 65536):
        out.append(fwd(n, "fp32", "fp32"))
        out.append(fwd(n, "bf16", "fp32"))
    for n in (768, 4096, 65536):
        out.append(bwd(n, "fp32", "fp32"))
        out.append(bwd(n, "bf16", "fp32"))
    return out
