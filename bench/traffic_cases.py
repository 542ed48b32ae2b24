"""Representative shapes for counted memory traffic, with each kernel's analytic minimum.

Minimum bytes = every input read once + every output written once (saved statistics included).
Each case also states its own rules (``problems``): what must never be written, and how many
re-reads the tiling implies. Runs only under the interpreter (see ``traffic.py``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .traffic import TensorTraffic
from .traffic_attention import attention_cases
from .traffic_case import Case, measure
from .traffic_cross_entropy import cross_entropy_cases

__all__ = ["Case", "cases", "measure"]


# ---- LayerNorm -----------------------------------------------------------------------------------
def _ln_fwd(m: int, n: int, residual: bool, dtype=torch.float16) -> Case:
    def setup():
        x = torch.randn(m, n, dtype=dtype)
        ins = {"x": x, "weight": torch.randn(n, dtype=dtype), "bias": torch.randn(n, dtype=dtype)}
        return ins | ({"residual": torch.randn(m, n, dtype=dtype)} if residual else {})

    def run(t):
        y, h, mean, rstd = torch.ops.tritongpt.layer_norm_fwd(t["x"], t["weight"], t["bias"], t.get("residual"), 1e-5)
        return {"y": y, "mean": mean, "rstd": rstd} | ({"h": h} if residual else {})

    return Case(f"layer_norm_fwd{'_residual' if residual else ''}[M={m},N={n},{str(dtype)[6:]}]", "layer_norm",
                setup, run, flops=8 * m * n, target_ratio=1.05)


def _ln_bwd(m: int, n: int, residual: bool, dtype=torch.float16) -> Case:
    def setup():
        x = torch.randn(m, n, dtype=dtype)
        w, b = torch.randn(n, dtype=dtype), torch.randn(n, dtype=dtype)
        _, _, mean, rstd = torch.ops.tritongpt.layer_norm_fwd(x, w, b, None, 1e-5)
        ins = {"dy": torch.randn(m, n, dtype=dtype), "x": x, "weight": w, "mean": mean, "rstd": rstd}
        return ins | ({"dh": torch.randn(m, n, dtype=dtype)} if residual else {}) | {"_bias": b}

    def run(t):
        dx, dw, db = torch.ops.tritongpt.layer_norm_bwd(t["dy"], t.get("dh"), t["x"], t["weight"], t["_bias"],
                                                       t["mean"], t["rstd"])
        return {"dx": dx, "dweight": dw, "dbias": db}

    return Case(f"layer_norm_bwd{'_residual' if residual else ''}[M={m},N={n},{str(dtype)[6:]}]", "layer_norm",
                setup, run, flops=14 * m * n, target_ratio=1.05,
                note="dweight/dbias go through fp32 per-program partials (G x N each, G = 4 programs under the "
                     "interpreter, a few per SM on a GPU); their kernel writes are counted, torch's sum is not")


# ---- fused linear ------------------------------------------------------------------------------
def _no_preactivation(per: dict[str, TensorTraffic], params: dict[str, Any]) -> list[str]:
    out = []
    extra = per["<unnamed>"].written
    if extra:
        out.append(f"writes {extra} bytes outside its output (the pre-activation?) in inference mode")
    if per["out:y"].unique_written != params["y_bytes"]:
        out.append(f"wrote {per['out:y'].unique_written} unique output bytes, expected {params['y_bytes']}")
    return out


def _gelu_linear(m: int, k: int, n: int, dtype=torch.float16) -> Case:
    params = {"y_bytes": m * n * torch.finfo(dtype).bits // 8}

    def setup():
        return {"x": torch.randn(m, k, dtype=dtype), "weight": torch.randn(n, k, dtype=dtype) / math.sqrt(k),
                "bias": torch.randn(n, dtype=dtype)}

    def run(t):
        y, _g = torch.ops.tritongpt.gelu_linear_fwd(t["x"], t["weight"], t["bias"], False)
        return {"y": y}

    return Case(f"gelu_linear_fwd_inference[M={m},K={k},N={n},{str(dtype)[6:]}]", "gelu_linear", setup, run,
                flops=2 * m * n * k + 8 * m * n, rules=_no_preactivation, params=params,
                note="tiles re-read x once per N-tile and W once per M-tile (L2 absorbs most on a GPU)")


# ---- decode attention (flash-decoding) -----------------------------------------------------------
def _decode_rules(per: dict[str, TensorTraffic], p: dict[str, Any]) -> list[str]:
    out = []
    for name, nbytes in p["views"].items():  # the attended positions, read exactly once, nothing past them
        if per[name].read != nbytes or per[name].unique_read != nbytes:
            out.append(f"{name[3:]}: read {per[name].read} bytes ({per[name].unique_read} unique), expected "
                       f"each of its {nbytes} once")
    scratch = per["<unnamed>"]  # only the fp32 split partials: written once by the split kernel, read once by the merge
    if scratch.written != p["partial_bytes"] or scratch.read != p["partial_bytes"]:
        out.append(f"touches {scratch.written} / {scratch.read} bytes (written / read) outside the named tensors, "
                   f"expected the {p['partial_bytes']} bytes of split partials (cache positions past lengths?)")
    if per["in:q"].read != p["q_reads"]:
        out.append(f"q read {per['in:q'].read} bytes, expected {p['q_reads']} (once per non-empty split)")
    if per["out:out"].written != per["out:out"].unique_written:
        out.append("out written more than once")
    return out


def _decode(b: int, h: int, t_max: int, d: int, lengths: list[int], dtype=torch.float16) -> Case:
    import importlib

    da = importlib.import_module("tritongpt.kernels.decode_attention")
    cfg = da.decode_config(d)  # the GPU's config for this D, and the default SM count (132)
    splits, split_len = da.pick_splits(b * h, t_max, cfg.block_n, da.DEFAULT_SM_COUNT)
    es = torch.finfo(dtype).bits // 8
    params = {
        "views": {f"in:{c}[{i}, :, :{n}]": h * n * d * es for i, n in enumerate(lengths) for c in "kv"},
        "partial_bytes": b * h * splits * (d + 1) * 4,  # (B, H, S, D) partials + (B, H, S) LSEs, fp32
        "q_reads": sum(h * -(-n // split_len) for n in lengths) * d * es,
    }

    def setup():
        k, v = (torch.randn(b, h, t_max, d, dtype=dtype) for _ in range(2))
        # Name only the attended slices, so the minimum counts positions < lengths[b], not T_max; the
        # caches travel as a tuple (not counted).
        views = {f"{c}[{i}, :, :{n}]": t[i, :, :n] for i, n in enumerate(lengths) for c, t in (("k", k), ("v", v))}
        return {"q": torch.randn(b, h, d, dtype=dtype), "lengths": torch.tensor(lengths), **views, "_caches": (k, v)}

    def run(t):
        k, v = t["_caches"]
        return {"out": da.decode_attention_launch(t["q"], k, v, t["lengths"], d ** -0.5, check_lengths=False,
                                                  config=cfg)}

    return Case(f"decode_attention[B={b},H={h},T_max={t_max},D={d},lengths={'/'.join(map(str, lengths))},"
                f"BN={cfg.block_n},splits={splits}]", "decode_attention", setup, run,
                flops=4 * h * sum(lengths) * d, target_ratio=1.05, rules=_decode_rules, params=params,
                note=f"minimum = q + K/V at positions < lengths[b] + out (+ lengths); moved adds the fp32 split "
                     f"partials ({params['partial_bytes']} B written and read), q re-read per non-empty split "
                     f"and lengths per program")


def cases() -> list[Case]:
    out = [
        _ln_fwd(256, 768, False), _ln_fwd(256, 768, True), _ln_fwd(64, 3000, True),
        _ln_bwd(256, 768, False), _ln_bwd(256, 768, True),
        _gelu_linear(64, 64, 256),
        _decode(2, 4, 256, 64, [200, 77]),
    ]
    return out + attention_cases() + cross_entropy_cases()
