"""FLOPs and minimum HBM bytes of each kernel, and the metrics derived from a measured time.

Counting rules (the issue's and the field's conventions, so numbers compare with FlashAttention's):
- attention forward: 4*B*H*Tq*Tk*D (two matmuls, 2 FLOPs per MAC), x0.5 when causal (Tq == Tk);
  backward 2.5x the forward (five matmuls against two), forward+backward 3.5x.
- linear: 2*M*N*K; the epilogue (bias, GELU, residual) is not counted: it is free or it is not,
  and that shows in the time, not in a FLOP count that would flatter a slow epilogue.
- LayerNorm and decode attention are memory-bound: GB/s of the minimum bytes (every input read
  once, every output written once), which is what the roofline floor is made of.
"""

from __future__ import annotations

from typing import Any

from tritongpt.engine.gpu_peaks import DevicePeak

ES = {"float16": 2, "bfloat16": 2, "float32": 4}  # element sizes by dtype name


def _es(dtype: str) -> int:
    try:
        return ES[dtype]
    except KeyError:
        raise ValueError(f"dtype: expected one of {sorted(ES)}, got {dtype!r}") from None


def _pick(direction: str, fwd: float, bwd: float) -> float:
    if direction not in ("fwd", "bwd", "fwd+bwd"):
        raise ValueError(f"direction: expected fwd, bwd or fwd+bwd, got {direction!r}")
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[direction]


def attention_flops(B: int, H: int, T: int, D: int, causal: bool, direction: str = "fwd",
                    Tk: int | None = None) -> float:
    """4*B*H*Tq*Tk*D forward, x0.5 causal (square), x2.5 backward, x3.5 forward+backward."""
    Tk = T if Tk is None else Tk
    f = 4.0 * B * H * T * Tk * D
    if causal:
        if Tk != T:
            raise ValueError("causal FLOPs are counted for Tq == Tk only")
        f *= 0.5
    return _pick(direction, f, 2.5 * f)


def attention_bytes(B: int, H: int, T: int, D: int, dtype: str, direction: str = "fwd") -> float:
    """Minimum HBM bytes: fwd reads q, k, v and writes o (+ the fp32 LSE that backward needs);
    bwd reads q, k, v, o, do, LSE and writes dq, dk, dv."""
    es, n = _es(dtype), B * H * T * D
    fwd = 4 * n * es + B * H * T * 4
    bwd = 8 * n * es + B * H * T * 4
    return _pick(direction, fwd, bwd)


def layer_norm_bytes(M: int, N: int, dtype: str, residual: bool, direction: str = "fwd") -> float:
    """fwd: x (+ residual), weight, bias in; y (+ h = x + residual) and the fp32 mean/rstd out.
    bwd: dy (+ dh), x, weight, mean/rstd in; dx, dweight, dbias out."""
    es, mn = _es(dtype), M * N
    stats = 2 * M * 4
    fwd = (2 + 2 * residual) * mn * es + 2 * N * es + stats
    bwd = (3 + residual) * mn * es + 3 * N * es + stats
    return _pick(direction, fwd, bwd)


def layer_norm_flops(M: int, N: int, direction: str = "fwd") -> float:
    return _pick(direction, 8.0 * M * N, 14.0 * M * N)


def linear_flops(M: int, N: int, K: int, direction: str = "fwd") -> float:
    """2*M*N*K forward; backward computes dx and dW: twice that."""
    return _pick(direction, 2.0 * M * N * K, 4.0 * M * N * K)


def linear_bytes(M: int, N: int, K: int, dtype: str, direction: str = "fwd", residual: bool = False) -> float:
    es = _es(dtype)
    fwd = (M * K + N * K + N + M * N * (1 + residual)) * es
    bwd = (M * N + M * K + N * K) * es + (M * K + N * K + N) * es  # dy, x, W in; dx, dW, db out
    return _pick(direction, fwd, bwd)


def decode_bytes(B: int, H: int, ctx: int, D: int, dtype: str) -> float:
    """K and V at the attended positions, q and out: the whole floor of a decode step's attention."""
    es = _es(dtype)
    return (2 * B * H * ctx * D + 2 * B * H * D) * es


def decode_flops(B: int, H: int, ctx: int, D: int) -> float:
    return 4.0 * B * H * ctx * D


def derive(median_s: float, flops: float | None, nbytes: float | None, bound: str, peak: DevicePeak | None,
           dtype: str | None = None) -> dict[str, Any]:
    """TFLOP/s, GB/s and the fraction of the device's peak for the bound that applies. The
    tensor-core peak in the table is bf16/fp16: an fp32 compute-bound kernel gets no fraction."""
    if median_s <= 0:
        raise ValueError(f"median_s: expected > 0, got {median_s}")
    if bound not in ("compute", "memory"):
        raise ValueError(f"bound: expected compute or memory, got {bound!r}")
    tflops = flops / median_s / 1e12 if flops else None
    gbs = nbytes / median_s / 1e9 if nbytes else None
    frac = None
    if peak is not None:
        if bound == "compute" and tflops is not None and dtype in ("float16", "bfloat16"):
            frac = tflops / peak.bf16_tflops
        elif bound == "memory" and gbs is not None:
            frac = gbs / peak.bandwidth_gbs
    return {"tflops": tflops, "gbs": gbs, "peak_fraction": frac}


def speedups(ours_median: float, baselines: dict[str, float]) -> dict[str, float]:
    """baseline median / our median per baseline: > 1 means ours is faster."""
    return {name: m / ours_median for name, m in baselines.items() if m and ours_median > 0}
