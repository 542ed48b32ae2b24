"""Counted-traffic cases for ``linear_cross_entropy``: the (N, V) logits never reach memory.

The kernels recompute each (BLOCK_M tokens x BLOCK_N vocab) logit tile from x and W, loading full tiles
(rows past N and columns past V wrap to real ones, so every lane of a load counts). With rb = ceil(N /
BLOCK_M) row blocks, nt = ceil(V / BLOCK_N) vocab tiles and e the element size, the bytes each kernel reads
and writes are exact (the formulas of the kernels' module docstrings):

    forward  x: rb BLOCK_M C e nt        W: nt BLOCK_N C e rb     writes only the (2 or 3, S, N) fp32 partials
    dx       x: rb BLOCK_M C e nt        W: 2 nt BLOCK_N C e rb   fp32 dx accumulator: N C 4 written per vocab
                                                                   tile, read back on every tile but a split's first
    dW       x: 2 nt rb BLOCK_M C e      W: nt BLOCK_N C e rb     fp32 dW accumulator: V C 4 written per token
                                                                   tile, read back on every tile but the first

A case fails when x or W is read any other number of times, or when anything beyond those fp32 buffers is
written: a materialised logit or gradient tile would show as N x V bytes written. The interpreter runs its own
small tiles (``interpret_blocks``); a GPU's are larger, dividing the re-reads, and L2 serves most of them.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from .traffic import TensorTraffic
from .traffic_case import Case


def _tiling(n: int, v: int, c: int, es: int) -> dict[str, int]:
    bwd = importlib.import_module("tritongpt.kernels.linear_cross_entropy_bwd")
    bm, bn, bk = bwd.interpret_blocks(v)
    rb, nt = -(-n // bm), -(-v // bn)
    splits = bwd.num_splits(n, v, torch.device("cpu"), cap=8, blocks=(bm, bn, bk))
    return {"BM": bm, "BN": bn, "BK": bk, "rb": rb, "nt": nt, "S": splits,
            "x_tile": bm * c * es, "w_tile": bn * c * es}


def _check(per: dict[str, TensorTraffic], p: dict[str, Any]) -> list[str]:
    out = []
    for name, key in (("in:x", "x_reads"), ("in:weight", "w_reads")):
        if per[name].read != p[key]:
            out.append(f"{name[3:]}: read {per[name].read} bytes, the tiling reads {p[key]}")
    named_writes = sum(t.written for k, t in per.items() if k != "<unnamed>")
    if named_writes:
        out.append(f"writes {named_writes} bytes into inputs or host-cast outputs; the kernels write fp32 buffers only")
    scratch = per["<unnamed>"].written
    if scratch != p["scratch_writes"]:
        out.append(f"writes {scratch} bytes, expected {p['scratch_writes']} (fp32 partials / accumulators); "
                   f"an (N, V) logit buffer would be {p['logit_bytes']}")
    return out


def _inputs(n: int, v: int, c: int, dtype: torch.dtype) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(n, c, generator=g, dtype=torch.float32).to(dtype),
            "weight": (0.1 * torch.randn(v, c, generator=g)).to(dtype),
            "targets": torch.randint(0, v, (n,), generator=g)}


def _fwd(n: int, v: int, c: int, dtype=torch.float16) -> Case:
    es = torch.finfo(dtype).bits // 8
    t = _tiling(n, v, c, es)
    params = {"x_reads": t["rb"] * t["nt"] * t["x_tile"], "w_reads": t["rb"] * t["nt"] * t["w_tile"],
              "scratch_writes": 2 * t["S"] * n * 4, "logit_bytes": n * v * 4}

    def run(ins):
        loss, lse = torch.ops.tritongpt.linear_cross_entropy_fwd(ins["x"], ins["weight"], None, ins["targets"],
                                                                 -100, 0.0, 0.0, None)
        return {"loss": loss, "lse": lse}

    return Case(f"linear_cross_entropy_fwd[N={n},V={v},C={c},{str(dtype)[6:]},BM={t['BM']},BN={t['BN']},S={t['S']}]",
                "linear_cross_entropy", lambda: _inputs(n, v, c, dtype), run, flops=2 * n * v * c, rules=_check,
                params=params,
                note=f"x re-read per vocab tile ({t['nt']}), W per row block ({t['rb']}); writes only the fp32 "
                     f"split partials ({params['scratch_writes']} B; the logits would be {n * v * 4} B)")


def _bwd(n: int, v: int, c: int, dtype=torch.float16) -> Case:
    es = torch.finfo(dtype).bits // 8
    t = _tiling(n, v, c, es)
    dx_split = min(t["S"], 4)  # the dx grid's own cap
    rb, nt = t["rb"], t["nt"]
    params = {"x_reads": 3 * rb * nt * t["x_tile"], "w_reads": 3 * rb * nt * t["w_tile"],
              "scratch_writes": n * c * 4 * nt + v * c * 4 * rb, "logit_bytes": n * v * 4}

    def setup():
        ins = _inputs(n, v, c, dtype)
        _, lse = torch.ops.tritongpt.linear_cross_entropy_fwd(ins["x"], ins["weight"], None, ins["targets"],
                                                              -100, 0.0, 0.0, None)
        return ins | {"lse": lse, "grad_loss": torch.full((n,), 1.0 / n), "grad_lse": torch.zeros(n)}

    def run(ins):
        dx, dw, _ = torch.ops.tritongpt.linear_cross_entropy_bwd(
            ins["grad_loss"], ins["grad_lse"], ins["x"], ins["weight"], None, ins["targets"], ins["lse"],
            -100, 0.0, 0.0, None, True, True, False)
        return {"dx": dx, "dweight": dw}

    return Case(f"linear_cross_entropy_bwd[N={n},V={v},C={c},{str(dtype)[6:]},BM={t['BM']},BN={t['BN']},"
                f"S={dx_split}]", "linear_cross_entropy", setup, run, flops=8 * n * v * c, rules=_check,
                params=params,
                note="dx and dW kernels each recompute the logits (x, W read 3x in all per the tiling); writes only "
                     f"the fp32 dx partials and dW accumulator ({params['scratch_writes']} B, read-modify-write per "
                     f"tile; the host casts them); the logits and their gradient would be {2 * n * v * 4} B")


def cross_entropy_cases() -> list[Case]:
    # N not a multiple of the 16-row tile, V = 500 over four 128-wide tiles with a ragged last one, C of two
    # 32-wide chunks: every wrap and mask path counts.
    return [_fwd(40, 500, 64), _bwd(40, 500, 64)]
