"""``run_loop``: one training run from a ``RunConfig`` (see ``train.py`` for the data and MFU rules)."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import train_checkpoint as ckpt
from .train import (
    TrainingError,
    Windows,
    _dist,
    _rng_state,
    _set_rng_state,
    _Stop,
    _truncate_metrics,
    batch_rows,
    check_run_folder,
    lr_at,
    make_optimizer,
    make_run_folder,
    run_warnings,
    warn,
)
from .train_config import RunConfig


def _log(quiet: bool, rank: int, msg: str) -> None:
    if not quiet and rank == 0:
        print(msg, flush=True)


def _build_model(run: RunConfig, vocab_size: int, device: torch.device):
    from .config import GPTConfig
    from .model import GPT

    t = run.train
    model_cfg = {"vocab_size": vocab_size, **run.model}
    if t.init_from:
        model = GPT.from_pretrained(t.init_from, **{k: v for k, v in run.model.items() if k in ("dropout", "backend")})
    else:
        model = GPT(GPTConfig.from_dict(model_cfg))
    model = model.to(device)
    model.backend = t.backend
    return model


def run_loop(run: RunConfig, out: Path, *, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    from tritongpt.bench.devices import lookup

    from .data import TokenDataset
    from .devices import resolve_device

    t = run.train
    rank, world, local_rank = _dist()
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
    train_ds, val_ds = TokenDataset(run.data, "train"), TokenDataset(run.data, "val")
    model = _build_model(run, train_ds.vocab_needed, device)
    for ds in (train_ds, val_ds):
        ds.check_vocab(model.config.vocab_size, _vocab_source(run))
    T = model.config.block_size
    train_w, val_w = Windows(train_ds, T), Windows(val_ds, T)
    optimizer = make_optimizer(model, t, device)
    if rank == 0:
        for line in run_warnings(t, T, world, {"train": len(train_ds), "val": len(val_ds)}):
            warn(line)

    metrics_path = out / "metrics.jsonl"
    start = _restore(out, model, optimizer, device, resume=resume, rank=rank, quiet=quiet)
    last_good = start  # the step of an intact checkpoint of this run, None before the first
    start = start or 0
    if start >= t.max_iters:
        if rank == 0:
            print(f"nothing to do: the run in {out} is at step {start} >= train.max_iters = {t.max_iters}; raise it "
                  f"(--set train.max_iters=N) to train further", file=sys.stderr, flush=True)
        _end_dist(world, own_pg)
        return {"step": start, "stopped_by": None, "val_loss": None, "nothing_to_do": True}

    raw_model = model
    if t.compile:
        model = torch.compile(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    meta = {"tokenizer": train_ds.tokenizer_meta, "run": run.to_dict()}
    peak = lookup(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    flops_tok = raw_model.flops_per_token(T)
    rows = t.batch_size * world
    tokens_per_step = rows * t.grad_accum * T
    val_starts = torch.randint(0, len(val_w) - T, (t.eval_iters * t.batch_size,),
                               generator=torch.Generator().manual_seed(t.seed + 1))
    ckpt_every = t.ckpt_interval or t.eval_interval

    def evaluate() -> float:
        raw_model.eval()
        total = 0.0
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
            for chunk in val_starts.split(t.batch_size):
                x, y = val_w.get(chunk, device)
                total += raw_model(x, y)[1].item() * len(chunk)
        raw_model.train()
        loss = total / len(val_starts)
        if world > 1:  # same windows on every rank; average anyway so every rank reports one number
            import torch.distributed as dist

            v = torch.tensor([loss], device=device)
            dist.all_reduce(v)
            loss = v.item() / world
        return loss

    def save(step: int) -> Path | None:
        if rank != 0:
            return None
        return ckpt.save(out, raw_model, optimizer, step, _rng_state(device), meta, t.keep_last)

    def write_metrics(rec: dict[str, Any]) -> None:
        if rank != 0:
            return
        try:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        except OSError as e:  # a write error carries no file name: add it
            raise OSError(e.errno, e.strerror or str(e), str(metrics_path)) from e

    progress = None
    if not quiet and rank == 0:
        from tqdm import tqdm

        progress = tqdm(total=t.max_iters, initial=start, unit="step", dynamic_ncols=True)

    model.train()
    result: dict[str, Any] = {"step": start, "stopped_by": None, "val_loss": None}
    t_last = time.perf_counter()
    stop_votes = 0.0  # ranks that had a signal at this step's all-reduce (multi-process runs)

    def stop_requested() -> bool:
        return stop_votes > 0 if world > 1 else stop.signal is not None

    def stopped_by() -> str:
        return signal.Signals(stop.signal).name if stop.signal is not None else "SIGTERM (on another rank)"

    with _Stop() as stop:
        step = start
        while step < t.max_iters:
            lr = lr_at(step, t)
            for g in optimizer.param_groups:
                g["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for micro in range(t.grad_accum):
                starts = batch_rows(len(train_w), T, rows, t.seed, step, micro)[rank * t.batch_size:
                                                                               (rank + 1) * t.batch_size]
                x, y = train_w.get(starts, device)
                sync = micro == t.grad_accum - 1
                ctx = model.no_sync() if world > 1 and not sync else contextlib.nullcontext()
                with ctx, torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                    loss = model(x, y)[1]  # not the logits: kept alive, they would outlive the backward
                (loss / t.grad_accum).backward()
                loss_sum += loss.detach()
            train_loss = loss_sum / t.grad_accum
            if world > 1:
                import torch.distributed as dist

                # The stop request travels with the loss: every rank stops after the same step. A
                # signal seen by some ranks only (it reaches each process at its own moment) would
                # otherwise leave the others waiting in the next step's collectives.
                packed = torch.stack([train_loss, torch.tensor(float(stop.signal is not None), device=device)])
                dist.all_reduce(packed)
                train_loss, stop_votes = packed.tolist()
                train_loss /= world
            else:
                train_loss = train_loss.item()
            if not math.isfinite(train_loss):
                optimizer.zero_grad(set_to_none=True)
                if t.nan_policy == "stop":
                    kept = (f"the last good checkpoint (step {last_good}) is intact" if last_good is not None
                            else "no checkpoint of this run exists yet")
                    raise TrainingError(f"non-finite training loss ({train_loss}) at step {step}; {kept}. Lower "
                                        "train.lr, or set train.nan_policy=\"skip\" to skip such steps")
                _log(quiet, rank, f"step {step}: non-finite loss, step skipped")
                step += 1
                if stop_requested():  # a run that only skips must still stop on a signal
                    save(step)  # a skipped step leaves the weights as they were
                    result["stopped_by"] = stopped_by()
                    break
                continue
            grad_norm = None
            if t.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), t.grad_clip).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            tps = tokens_per_step / (now - t_last)
            rec: dict[str, Any] = {"step": step, "train_loss": train_loss, "lr": lr, "tokens_per_s": tps}
            if grad_norm is not None:
                rec["grad_norm"] = grad_norm
            if device.type == "cuda":
                rec["mfu"] = flops_tok * tps / world / (peak.bf16_tflops * 1e12) if peak else None
            if step % t.eval_interval == 0 or step == t.max_iters:
                val = evaluate()
                rec["val_loss"], rec["val_ppl"] = val, math.exp(min(val, 50.0))
                result["val_loss"] = val
                _log(quiet, rank, f"\nstep {step}: train {train_loss:.4f}  val {val:.4f}  (ppl {rec['val_ppl']:.2f})")
                if t.sample_tokens and rank == 0:
                    _log(quiet, rank, _sample(raw_model, train_ds, t))
            if step % t.log_interval == 0 or "val_loss" in rec:
                write_metrics(rec)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{train_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}")
            if step % ckpt_every == 0 or step == t.max_iters:
                save(step)
                last_good = step
            if stop_requested():
                if last_good != step:
                    save(step)
                result["stopped_by"] = stopped_by()
                break
            t_last = time.perf_counter()  # evaluation, sampling and checkpoints are not training time
        result["step"] = step
    if progress is not None:
        progress.close()
    if rank == 0 and t.plot and result["stopped_by"] is None:
        from .train_plot import plot_metrics

        result["plot"] = str(plot_metrics(metrics_path, out / "loss.png"))
    _end_dist(world, own_pg)
    return result


def _end_dist(world: int, own_pg: bool) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if own_pg:
            dist.destroy_process_group()


def _vocab_source(run: RunConfig) -> str:
    """Where the model's vocab_size comes from, for the error that finds it too small."""
    if run.train.init_from:
        return f"train.init_from {run.train.init_from}"
    return "model.vocab_size" if "vocab_size" in run.model else "the model"


def _restore(out: Path, model, optimizer, device: torch.device, *, resume: bool, rank: int,
             quiet: bool) -> int | None:
    """Create the run folder and clear what an interrupted save left there; with ``resume``, load the
    newest intact checkpoint. Returns its step, or None for a run that starts afresh."""
    from .fsutil import recover_leftovers

    make_run_folder(out)
    metrics_path = out / "metrics.jsonl"
    if rank == 0:
        for line in ckpt.recover(out) + recover_leftovers(out, metrics_path.name):
            warn(line)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # a checkpoint restored above must be seen by every rank alike
    if resume:
        loaded = ckpt.load_newest(out, model, optimizer, warn if rank == 0 else _ignore, set_aside=rank == 0)
        if loaded is not None:
            state, path = loaded
            _set_rng_state(state, device)
            if rank == 0:
                _truncate_metrics(metrics_path, state["step"])
            _log(quiet, rank, f"resumed from {path} at step {state['step']}")
            return state["step"]
        if rank == 0:
            warn(f"--resume: no checkpoint in {ckpt.checkpoint_root(out)} yet; starting at step 0")
    existing = ckpt.list_checkpoints(out)
    if existing:
        raise TrainingError(f"{out} already has checkpoints (newest {existing[-1][1].name}): pass --resume to "
                            "continue it, or choose a new --out")
    if rank == 0 and metrics_path.exists():
        metrics_path.unlink()
    return None


def _ignore(msg: str) -> None:
    """Warnings of ranks other than 0: rank 0 prints the same ones."""


def _sample(model, ds, t) -> str:
    from .generation import generate
    from .tokenizer import tokenizer_from_dict

    tok = tokenizer_from_dict(ds.tokenizer_meta)
    try:
        prompt = tok.encode(t.sample_prompt) or [0]
    except ValueError:
        prompt = [0]
    n = min(t.sample_tokens, model.config.block_size - len(prompt))
    if n < 1:
        return ""
    out = generate(model, [prompt], n, temperature=0.8, top_k=200, seed=t.seed, vocab_limit=tok.vocab_size)[0]
    return "--- sample ---\n" + t.sample_prompt + tok.decode(out) + "\n--------------"
