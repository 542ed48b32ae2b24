"""The steps every training run shares, whatever it trains: the session (device, ranks, autocast), restore
or refuse an existing run folder, the optimizer step with accumulation, the NaN guard, evaluation,
metrics, checkpoints and stop signals. A task (language modelling in ``train_loop.py``, fine-tuning in
``finetune.py``) supplies its batches, its loss and its evaluation (:class:`Task`); :func:`run_steps`
is the one loop.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from . import train_checkpoint as ckpt
from .run_state import StopSignals, dist_env, rng_state, set_rng_state, truncate_metrics
from .train_setup import TrainingError, lr_at, make_run_folder
from .train_setup import warn as warn_line


class Task(Protocol):
    """What a run trains on. ``batch`` returns this rank's micro-batch (on the device) as a function of
    (step, micro) only, so resume and DDP stay exact; ``loss`` runs the (possibly DDP-wrapped) model on it;
    ``evaluate`` returns metrics of the raw model (``val_loss`` among them), called in eval mode without
    gradients; ``describe`` turns an evaluated record into the log line; ``extra`` adds per-step fields."""

    tokens_per_step: int  # for tokens/s (0: not a token count)
    flops_per_token: float  # for MFU on GPUs (0: none)

    def batch(self, step: int, micro: int) -> tuple: ...
    def loss(self, model, batch: tuple) -> torch.Tensor: ...
    def evaluate(self, model) -> dict[str, float]: ...
    def describe(self, rec: dict[str, Any]) -> str: ...
    def extra(self, step: int) -> dict[str, Any]: ...
    def after_eval(self, model) -> str | None: ...
    def plot(self, metrics_path: Path, out: Path) -> Path | None: ...


@dataclass
class Session:
    """A started run: its folder, this process's device and rank, bf16 autocast or not."""

    out: Path
    device: torch.device
    rank: int
    world: int
    autocast: bool
    quiet: bool
    own_pg: bool = False
    stop: StopSignals = field(default_factory=StopSignals)
    stop_votes: float = 0.0  # ranks that had a signal at the last step's all-reduce (multi-process runs)

    def log(self, msg: str) -> None:
        if not self.quiet and self.rank == 0:
            print(msg, flush=True)

    def warn(self, msg: str) -> None:
        if self.rank == 0:
            warn_line(msg)


def open_session(t, out: Path, quiet: bool) -> Session:
    """Device and process group from the environment (torchrun), the seed, and a usable run folder path."""
    from ..devices import resolve_device
    from .train_setup import check_run_folder

    rank, world, local_rank = dist_env()
    device = resolve_device(t.device, "train.device", local_rank)  # "cuda": this rank's GPU, not GPU 0 for all
    own_pg = False
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            torch.cuda.set_device(device)  # before NCCL creates its communicators
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            own_pg = True
    autocast = (t.dtype == "bfloat16") or (t.dtype == "auto" and device.type == "cuda")
    torch.manual_seed(t.seed)  # model init and dropout; identical on every rank
    check_run_folder(out)
    return Session(out, device, rank, world, autocast, quiet, own_pg)


def close_session(s: Session) -> None:
    if s.world > 1:
        import torch.distributed as dist

        dist.barrier()
        if s.own_pg:
            dist.destroy_process_group()


def restore(s: Session, model, optimizer, *, resume: bool) -> int | None:
    """Create the run folder and clear what an interrupted save left there; with ``resume``, load the
    newest intact checkpoint. Returns its step, or None for a run that starts afresh."""
    from ..fsutil import recover_leftovers

    out = s.out
    make_run_folder(out)
    metrics_path = out / "metrics.jsonl"
    if s.rank == 0:
        for line in ckpt.recover(out) + recover_leftovers(out, metrics_path.name):
            warn_line(line)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # a checkpoint restored above must be seen by every rank alike
    if resume:
        loaded = ckpt.load_newest(out, model, optimizer, warn_line if s.rank == 0 else _ignore, set_aside=s.rank == 0)
        if loaded is not None:
            state, path = loaded
            set_rng_state(state, s.device)
            if s.rank == 0:
                truncate_metrics(metrics_path, state["step"])
            s.log(f"resumed from {path} at step {state['step']}")
            return state["step"]
        s.warn(f"--resume: no checkpoint in {ckpt.checkpoint_root(out)} yet; starting at step 0")
    existing = ckpt.list_checkpoints(out)
    if existing:
        raise TrainingError(f"{out} already has checkpoints (newest {existing[-1][1].name}): pass --resume to "
                            "continue it, or choose a new --out")
    if s.rank == 0 and metrics_path.exists():
        metrics_path.unlink()
    return None


def _ignore(msg: str) -> None:
    """Warnings of ranks other than 0: rank 0 prints the same ones."""


def mean_over_ranks(s: Session, values: dict[str, float]) -> dict[str, float]:
    """Every rank evaluates the same data; the mean keeps one number per metric across ranks anyway."""
    if s.world == 1 or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    v = torch.tensor([float(values[k]) for k in keys], device=s.device)
    dist.all_reduce(v)
    return {k: x / s.world for k, x in zip(keys, v.tolist(), strict=True)}


def evaluate(s: Session, task: Task, raw_model) -> dict[str, float]:
    was = raw_model.training
    raw_model.eval()
    with torch.no_grad(), torch.autocast(s.device.type, torch.bfloat16, enabled=s.autocast):
        values = task.evaluate(raw_model)
    raw_model.train(was)
    return mean_over_ranks(s, values)


def accumulate(s: Session, task: Task, model, t, step: int) -> float:
    """Forward and backward over ``grad_accum`` micro-batches; returns the mean loss over ranks. The stop
    request travels with the loss in one all-reduce, so every rank stops after the same step (a signal
    reaches each process at its own moment)."""
    loss_sum = torch.zeros((), device=s.device)
    for micro in range(t.grad_accum):
        batch = task.batch(step, micro)
        last = micro == t.grad_accum - 1
        ctx = model.no_sync() if s.world > 1 and not last else contextlib.nullcontext()
        with ctx, torch.autocast(s.device.type, torch.bfloat16, enabled=s.autocast):
            loss = task.loss(model, batch)
        (loss / t.grad_accum).backward()
        loss_sum += loss.detach()
    train_loss = loss_sum / t.grad_accum
    if s.world == 1:
        return train_loss.item()
    import torch.distributed as dist

    packed = torch.stack([train_loss, torch.tensor(float(s.stop.signal is not None), device=s.device)])
    dist.all_reduce(packed)
    loss, votes = packed.tolist()
    s.stop_votes = votes
    return loss / s.world


def stop_requested(s: Session) -> bool:
    return s.stop_votes > 0 if s.world > 1 else s.stop.signal is not None


def stopped_by(s: Session) -> str:
    return signal.Signals(s.stop.signal).name if s.stop.signal is not None else "SIGTERM (on another rank)"


class Metrics:
    """``metrics.jsonl``, appended by rank 0 only."""

    def __init__(self, s: Session) -> None:
        self.path = s.out / "metrics.jsonl"
        self.rank = s.rank

    def write(self, rec: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        except OSError as e:  # a write error carries no file name: add it
            raise OSError(e.errno, e.strerror or str(e), str(self.path)) from e


def _nan_step(s: Session, t, step: int, train_loss: float, last_good: int | None) -> None:
    if t.nan_policy == "stop":
        kept = (f"the last good checkpoint (step {last_good}) is intact" if last_good is not None
                else "no checkpoint of this run exists yet")
        raise TrainingError(f"non-finite training loss ({train_loss}) at step {step}; {kept}. Lower "
                            "train.lr, or set train.nan_policy=\"skip\" to skip such steps")
    s.log(f"step {step}: non-finite loss, step skipped")


def run_steps(s: Session, task: Task, raw_model, optimizer, t, meta: dict[str, Any], *, resume: bool,
              peak_tflops: float | None = None, keep_last: int | None = None) -> dict[str, Any]:
    """The loop from the restored (or first) step to ``t.max_iters``; returns the final step, the last
    evaluation and what stopped it."""
    start = restore(s, raw_model, optimizer, resume=resume)
    if (start or 0) >= t.max_iters:
        return _nothing_to_do(s, t, start or 0)
    loop = _Loop(s, task, raw_model, _wrap(s, raw_model, t), optimizer, t, meta, keep_last, peak_tflops, start)
    with s.stop:
        loop.run()
    if loop.progress is not None:
        loop.progress.close()
    result = loop.result
    if s.rank == 0 and t.plot and result["stopped_by"] is None:
        plotted = task.plot(loop.metrics.path, s.out)
        if plotted is not None:
            result["plot"] = str(plotted)
    return result


def _nothing_to_do(s: Session, t, step: int) -> dict[str, Any]:
    if s.rank == 0:
        key = "epochs" if getattr(t, "epochs", None) else "max_iters"
        print(f"nothing to do: the run in {s.out} is at step {step} >= train.max_iters = {t.max_iters}; raise "
              f"it (--set train.{key}=N) to train further", file=sys.stderr, flush=True)
    return {"step": step, "stopped_by": None, "val_loss": None, "nothing_to_do": True}


class _Loop:
    """One run's steps: each is an optimizer step (``_train_step``), then its bookkeeping (``_after_step``):
    metrics, evaluation, progress, checkpoints and stop signals."""

    def __init__(self, s: Session, task: Task, raw_model, model, optimizer, t, meta: dict[str, Any],
                 keep_last: int | None, peak_tflops: float | None, start: int | None) -> None:
        self.s, self.task, self.raw_model, self.model, self.optimizer, self.t = s, task, raw_model, model, optimizer, t
        self.meta, self.keep_last, self.peak_tflops = meta, keep_last, peak_tflops
        self.last_good = start  # the step of an intact checkpoint of this run, None before the first
        self.step = start or 0
        self.metrics = Metrics(s)
        self.trained = [p for p in raw_model.parameters() if p.requires_grad]  # what clipping sees, once
        self.progress = _progress(s, t, self.step)
        self.ckpt_every = t.ckpt_interval or t.eval_interval
        self.result: dict[str, Any] = {"step": self.step, "stopped_by": None, "val_loss": None}

    def save(self, step: int) -> None:
        if self.s.rank == 0:
            ckpt.save(self.s.out, self.raw_model, self.optimizer, step, rng_state(self.s.device), self.meta,
                      self.keep_last or self.t.keep_last)

    def run(self) -> None:
        self.model.train()
        t_last = time.perf_counter()
        while self.step < self.t.max_iters:
            outcome = self._train_step(t_last)
            if outcome == "stop":
                break
            if outcome != "skipped":  # a skipped step's time stays in the next step's
                t_last = time.perf_counter()  # evaluation, sampling and checkpoints are not training time
        self.result["step"] = self.step

    def _train_step(self, t_last: float) -> str:
        """One optimizer step and its bookkeeping: "done", "skipped" (a non-finite loss under
        nan_policy=skip) or "stop" (a stop signal ends the run)."""
        s, t, optimizer = self.s, self.t, self.optimizer
        lr = lr_at(self.step, t)
        for g in optimizer.param_groups:
            g["lr"] = lr
        train_loss = accumulate(s, self.task, self.model, t, self.step)
        if not math.isfinite(train_loss):
            optimizer.zero_grad(set_to_none=True)
            _nan_step(s, t, self.step, train_loss, self.last_good)
            self.step += 1
            if stop_requested(s):  # a run that only skips must still stop on a signal
                self.save(self.step)  # a skipped step leaves the weights as they were
                self.result["stopped_by"] = stopped_by(s)
                return "stop"
            return "skipped"
        grad_norm = None
        if t.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trained, t.grad_clip).item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if s.device.type == "cuda":
            torch.cuda.synchronize(s.device)
        rec = _record(s, self.task, self.step, train_loss, lr, grad_norm, time.perf_counter() - t_last,
                      self.peak_tflops)
        return "stop" if self._after_step(rec) else "done"

    def _after_step(self, rec: dict[str, Any]) -> bool:
        """Metrics, evaluation, progress, checkpoints; True when a stop signal ends the run."""
        s, t, step = self.s, self.t, self.step
        if step % t.eval_interval == 0 or step == t.max_iters:
            rec.update(evaluate(s, self.task, self.raw_model))
            self.result.update({k: v for k, v in rec.items() if k.startswith("val_")})
            s.log("\n" + self.task.describe(rec))
            note = self.task.after_eval(self.raw_model) if s.rank == 0 else None
            if note:
                s.log(note)
        if step % t.log_interval == 0 or "val_loss" in rec:
            self.metrics.write(rec)
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(_postfix(rec))
        if step % self.ckpt_every == 0 or step == t.max_iters:
            self.save(step)
            self.last_good = step
        if stop_requested(s):
            if self.last_good != step:
                self.save(step)
            self.result["stopped_by"] = stopped_by(s)
            return True
        return False


def _wrap(s: Session, raw_model, t):
    model = raw_model
    if t.compile:
        model = torch.compile(model)
    if s.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[s.device.index] if s.device.type == "cuda" else None)
    return model


def _progress(s: Session, t, start: int):
    if s.quiet or s.rank != 0:
        return None
    from tqdm import tqdm

    return tqdm(total=t.max_iters, initial=start, unit="step", dynamic_ncols=True)


def _record(s: Session, task: Task, step: int, train_loss: float, lr: float, grad_norm: float | None,
            seconds: float, peak_tflops: float | None) -> dict[str, Any]:
    rec: dict[str, Any] = {"step": step, "train_loss": train_loss, "lr": lr}
    if task.tokens_per_step:
        rec["tokens_per_s"] = task.tokens_per_step / seconds
    if grad_norm is not None:
        rec["grad_norm"] = grad_norm
    rec.update(task.extra(step))
    if s.device.type == "cuda" and task.flops_per_token and "tokens_per_s" in rec:
        rec["mfu"] = (task.flops_per_token * rec["tokens_per_s"] / s.world / (peak_tflops * 1e12)
                      if peak_tflops else None)
    return rec


def _postfix(rec: dict[str, Any]) -> dict[str, str]:
    out = {"loss": f"{rec['train_loss']:.4f}", "lr": f"{rec['lr']:.2e}"}
    if "tokens_per_s" in rec:
        out["tok_s"] = f"{rec['tokens_per_s']:,.0f}"
    if "epoch" in rec:
        out["epoch"] = f"{rec['epoch']:.2f}"
    return out
