"""Counted-traffic cases for the attention forward, with the K/V re-read formula of its tiling.

Tiling: one program per (BLOCK_M query rows, batch, head); it streams the keys it may see in
BLOCK_N blocks, loading each K and V block in full (the causal mask is applied to scores, not to
loads; only rows past Tk are masked off). So, per (batch, head), with nq = ceil(Tq / BLOCK_M):

    non-causal:  K rows read = nq * Tk                      (V the same)
    causal:      K rows read = sum_i min(ceil(hi_i / BLOCK_N) * BLOCK_N, Tk),
                 hi_i = min((i + 1) * BLOCK_M, Tq) + (Tk - Tq)   (the last key query block i sees, +1)

Q is read once, O and the fp32 row log-sum-exp written once; nothing of size Tq x Tk is ever
written (any write outside O and LSE fails the case).
"""

from __future__ import annotations

from typing import Any

import torch

from .traffic import TensorTraffic
from .traffic_case import Case


def kv_rows_read(tq: int, tk: int, block_m: int, block_n: int, causal: bool) -> int:
    nq = -(-tq // block_m)
    if not causal:
        return nq * tk
    total = 0
    for i in range(nq):
        hi = min((i + 1) * block_m, tq) + (tk - tq)
        total += min(-(-hi // block_n) * block_n, tk)
    return total


def _rules(per: dict[str, TensorTraffic], p: dict[str, Any]) -> list[str]:
    out = []
    if per["<unnamed>"].written or per["<unnamed>"].read:
        out.append(f"touches {per['<unnamed>'].written + per['<unnamed>'].read} bytes outside q, k, v, out, lse "
                   "(a Tq x Tk buffer?)")
    expect = p["kv_rows"] * p["row_bytes"]
    for name in ("in:k", "in:v"):
        if per[name].read != expect:
            out.append(f"{name[3:]} read {per[name].read} bytes, the tiling formula gives {expect}")
    if per["in:q"].read != per["in:q"].unique_read:
        out.append(f"q read {per['in:q'].read / per['in:q'].unique_read:.2f} times, expected once")
    for name in ("out:out", "out:lse"):
        if per[name].written != per[name].unique_written:
            out.append(f"{name[4:]} written more than once")
    return out


def _case(b: int, h: int, tq: int, tk: int, d: int, causal: bool, dtype=torch.float16) -> Case:
    from tritongpt.kernels.attention_config import TunedConfig
    from tritongpt.kernels.flash_attention import attention_fwd_launch

    bm, bn = 64, 32  # stated here so the formula is checkable; the interpreter's default too
    params = {"kv_rows": b * h * kv_rows_read(tq, tk, bm, bn, causal), "row_bytes": d * torch.finfo(dtype).bits // 8}

    def setup():
        return {n: torch.randn(b, h, t, d, dtype=dtype) for n, t in (("q", tq), ("k", tk), ("v", tk))}

    def run(t):
        out, lse = attention_fwd_launch(t["q"], t["k"], t["v"], causal, d ** -0.5, config=TunedConfig(bm, bn, 4, 1))
        return {"out": out, "lse": lse}

    ratio_flops = 0.5 if causal else 1.0
    return Case(f"attention_fwd[B={b},H={h},Tq={tq},Tk={tk},D={d},{'causal' if causal else 'full'},"
                f"BM={bm},BN={bn}]", "attention", setup, run,
                flops=int(4 * b * h * tq * tk * d * ratio_flops), rules=_rules, params=params,
                note="K/V re-reads follow the tiling formula in bench/traffic_attention.py")


def attention_cases() -> list[Case]:
    return [_case(1, 2, 128, 128, 64, True), _case(1, 2, 128, 128, 64, False), _case(1, 2, 33, 97, 64, True)]
