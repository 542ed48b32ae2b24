"""The kernel sweeps: each of our kernels against what a user would pick instead.

A ``Sweep`` is one kernel x direction x dtype x fixed shape, swept over one size axis (``x``),
with providers (``triton`` is ours) that all compute the same function of the same inputs, and an
fp32 reference that every provider's output is checked against in the same run. Shapes follow the
field's conventions: attention at 16k tokens per batch and model width 2048 (FlashAttention's
benchmark), LayerNorm at 4096 rows (Liger's), linear at GPT-2's MLP shapes, plus one 4096^3 GEMM.

Beside ``triton`` (ours, the path chosen per launch) the attention forward and linear sweeps time
each code path of our kernels forced (``triton-pointer``, ``triton-tma``, ``triton-tma-persistent``,
``triton-tma-ws``; see kernel_paths.py); a path this device or Triton lacks is skipped with the reason.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from . import kernel_paths, metrics

Fn = Callable[[dict[str, torch.Tensor]], Any]


@dataclass
class Sweep:
    name: str
    kernel: str
    direction: str  # fwd | bwd | fwd+bwd
    title: str
    x_name: str
    metric: str  # tflops | gbs
    bound: str  # compute | memory
    dtype: str
    points: list[dict[str, Any]]  # shape params per point, each with "x"
    setup: Callable[[dict[str, Any], torch.device], dict[str, torch.Tensor]]
    providers: dict[str, Fn]
    reference: Fn  # fp32, on fp32 copies of the inputs
    flops: Callable[[dict[str, Any]], float | None]
    nbytes: Callable[[dict[str, Any]], float]
    wrt: tuple[str, ...] = ()  # inputs differentiated by bwd / fwd+bwd
    skip: Callable[[dict[str, Any], str], str | None] = field(default=lambda p, prov: None)
    # Run after each provider, whatever happened: undoes global state a provider that raised left behind.
    reset: Callable[[], None] = field(default=lambda: None)
    # Providers timed as a yardstick but computing another function (F.linear without the GELU):
    # never checked against the reference.
    unchecked: tuple[str, ...] = ("cublas",)


def _tdtype(name: str) -> torch.dtype:
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def _only(providers: dict[str, Fn], keep: list[str] | None) -> dict[str, Fn]:
    if keep is None:
        return providers
    unknown = [p for p in keep if p not in providers]
    if unknown:
        raise ValueError(f"providers: unknown {unknown}; this sweep has {sorted(providers)}")
    return {k: v for k, v in providers.items() if k in keep}


def _own_code(fn: Fn) -> Fn:
    """A copy of ``fn`` with a code object of its own. Dynamo keeps compiled entries on the CODE object,
    shared by every closure of one ``def``/lambda and by every ``torch.compile`` of it, and past
    ``recompile_limit`` (8) entries it silently runs the function eagerly."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _compiled(fn: Fn, backend: str | Callable = "inductor") -> Fn:
    """torch.compile of the eager composition; one compiled object, on its own code object, per shape and
    dtype: the full sweeps compile ``eager`` of LayerNorm 48 times, which one shared code object would cap at 8."""
    cache: dict[tuple, Fn] = {}

    def run(t: dict[str, torch.Tensor]) -> Any:
        key = tuple((k, tuple(v.shape), v.dtype, v.requires_grad) for k, v in t.items())
        if key not in cache:
            cache[key] = torch.compile(_own_code(fn), dynamic=False, backend=backend)
        return cache[key](t)

    return run


# ---- attention -----------------------------------------------------------------------------------
def _sdpa(backend_name: str | None, causal: bool) -> Fn:
    def run(t):
        if backend_name is None:
            return F.scaled_dot_product_attention(t["q"], t["k"], t["v"], is_causal=causal)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(getattr(SDPBackend, backend_name)):
            return F.scaled_dot_product_attention(t["q"], t["k"], t["v"], is_causal=causal)

    return run


def _naive_attention(causal: bool) -> Fn:
    def run(t):
        q, k, v = t["q"], t["k"], t["v"]
        s = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        if causal:
            T = q.shape[-2]
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v

    return run


def attention_sweep(direction: str = "fwd", causal: bool = True, d: int = 128, dtype: str = "bfloat16",
                    xs: tuple[int, ...] = (512, 1024, 2048, 4096, 8192, 16384), tokens: int = 16384,
                    width: int = 2048, providers: list[str] | None = None) -> Sweep:
    from tritongpt.kernels import attention

    points = [{"x": T, "B": max(1, tokens // T), "H": max(1, width // d), "T": T, "D": d, "causal": causal,
               "dtype": dtype} for T in xs]

    def setup(p, device):
        shape = (p["B"], p["H"], p["T"], p["D"])
        return {n: torch.randn(shape, device=device, dtype=_tdtype(dtype)) for n in "qkv"}

    provs = {
        "triton": lambda t: attention(t["q"], t["k"], t["v"], causal=causal),
        # forward only: the launcher that forces a path has no autograd
        **(kernel_paths.attention_paths(causal) if direction == "fwd" else {}),
        "sdpa-flash": _sdpa("FLASH_ATTENTION", causal),
        "sdpa-efficient": _sdpa("EFFICIENT_ATTENTION", causal),
        "sdpa-cudnn": _sdpa("CUDNN_ATTENTION", causal),
        "naive": _naive_attention(causal),
    }

    def skip(p, prov):
        scores = p["B"] * p["H"] * p["T"] ** 2 * 4 * (3 if direction != "fwd" else 2)
        if prov == "naive" and scores > 8 * 2**30:
            return f"naive attention materialises {scores / 2**30:.0f} GiB of T x T scores"
        return kernel_paths.attention_skip(prov, dtype, kernel_paths.current_capability())

    tag = "causal" if causal else "full"
    return Sweep(
        name=f"attention-{direction}-{tag}-{dtype}-d{d}", kernel="attention", direction=direction,
        title=f"attention {direction}, {tag}, {dtype}, D={d}, {tokens} tokens/batch, H={width // d}",
        x_name="T", metric="tflops", bound="compute", dtype=dtype, points=points, setup=setup,
        providers=_only(provs, providers), reference=_sdpa(None, causal),
        flops=lambda p: metrics.attention_flops(p["B"], p["H"], p["T"], p["D"], causal, direction),
        nbytes=lambda p: metrics.attention_bytes(p["B"], p["H"], p["T"], p["D"], dtype, direction),
        wrt=("q", "k", "v"), skip=skip)


# ---- LayerNorm -----------------------------------------------------------------------------------
def layer_norm_sweep(direction: str = "fwd", residual: bool = False, dtype: str = "bfloat16",
                     xs: tuple[int, ...] = (768, 1024, 2048, 4096, 8192, 16384), rows: int = 4096,
                     providers: list[str] | None = None) -> Sweep:
    from tritongpt.kernels import layer_norm

    points = [{"x": n, "M": rows, "N": n, "residual": residual, "dtype": dtype} for n in xs]

    def setup(p, device):
        dt = _tdtype(dtype)
        t = {"x": torch.randn(p["M"], p["N"], device=device, dtype=dt),
             "weight": 1 + 0.1 * torch.randn(p["N"], device=device, dtype=dt),
             "bias": 0.1 * torch.randn(p["N"], device=device, dtype=dt)}
        if residual:
            t["residual"] = torch.randn(p["M"], p["N"], device=device, dtype=dt)
        return t

    def eager(t):
        if residual:
            h = t["x"] + t["residual"]
            return F.layer_norm(h, h.shape[-1:], t["weight"], t["bias"], 1e-5), h
        return F.layer_norm(t["x"], t["x"].shape[-1:], t["weight"], t["bias"], 1e-5)

    provs = {
        "triton": lambda t: layer_norm(t["x"], t["weight"], t["bias"], 1e-5, t.get("residual")),
        "torch": eager,
        "torch.compile": _compiled(eager),
    }
    tag = "residual" if residual else "plain"
    return Sweep(
        name=f"layer_norm-{direction}-{tag}-{dtype}", kernel="layer_norm", direction=direction,
        title=f"LayerNorm {direction}{' + residual add' if residual else ''}, {dtype}, {rows} rows",
        x_name="N", metric="gbs", bound="memory", dtype=dtype, points=points, setup=setup,
        providers=_only(provs, providers), reference=eager,
        flops=lambda p: metrics.layer_norm_flops(p["M"], p["N"], direction),
        nbytes=lambda p: metrics.layer_norm_bytes(p["M"], p["N"], dtype, residual, direction),
        wrt=("x", "weight", "bias") + (("residual",) if residual else ()))


# ---- gelu_linear / linear ------------------------------------------------------------------------
def _linear_skip(p: dict[str, Any], prov: str) -> str | None:
    return kernel_paths.linear_skip(prov, kernel_paths.current_capability())


def _linear_setup(k: int, n: int, dtype: str, residual: bool):
    def setup(p, device):
        dt = _tdtype(dtype)
        t = {"x": torch.randn(p["M"], k, device=device, dtype=dt),
             "weight": torch.randn(n, k, device=device, dtype=dt) / math.sqrt(k),
             "bias": 0.1 * torch.randn(n, device=device, dtype=dt)}
        if residual:
            t["residual"] = torch.randn(p["M"], n, device=device, dtype=dt)
        return t

    return setup


def gelu_linear_sweep(direction: str = "fwd", k: int = 768, n: int = 3072, dtype: str = "bfloat16",
                      xs: tuple[int, ...] = (512, 1024, 2048, 4096, 8192, 16384),
                      providers: list[str] | None = None) -> Sweep:
    from tritongpt.kernels import gelu_linear

    return _epilogue_sweep(
        "gelu_linear", direction, k, n, dtype, xs, providers, residual=False,
        ours=lambda t: gelu_linear(t["x"], t["weight"], t["bias"]),
        eager=("cublas+gelu", lambda t: F.gelu(F.linear(t["x"], t["weight"], t["bias"]), approximate="tanh")),
        name=f"gelu_linear-{direction}-{dtype}-{k}x{n}",
        title=f"gelu(x @ W^T + b) {direction}, {dtype}, K={k} -> N={n}")


def linear_sweep(direction: str = "fwd", k: int = 3072, n: int = 768, dtype: str = "bfloat16",
                 xs: tuple[int, ...] = (512, 1024, 2048, 4096, 8192, 16384),
                 providers: list[str] | None = None) -> Sweep:
    from tritongpt.kernels import linear

    return _epilogue_sweep(
        "linear", direction, k, n, dtype, xs, providers, residual=True,
        ours=lambda t: linear(t["x"], t["weight"], t["bias"], t["residual"]),
        eager=("cublas+add", lambda t: F.linear(t["x"], t["weight"], t["bias"]) + t["residual"]),
        name=f"linear-{direction}-{dtype}-{k}x{n}-residual",
        title=f"x @ W^T + b + residual {direction}, {dtype}, K={k} -> N={n}")


def _epilogue_sweep(kernel: str, direction: str, k: int, n: int, dtype: str, xs: tuple[int, ...],
                    providers: list[str] | None, *, residual: bool, ours: Callable, eager: tuple[str, Callable],
                    name: str, title: str) -> Sweep:
    """A GEMM with a fused epilogue (gelu_linear, linear + residual) against the same in eager PyTorch
    (``eager``: its provider name and function, also the reference) and torch.compile of it. ``cublas``, the
    GEMM alone, is the floor to beat; it computes a different function, so it is timed, not checked."""
    eager_name, eager_fn = eager
    provs = {
        "triton": kernel_paths.linear_path(None, ours),
        **kernel_paths.linear_paths(direction, ours),
        "cublas": lambda t: F.linear(t["x"], t["weight"], t["bias"]),
        eager_name: eager_fn,
        "torch.compile": _compiled(eager_fn),
    }
    return Sweep(
        name=name, kernel=kernel, direction=direction, title=title, x_name="M", metric="tflops",
        bound="compute", dtype=dtype, points=[{"x": m, "M": m, "K": k, "N": n, "dtype": dtype} for m in xs],
        setup=_linear_setup(k, n, dtype, residual), providers=_only(provs, providers), reference=eager_fn,
        flops=lambda p: metrics.linear_flops(p["M"], n, k, direction),
        nbytes=lambda p: metrics.linear_bytes(p["M"], n, k, dtype, direction, residual=residual),
        wrt=("x", "weight", "bias") + (("residual",) if residual else ()), skip=_linear_skip,
        reset=kernel_paths.reset_linear_path)


# ---- decode attention ----------------------------------------------------------------------------
def decode_sweep(batch: int = 8, h: int = 32, d: int = 128, dtype: str = "bfloat16",
                 xs: tuple[int, ...] = (128, 512, 2048, 8192, 32768), providers: list[str] | None = None) -> Sweep:
    from tritongpt.kernels import decode_attention

    def setup(p, device):
        dt = _tdtype(dtype)
        B, H, ctx, D = p["B"], p["H"], p["ctx"], p["D"]
        return {"q": torch.randn(B, H, D, device=device, dtype=dt),
                "k_cache": torch.randn(B, H, ctx, D, device=device, dtype=dt),
                "v_cache": torch.randn(B, H, ctx, D, device=device, dtype=dt),
                "lengths": torch.full((B,), ctx, device=device, dtype=torch.int32)}

    def sdpa(t):  # SDPA over the cache: one query row per sequence, every cached position visible
        return F.scaled_dot_product_attention(t["q"].unsqueeze(2), t["k_cache"], t["v_cache"]).squeeze(2)

    provs = {
        # check_lengths=False: a serving loop knows its lengths; the check is a host sync.
        "triton": lambda t: decode_attention(t["q"], t["k_cache"], t["v_cache"], t["lengths"], check_lengths=False),
        "sdpa": sdpa,
    }
    return Sweep(
        name=f"decode_attention-{dtype}-b{batch}-h{h}-d{d}", kernel="decode_attention", direction="fwd",
        title=f"decode attention (1 query/row), {dtype}, batch {batch}, H={h}, D={d}", x_name="context",
        metric="gbs", bound="memory", dtype=dtype,
        points=[{"x": c, "B": batch, "H": h, "ctx": c, "D": d, "dtype": dtype} for c in xs], setup=setup,
        providers=_only(provs, providers), reference=sdpa,
        flops=lambda p: metrics.decode_flops(p["B"], p["H"], p["ctx"], p["D"]),
        nbytes=lambda p: metrics.decode_bytes(p["B"], p["H"], p["ctx"], p["D"], dtype))


# ---- LM head + cross-entropy ---------------------------------------------------------------------------
def linear_cross_entropy_sweep(direction: str = "fwd+bwd", c: int = 768, v: int = 50304, dtype: str = "bfloat16",
                               xs: tuple[int, ...] = (8192, 16384), providers: list[str] | None = None) -> Sweep:
    """The loss of GPT-2's head, fused (ours: the (N, V) logits never exist) against F.linear + F.cross_entropy,
    eager and compiled. Records carry each provider's peak memory beside its time (bench/kernels.py)."""
    from tritongpt.kernels import linear_cross_entropy

    def setup(p, device):
        dt = _tdtype(dtype)
        return {"x": torch.randn(p["N"], c, device=device, dtype=dt),
                "weight": 0.02 * torch.randn(v, c, device=device, dtype=dt),
                "targets": torch.randint(0, v, (p["N"],), device=device)}

    plain = lambda t: F.cross_entropy(F.linear(t["x"], t["weight"]).float(), t["targets"])
    provs = {
        "triton": lambda t: linear_cross_entropy(t["x"], t["weight"], t["targets"]),
        "torch": plain,
        "torch.compile": _compiled(plain),
    }
    # Useful FLOPs (the head's GEMMs, 2NVC forward, 4NVC backward): ours recomputes logits, so its own count
    # is higher (10NVC in all); the rate below compares like with like.
    return Sweep(
        name=f"linear_cross_entropy-{direction}-{dtype}-{c}x{v}", kernel="linear_cross_entropy",
        direction=direction, title=f"cross_entropy(x @ W^T) {direction}, {dtype}, C={c}, V={v}", x_name="N",
        metric="tflops", bound="compute", dtype=dtype,
        points=[{"x": n, "N": n, "C": c, "V": v, "dtype": dtype} for n in xs], setup=setup,
        providers=_only(provs, providers), reference=plain,
        flops=lambda p: metrics.linear_flops(p["N"], v, c, direction),
        nbytes=lambda p: metrics.linear_bytes(p["N"], v, c, dtype, direction) - p["N"] * v * _es_of(dtype),
        wrt=("x", "weight"))


def _es_of(dtype: str) -> int:
    return torch.finfo(_tdtype(dtype)).bits // 8


KERNELS = ("attention", "layer_norm", "gelu_linear", "linear", "decode_attention", "linear_cross_entropy")


def default_sweeps(kernels: tuple[str, ...] = KERNELS, quick: bool = False,
                   dtypes: tuple[str, ...] = ("bfloat16", "float16")) -> list[Sweep]:
    """The issue's sweeps. ``quick``: the headline subset (bf16, two sizes each) for CI gates. Attention
    runs D=64 (every GPT-2 preset's head size) beside D=128 (the published tables'), in both sets."""
    bad = [k for k in kernels if k not in KERNELS]
    if bad:
        raise ValueError(f"unknown {bad}; expected some of {', '.join(KERNELS)}")
    out: list[Sweep] = []
    if quick:
        dtypes = ("bfloat16",)
    for dt in dtypes:
        if "attention" in kernels:
            for direction in ("fwd", "bwd", "fwd+bwd"):
                for causal in (True, False):
                    for d in (64, 128):
                        if quick and (not causal or direction == "bwd"):
                            continue
                        out.append(attention_sweep(direction, causal, d, dt, xs=(1024, 4096) if quick else
                                                   (512, 1024, 2048, 4096, 8192, 16384)))
        if "layer_norm" in kernels:
            for direction in ("fwd", "bwd"):
                for residual in (False, True):
                    if quick and residual:
                        continue
                    out.append(layer_norm_sweep(direction, residual, dt, xs=(1024, 4096) if quick else
                                                (768, 1024, 2048, 4096, 8192, 16384)))
        ms = (1024, 8192) if quick else (512, 1024, 2048, 4096, 8192, 16384)
        if "gelu_linear" in kernels:
            out.append(gelu_linear_sweep("fwd", 768, 3072, dt, ms))
            # The square GEMM of the goal (>= 0.9x cuBLAS's F.linear alone, GELU fused on top).
            out.append(gelu_linear_sweep("fwd", 4096, 4096, dt, (4096,)))
            if not quick:
                out.append(gelu_linear_sweep("bwd", 768, 3072, dt, ms))
                out.append(gelu_linear_sweep("fwd", 4096, 16384, dt, (1024, 2048, 4096, 8192)))
        if "linear" in kernels:
            out.append(linear_sweep("fwd", 3072, 768, dt, ms))
            if not quick:
                out.append(linear_sweep("bwd", 3072, 768, dt, ms))
        if "linear_cross_entropy" in kernels:
            for c in ((768,) if quick else (768, 1600)):
                for direction in (("fwd+bwd",) if quick else ("fwd", "fwd+bwd")):
                    out.append(linear_cross_entropy_sweep(direction, c, 50304, dt, (8192,) if quick else (8192, 16384)))
        if "decode_attention" in kernels:
            for b in ((8,) if quick else (1, 8, 64)):
                for d in (64, 128):
                    out.append(decode_sweep(b, 32, d, dt, (512, 8192) if quick else (128, 512, 2048, 8192, 32768)))
    return out
