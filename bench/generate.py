"""``tritongpt bench generate``: latency and bandwidth use of KV-cache generation, next to Hugging Face.

Per batch size: time to first token (prefill + first sample), inter-token latency p50/p90 (one host
sync per step), decode and end-to-end tokens/s; the bytes a decode step must move (every weight
once, plus the KV cache read and written, at the run's mean context length) and the floor that
implies at the streaming-read bandwidth measured in the same run on the same device; kernel
launches per step and per layer. The same workload (greedy, equal-length prompts) runs through
``transformers`` ``generate`` on the same weights when it is installed.

On a CPU this times the torch backend (the Triton kernels only run on the interpreter there); the
results say which device and backend they are for.

The JSON (``--json``) is a ``tritongpt-bench/1`` result file: the environment captured before and after
the run, a record per provider, batch size and metric (``ttft``, ``itl``, ``e2e``) with every raw sample
in seconds (what ``tritongpt bench compare`` tests), and the table above under ``report``.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tritongpt.engine.environment import EnvironmentRecorder, cpu_model, format_environment_line, throttle_warning

from .launches import count_launches
from .results import add_record, result_document
from .timing import quantile, sync


@dataclass
class GenerateResult:
    provider: str
    batch: int
    prompt_len: int
    new_tokens: int
    ttft_ms: float
    itl_p50_ms: float
    itl_p90_ms: float
    decode_tokens_per_s: float
    e2e_tokens_per_s: float
    bytes_per_step: int
    floor_ms: float
    floor_ratio: float  # itl_p50 / floor: 1.0 = every byte at the measured streaming rate
    bandwidth_utilisation: float  # bytes_per_step / itl_p50 / measured bandwidth
    launches_per_step: int | None = None
    launches_per_layer: float | None = None
    floor_ratio_reduction: float = 0.0  # itl_p50 / floor at the plain-reduction read rate (lower of the two)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {cpu_model()}, {torch.get_num_threads()} threads"


def streaming_read_bandwidth(device: torch.device, nbytes: int | None = None, repeats: int = 5) -> dict[str, float]:
    """Best read rate seen (GB/s) over a buffer far larger than the caches: a full reduction and a
    GEMV (the decode step's own access pattern). The larger of the two is the reference. The buffer
    is ~10x a large server L3 (1 GiB; 2 GiB on GPUs): with a stream only a few times the L3, adaptive
    cache replacement keeps part of it resident between passes and inflates the rate (seen here:
    a 256 MiB GEMV "read" 29.5 GB/s on a machine whose DRAM streams ~20)."""
    nbytes = nbytes or (2 << 30 if device.type == "cuda" else 1 << 30)
    x = torch.ones(nbytes // 4, device=device)
    w = x.view(-1, 4096) if x.numel() % 4096 == 0 else x[: x.numel() // 4096 * 4096].view(-1, 4096)
    v = torch.ones(4096, device=device)
    out: dict[str, float] = {}
    for name, fn, moved in (("sum", lambda: x.sum(), x.numel() * 4), ("gemv", lambda: w @ v, w.numel() * 4)):
        fn()
        best = float("inf")
        for _ in range(repeats):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            best = min(best, time.perf_counter() - t)
        out[f"{name}_gbs"] = moved / best / 1e9
    out["best_gbs"] = max(out["sum_gbs"], out["gemv_gbs"])
    return out


def step_bytes(model, batch: int, context: float) -> int:
    """Bytes one decode step must move: every weight once (wpe: only the rows used) + the KV cache read
    at ``context`` positions per row + the new position written."""
    cfg = model.config
    w = model.transformer.wte.weight
    esize = w.element_size()
    params = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    params -= (cfg.padded_vocab_size - cfg.vocab_size) * cfg.n_embd  # the floor needs real vocabulary rows only
    kv_per_pos = 2 * cfg.n_layer * cfg.n_embd * esize
    return int(params * esize + batch * cfg.n_embd * esize + batch * (context + 1) * kv_per_pos)


def time_ours(model, prompts: list[list[int]], n: int, repeats: int, compile: bool = False) -> dict[str, Any]:
    from tritongpt.engine import generate, stream

    dev = model.transformer.wte.weight.device
    generate(model, prompts, n, temperature=0, compile=compile)  # warm-up: capture, autotune, compile
    ttfts, itls, e2e = [], [], []
    for _ in range(repeats):
        sync(dev)
        t0 = time.perf_counter()
        marks = []
        for row, _tok in stream(model, prompts, n, temperature=0, compile=compile):
            if row == 0:
                marks.append(time.perf_counter())
        ttfts.append(marks[0] - t0)
        itls += [b - a for a, b in zip(marks, marks[1:], strict=False)]
        sync(dev)
        t0 = time.perf_counter()
        generate(model, prompts, n, temperature=0, compile=compile)
        sync(dev)
        e2e.append(time.perf_counter() - t0)
    return dict(ttft=statistics.median(ttfts), itls=itls, e2e=statistics.median(e2e),
                ttft_samples=ttfts, itl_samples=itls, e2e_samples=e2e)


def time_hf(hf, prompts: list[list[int]], n: int, repeats: int) -> dict[str, Any]:
    dev = next(hf.parameters()).device
    ids = torch.tensor(prompts, device=dev)
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)

    class Marks:  # a transformers streamer: put() gets the prompt once, then each new token
        def __init__(self) -> None:
            self.t: list[float] = []

        def put(self, value) -> None:
            self.t.append(time.perf_counter())

        def end(self) -> None:
            pass

    with torch.inference_mode():
        hf.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
        ttfts, itls, e2e, itl_samples = [], [], [], []
        for _ in range(repeats):
            marks = Marks()
            sync(dev)
            t0 = time.perf_counter()
            if ids.shape[0] == 1:  # streamers take batch 1 only
                hf.generate(ids, max_new_tokens=n, min_new_tokens=n, streamer=marks, **kw)
                steps = marks.t[1:]
                ttfts.append(steps[0] - t0)
                itls += [b - a for a, b in zip(steps, steps[1:], strict=False)]
                e2e.append(steps[-1] - t0)
            else:
                hf.generate(ids, max_new_tokens=1, **kw)
                sync(dev)
                t1 = time.perf_counter()
                hf.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
                sync(dev)
                t2 = time.perf_counter()
                ttfts.append(t1 - t0)
                itl = (t2 - t1 - (t1 - t0)) / (n - 1)
                itls += [itl] * (n - 1)
                itl_samples.append(itl)  # one estimate per run: its n - 1 copies are not independent samples
                e2e.append(t2 - t1)
    return dict(ttft=statistics.median(ttfts), itls=itls, e2e=statistics.median(e2e),
                ttft_samples=ttfts, itl_samples=itl_samples if ids.shape[0] > 1 else itls, e2e_samples=e2e)


def count_step_launches(model, batch: int, context: int) -> tuple[int, float, int | None]:
    """Launches of one eager decode step at ``batch`` rows: total, mean per layer, CUDA-profiled total."""
    from tritongpt.engine.generation.kv_cache import KVCache

    w = model.transformer.wte.weight
    cache = KVCache.allocate(model.config, batch, max(context + 1, 2), dtype=w.dtype, device=w.device)
    tokens = torch.zeros(batch, dtype=torch.long, device=w.device)
    lengths = torch.full((batch,), context + 1, dtype=torch.long, device=w.device)
    blocks = [(f"layer{i}", b, "forward_decode") for i, b in enumerate(model.transformer.h)]
    with torch.inference_mode():
        model.forward_decode(tokens, lengths, cache)  # warm-up (autotune) outside the count
        c = count_launches(lambda: model.forward_decode(tokens, lengths, cache), per_call=blocks)
    per_layer = [n for calls in c.per_call.values() for n in calls]
    return c.total, sum(per_layer) / max(1, len(per_layer)), c.profiled


def _result(provider, B, P, n, t, nbytes, bw, launches=(None, None, None)) -> GenerateResult:
    p50, p90 = quantile(t["itls"], 0.5, method="nearest"), quantile(t["itls"], 0.9, method="nearest")
    floor = nbytes / (bw["best_gbs"] * 1e9)
    return GenerateResult(
        provider, B, P, n, 1e3 * t["ttft"], 1e3 * p50, 1e3 * p90, B / statistics.mean(t["itls"]),
        B * n / t["e2e"], nbytes, 1e3 * floor, p50 / floor, floor / p50,
        floor_ratio_reduction=p50 / (nbytes / (bw["sum_gbs"] * 1e9)),
        launches_per_step=launches[2] if launches[2] is not None else launches[0], launches_per_layer=launches[1],
    )


def optional_import_failure(e: ImportError, package: str) -> str:
    """Why an optional peer could not be imported, truthfully: "not installed" only when the package
    itself is missing; a broken install or a failing import inside it is shown as what it is."""
    if isinstance(e, ModuleNotFoundError) and e.name is not None and e.name.split(".")[0] == package:
        return f"{package} is not installed"
    return f"importing {package} failed: {type(e).__name__}: {e}"


def run(model, *, batches: list[int], prompt_len: int, new_tokens: int, repeats: int = 3,
        hf: bool = True, seed: int = 0, compile: bool = False, progress=print) -> dict[str, Any]:
    """Time each batch size and provider; returns the ``tritongpt-bench/1`` result (suite "generate")."""
    dev = model.transformer.wte.weight.device
    dtype = str(model.transformer.wte.weight.dtype)[6:]
    batches = list(dict.fromkeys(batches))  # a repeated size would repeat a record name
    rec = EnvironmentRecorder(dev).start()
    progress(format_environment_line(rec.environment()))
    bw = streaming_read_bandwidth(dev)
    progress(f"streaming read on {device_name(dev)}: sum {bw['sum_gbs']:.1f} GB/s, GEMV {bw['gemv_gbs']:.1f} GB/s")
    hf_model, hf_missing = None, None
    if hf:
        try:
            from tritongpt.engine.model.weights import to_hf

            hf_model = to_hf(model)
        except ImportError as e:
            hf_missing = optional_import_failure(e, "transformers")
            progress(f"no Hugging Face comparison: {hf_missing}")
    progress(HEADER)
    g = torch.Generator().manual_seed(seed)
    results: list[GenerateResult] = []
    doc = result_document("generate", {})
    if hf_missing:
        doc["skipped"].append({"name": "generate/hf", "reason": hf_missing})

    def measured(provider: str, B: int, t: dict[str, Any], nbytes: int, launches=(None, None, None)) -> None:
        results.append(_result(provider, B, prompt_len, new_tokens, t, nbytes, bw, launches))
        progress(format_row(results[-1]))
        params = {"B": B, "prompt_len": prompt_len, "new_tokens": new_tokens, "dtype": dtype,
                  "backend": model.backend, "n_params": model.num_parameters()}
        for metric in ("ttft", "itl", "e2e"):
            add_record(doc, f"generate/{provider}/batch={B}/{metric}", t[f"{metric}_samples"],
                       provider=provider, metric=metric, params=params)

    for B in batches:
        prompts = torch.randint(0, model.config.vocab_size, (B, prompt_len), generator=g).tolist()
        nbytes = step_bytes(model, B, prompt_len + new_tokens / 2)
        launches = count_step_launches(model, B, prompt_len + new_tokens // 2)
        measured(f"tritongpt[{model.backend}]", B, time_ours(model, prompts, new_tokens, repeats), nbytes, launches)
        if compile:
            measured(f"tritongpt[{model.backend}+compile]", B,
                     time_ours(model, prompts, new_tokens, repeats, compile=True), nbytes, launches)
        if hf_model is not None:
            measured("transformers", B, time_hf(hf_model, prompts, new_tokens, repeats), nbytes)
    rec.stop()
    doc["environment"] = env = rec.environment()
    if warning := throttle_warning(env):
        progress(warning)
    doc["report"] = dict(  # the printed table, per row, for a reader of the file
        benchmark="generate", device=device_name(dev), dtype=dtype, backend=model.backend,
        params=model.num_parameters(), prompt_len=prompt_len, new_tokens=new_tokens, repeats=repeats,
        bandwidth=bw, torch=torch.__version__, results=[dataclasses.asdict(r) for r in results],
    )
    return doc


HEADER = (f"{'provider':<22} {'B':>3} {'TTFT ms':>8} {'ITL p50':>8} {'p90':>7} {'tok/s':>8} {'floor ms':>8} "
          f"{'x floor':>7} {'x sum-floor':>11} {'BW use':>6} {'launch/step':>11} {'/layer':>6}")


def format_row(r: GenerateResult) -> str:
    launches = f"{r.launches_per_step:>11}" if r.launches_per_step is not None else f"{'':>11}"
    per_layer = f"{r.launches_per_layer:>6.1f}" if r.launches_per_layer is not None else f"{'':>6}"
    return (f"{r.provider:<22} {r.batch:>3} {r.ttft_ms:>8.1f} {r.itl_p50_ms:>8.2f} {r.itl_p90_ms:>7.2f} "
            f"{r.decode_tokens_per_s:>8.1f} {r.floor_ms:>8.2f} {r.floor_ratio:>7.3f} {r.floor_ratio_reduction:>11.3f} "
            f"{r.bandwidth_utilisation:>6.1%} "
            f"{launches} {per_layer}")


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    from tritongpt.engine.fsutil import atomic_write_text

    return atomic_write_text(path, json.dumps(report, indent=2) + "\n")
