"""``tritongpt bench train``: training throughput, MFU and memory per backend on synthetic batches.

For a preset (default ``gpt2`` on a GPU, ``cpu-demo`` shapes on a CPU) and each backend (``triton``,
``torch``, ``torch`` + ``torch.compile``), times full optimizer steps (forward, backward, clip, AdamW) after
warm-up, with bf16 autocast on CUDA, calling the model as training does (``return_logits=False``). The
triton backend runs twice by default: with its fused LM head + loss (``linear_cross_entropy``: the (B*T, V)
logits never exist) and with the plain head + ``F.cross_entropy`` (``triton/plain-loss``), so their memory
and speed sit side by side; the torch backends always take the plain path. Reports tokens/s, ms/step with a
forward / backward / optimizer breakdown (CUDA-synchronised, so only meaningful per phase on a GPU), MFU
against the detected GPU's dense bf16 peak (6N + 6LTC FLOPs per token; unknown GPU or CPU: none), the peak
memory of a step (weights, gradients, optimizer state, batch and activations: ``bench/memory.py``) and,
with ``max_batch``, the largest batch that fits: on a GPU the one that does not run out of memory (or stays
within ``memory_limit``), on a CPU the one whose counted peak stays within ``memory_limit``. On a CPU the
triton backend is skipped (its kernels run only on the interpreter there, whose times mean nothing) unless
``interpreter`` asks for it: its memory figures are still exact.

The JSON (``--json``) is a ``tritongpt-bench/1`` result file: the environment captured before and after
the run, a record ``train/<row>/step`` per row with every timed step in seconds (the phase samples, peak
memory and largest batch beside them), and the table under ``report``.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tritongpt.engine.environment import EnvironmentRecorder, format_environment_line, throttle_warning

from .memory import largest_fitting, resident_bytes, step_peak_bytes
from .results import add_record, result_document
from .timing import sync

LOSSES = ("fused", "plain")
PLAIN_SUFFIX = "/plain-loss"


@dataclass
class TrainResult:
    backend: str  # the row: backend, "+compile", and "/plain-loss" for a triton row without the fused loss
    preset: str
    batch: int
    block_size: int
    tokens_per_s: float
    ms_per_step: float
    fwd_ms: float
    bwd_ms: float
    opt_ms: float
    mfu: float | None
    loss: str = "plain"  # "fused": head + loss in one op; "plain": the logits materialised
    peak_memory_bytes: int | None = None  # a step's peak footprint, everything resident included
    max_batch: int | None = None  # the largest batch that fits (None: not searched)
    max_batch_probes: list[tuple[int, bool]] = field(default_factory=list, repr=False)
    # Every timed step: (forward, backward, optimizer) seconds; not in the table, kept for the records.
    step_samples: list[tuple[float, float, float]] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Row:
    backend: str  # "triton" or "torch"
    compile: bool
    loss: str  # "fused" or "plain"

    @property
    def name(self) -> str:
        return self.backend + ("+compile" if self.compile else "") + \
            (PLAIN_SUFFIX if self.backend == "triton" and self.loss == "plain" else "")


def plan_rows(backends: list[str], losses: tuple[str, ...] = LOSSES) -> list[Row]:
    """One row per backend, two for a triton backend asked for both losses; the torch backends have only the
    plain path (their ``lm_loss`` materialises the logits)."""
    rows: list[Row] = []
    for b in dict.fromkeys(backends):  # a repeated backend would repeat a record name
        backend, compile_ = b.split("+")[0], b.endswith("+compile")
        for loss in (losses if backend == "triton" else ("plain",)):
            rows.append(Row(backend, compile_, loss))
    return rows


class _Stepper:
    """One model, optimizer and compiled form per row; ``step(batch)`` runs one full optimizer step."""

    def __init__(self, preset: str, row: Row, block: int | None, device: torch.device):
        from tritongpt.engine import GPT
        from tritongpt.engine.train import make_optimizer
        from tritongpt.engine.train.train_config import TrainConfig

        torch.manual_seed(0)
        overrides = {"dropout": 0.0, **({"block_size": block} if block else {})}
        self.model = GPT.from_preset(preset, **overrides).to(device)
        self.model.backend = row.backend
        self.opt = make_optimizer(self.model, TrainConfig(), device)
        self.step_model = torch.compile(self.model) if row.compile else self.model
        # Training's call is return_logits=False; a triton row asked for the plain loss materialises the logits
        # (the torch backend's lm_loss always does).
        self.return_logits, self.device = row.backend == "triton" and row.loss == "plain", device
        self.amp = device.type == "cuda"
        self.T, self.V = self.model.config.block_size, self.model.config.vocab_size

    def batch(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randint(0, self.V, (rows, self.T), device=self.device),
                torch.randint(0, self.V, (rows, self.T), device=self.device))

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
        """(forward, backward, optimizer) seconds of one step."""
        dev = self.device
        sync(dev)
        t0 = time.perf_counter()
        with torch.autocast(dev.type, torch.bfloat16, enabled=self.amp):
            loss = self.step_model(x, y, return_logits=self.return_logits)[1]
        sync(dev)
        t1 = time.perf_counter()
        loss.backward()
        sync(dev)
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sync(dev)
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    def footprint(self, x: torch.Tensor, y: torch.Tensor) -> int:
        """Peak bytes of one step: what stays resident (weights, optimizer state, the batch) plus the step's
        own peak (activations, gradients, the loss's buffers)."""
        if self.device.type == "cuda":
            resident = torch.cuda.memory_allocated(self.device)
        else:
            state = [t for s in self.opt.state.values() for t in s.values()]
            resident = resident_bytes([*self.model.parameters(), *state, x, y])
        return resident + step_peak_bytes(lambda: self.step(x, y), self.device)

    def fits(self, rows: int, limit: int | None) -> bool:
        """A step at this batch runs without running out of memory and within ``limit`` bytes (if given)."""
        try:
            peak = self.footprint(*self.batch(rows))
        except torch.cuda.OutOfMemoryError:
            peak = None
        finally:
            self.opt.zero_grad(set_to_none=True)
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return peak is not None and (limit is None or peak <= limit)


def time_backend(preset: str, row: Row, batch: int, block: int | None, steps: int, warmup: int,
                 device: torch.device, *, max_batch: bool = False, memory_limit: int | None = None,
                 batch_cap: int = 1024) -> TrainResult:
    from tritongpt.engine.gpu_peaks import lookup

    st = _Stepper(preset, row, block, device)
    x, y = st.batch(batch)
    times = [st.step(x, y) for _ in range(warmup)]
    if device.type == "cuda":
        # The timed steps' peak, everything resident included (the CPU's is counted on one more step).
        torch.cuda.reset_peak_memory_stats(device)
    times = [st.step(x, y) for _ in range(steps)]
    peak_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else st.footprint(x, y)
    fwd, bwd, op = (statistics.median(c) for c in zip(*times, strict=True))
    step = statistics.median(sum(t) for t in times)
    tps = batch * st.T / step
    peak = lookup(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    mfu = st.model.flops_per_token(st.T) * tps / (peak.bf16_tflops * 1e12) if peak else None
    result = TrainResult(row.name, preset, batch, st.T, tps, 1e3 * step, 1e3 * fwd, 1e3 * bwd, 1e3 * op, mfu,
                         row.loss, peak_mem, step_samples=times)
    del x, y
    if max_batch:
        result.max_batch, result.max_batch_probes = largest_fitting(lambda n: st.fits(n, memory_limit), batch,
                                                                    batch_cap)
    return result


def run(preset: str | None, batch: int | None, block: int | None, steps: int, warmup: int,
        backends: list[str], progress=print, *, losses: tuple[str, ...] = LOSSES, max_batch: bool = False,
        memory_limit: int | None = None, batch_cap: int = 1024, interpreter: bool = False) -> dict[str, Any]:
    """Time each row (``plan_rows``); returns the ``tritongpt-bench/1`` result (suite "train")."""
    from .generate import device_name

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = preset or ("gpt2" if dev.type == "cuda" else "cpu-demo")
    batch = batch or (16 if dev.type == "cuda" else 4)
    rec = EnvironmentRecorder(dev).start()
    progress(format_environment_line(rec.environment()))
    progress(HEADER)
    doc = result_document("train", {})
    results = []
    for row in plan_rows(backends, losses):
        if row.backend == "triton" and dev.type != "cuda" and not interpreter:
            progress(f"{row.name}: skipped on CPU (the kernels run only on the interpreter there)")
            doc["skipped"].append({"name": f"train/{row.name}/step", "reason": "CPU: the Triton kernels run only "
                                   "on the interpreter there"})
            continue
        r = time_backend(preset, row, batch, block, steps, warmup, dev, max_batch=max_batch,
                         memory_limit=memory_limit, batch_cap=batch_cap)
        results.append(r)
        progress(format_row(r))
        fwd, bwd, opt = (list(c) for c in zip(*r.step_samples, strict=True))
        add_record(doc, f"train/{r.backend}/step", [sum(t) for t in r.step_samples], provider=r.backend,
                   params={"preset": r.preset, "B": r.batch, "T": r.block_size, "warmup": warmup, "loss": r.loss},
                   phase_samples={"fwd": fwd, "bwd": bwd, "opt": opt}, tokens_per_step=r.batch * r.block_size,
                   mfu=r.mfu, peak_memory_bytes=r.peak_memory_bytes, max_batch=r.max_batch,
                   max_batch_probes=[list(p) for p in r.max_batch_probes] or None,
                   memory_limit_bytes=memory_limit)
    rec.stop()
    doc["environment"] = env = rec.environment()
    if warning := throttle_warning(env):
        progress(warning)
    doc["report"] = {"benchmark": "train", "device": device_name(dev), "torch": torch.__version__,
                     "interpreter": dev.type != "cuda" and interpreter, "memory_limit_bytes": memory_limit,
                     "results": [{k: v for k, v in asdict(r).items() if k not in ("step_samples", "max_batch_probes")}
                                 for r in results]}
    for line in memory_summary(results):
        progress(line)
    return doc


HEADER = f"{'backend':<24} {'preset':<10} {'B x T':>10} {'tok/s':>10} {'ms/step':>8} {'fwd':>7} {'bwd':>7} " \
         f"{'opt':>7} {'MFU':>6} {'peak MiB':>9} {'max B':>6}"


def format_row(r: TrainResult) -> str:
    mfu = f"{r.mfu:>6.1%}" if r.mfu is not None else f"{'n/a':>6}"
    mem = f"{r.peak_memory_bytes / 2**20:>9,.0f}" if r.peak_memory_bytes is not None else f"{'n/a':>9}"
    top = f"{r.max_batch:>6}" if r.max_batch is not None else f"{'-':>6}"
    return (f"{r.backend:<24} {r.preset:<10} {f'{r.batch}x{r.block_size}':>10} {r.tokens_per_s:>10,.0f} "
            f"{r.ms_per_step:>8.1f} {r.fwd_ms:>7.1f} {r.bwd_ms:>7.1f} {r.opt_ms:>7.1f} {mfu} {mem} {top}")


def memory_summary(results: list[TrainResult]) -> list[str]:
    """Fused vs plain loss of the same backend: peak memory and largest batch, as ratios."""
    out = []
    by = {r.backend: r for r in results}
    for plain in (r for r in results if r.backend.endswith(PLAIN_SUFFIX)):
        fused = by.get(plain.backend.removesuffix(PLAIN_SUFFIX))
        if fused is None or not fused.peak_memory_bytes or not plain.peak_memory_bytes:
            continue
        line = (f"{fused.backend}: fused LM head + loss peaks at {fused.peak_memory_bytes / 2**20:,.0f} MiB, "
                f"{fused.peak_memory_bytes / plain.peak_memory_bytes:.2f}x the plain loss's "
                f"{plain.peak_memory_bytes / 2**20:,.0f} MiB; {plain.ms_per_step / fused.ms_per_step:.2f}x its speed")
        if fused.max_batch is not None and plain.max_batch is not None:
            line += f"; largest batch {fused.max_batch} vs {plain.max_batch}"
        out.append(line)
    return out
