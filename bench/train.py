"""``tritongpt bench train``: training throughput and MFU per backend on synthetic batches.

For a preset (default ``gpt2`` on a GPU, ``cpu-demo`` shapes on a CPU) and each backend (``triton``,
``torch``, ``torch`` + ``torch.compile``), times full optimizer steps (forward, backward, clip,
AdamW) after warm-up, with bf16 autocast on CUDA. Reports tokens/s, ms/step with a forward /
backward / optimizer breakdown (CUDA-synchronised, so only meaningful per phase on a GPU), and MFU
against the detected GPU's dense bf16 peak (6N + 6LTC FLOPs per token); unknown GPU or CPU: no MFU.
On a CPU the Triton backend is skipped (it runs only on the interpreter there) and results are
labelled CPU.

The JSON (``--json``) is a ``tritongpt-bench/1`` result file: the environment captured before and after
the run, a record ``train/<backend>/step`` per backend with every timed step in seconds (and the phase
samples beside them), and the table under ``report``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .environment import EnvironmentRecorder, format_environment_line, throttle_warning
from .generate import _sync
from .results import add_record, result_document


@dataclass
class TrainResult:
    backend: str
    preset: str
    batch: int
    block_size: int
    tokens_per_s: float
    ms_per_step: float
    fwd_ms: float
    bwd_ms: float
    opt_ms: float
    mfu: float | None
    # Every timed step: (forward, backward, optimizer) seconds; not in the table, kept for the records.
    step_samples: list[tuple[float, float, float]] = field(default_factory=list, repr=False)


def time_backend(preset: str, backend: str, compile_: bool, batch: int, block: int | None, steps: int,
                 warmup: int, device: torch.device) -> TrainResult:
    from tritongpt.engine import GPT
    from tritongpt.engine.train import make_optimizer
    from tritongpt.engine.train_config import TrainConfig

    from .devices import lookup

    torch.manual_seed(0)
    overrides = {"dropout": 0.0, **({"block_size": block} if block else {})}
    model = GPT.from_preset(preset, **overrides).to(device)
    model.backend = backend
    T = model.config.block_size
    opt = make_optimizer(model, TrainConfig(), device)
    step_model = torch.compile(model) if compile_ else model
    V = model.config.vocab_size
    x = torch.randint(0, V, (batch, T), device=device)
    y = torch.randint(0, V, (batch, T), device=device)
    amp = device.type == "cuda"
    times: list[tuple[float, float, float]] = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            loss = step_model(x, y)[1]  # the logits would otherwise stay alive through the backward
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        _sync(device)
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t3 = time.perf_counter()
        if i >= warmup:
            times.append((t1 - t0, t2 - t1, t3 - t2))
    fwd, bwd, op = (statistics.median(c) for c in zip(*times, strict=True))
    step = statistics.median(sum(t) for t in times)
    tps = batch * T / step
    peak = lookup(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    mfu = model.flops_per_token(T) * tps / (peak.bf16_tflops * 1e12) if peak else None
    name = backend + ("+compile" if compile_ else "")
    return TrainResult(name, preset, batch, T, tps, 1e3 * step, 1e3 * fwd, 1e3 * bwd, 1e3 * op, mfu, times)


def run(preset: str | None, batch: int | None, block: int | None, steps: int, warmup: int,
        backends: list[str], progress=print) -> dict[str, Any]:
    """Time each backend; returns the ``tritongpt-bench/1`` result (suite "train")."""
    from .generate import device_name

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = preset or ("gpt2" if dev.type == "cuda" else "cpu-demo")
    batch = batch or (16 if dev.type == "cuda" else 4)
    rec = EnvironmentRecorder(dev).start()
    progress(format_environment_line(rec.environment()))
    progress(HEADER)
    doc = result_document("train", {})
    results = []
    for b in dict.fromkeys(backends):  # a repeated backend would repeat a record name
        backend, compile_ = b.split("+")[0], b.endswith("+compile")
        if backend == "triton" and dev.type != "cuda":
            progress("triton: skipped on CPU (the kernels run only on the interpreter there)")
            doc["skipped"].append({"name": f"train/{b}/step", "reason": "CPU: the Triton kernels run only on "
                                   "the interpreter there"})
            continue
        r = time_backend(preset, backend, compile_, batch, block, steps, warmup, dev)
        results.append(r)
        progress(format_row(r))
        fwd, bwd, opt = (list(c) for c in zip(*r.step_samples, strict=True))
        add_record(doc, f"train/{r.backend}/step", [sum(t) for t in r.step_samples], provider=r.backend,
                   params={"preset": r.preset, "B": r.batch, "T": r.block_size, "warmup": warmup},
                   phase_samples={"fwd": fwd, "bwd": bwd, "opt": opt},
                   tokens_per_step=r.batch * r.block_size, mfu=r.mfu)
    rec.stop()
    doc["environment"] = env = rec.environment()
    if warning := throttle_warning(env):
        progress(warning)
    doc["report"] = {"benchmark": "train", "device": device_name(dev), "torch": torch.__version__,
                     "results": [{k: v for k, v in asdict(r).items() if k != "step_samples"} for r in results]}
    return doc


HEADER = f"{'backend':<16} {'preset':<10} {'B x T':>10} {'tok/s':>10} {'ms/step':>8} {'fwd':>7} {'bwd':>7} " \
         f"{'opt':>7} {'MFU':>6}"


def format_row(r: TrainResult) -> str:
    mfu = f"{r.mfu:>6.1%}" if r.mfu is not None else f"{'n/a':>6}"
    return (f"{r.backend:<16} {r.preset:<10} {f'{r.batch}x{r.block_size}':>10} {r.tokens_per_s:>10,.0f} "
            f"{r.ms_per_step:>8.1f} {r.fwd_ms:>7.1f} {r.bwd_ms:>7.1f} {r.opt_ms:>7.1f} {mfu}")
