"""The training loop: AdamW, warmup + cosine LR, clipping, accumulation, autocast, DDP, checkpoints.

Data: every optimizer step draws its global batch (``batch_size`` x world size rows per micro-step)
from a generator seeded by (seed, step, micro-step); rank r takes rows [r*B, (r+1)*B). So each rank's
stream is disjoint from the others', a single process with the same global batch sees exactly the
same rows as a DDP job, and the data position of a checkpoint is simply its step: ``--resume``
continues with the very batches the uninterrupted run would have drawn. Dropout draws from the
global RNG, whose state is checkpointed too, so a resumed CPU run repeats the uninterrupted losses.

MFU = flops_per_token (6N + 6LTC, forward + backward, ``GPT.flops_per_token``) x tokens/s per GPU /
the GPU's dense bf16 peak from ``bench/devices.py``; an unknown GPU gets ``null``, a CPU run none.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .train_config import RunConfig


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss with nan_policy=stop, existing run without --resume)."""


def lr_at(step: int, t) -> float:
    """Linear warmup to ``lr`` over ``warmup_iters``, then cosine down to ``min_lr`` at ``lr_decay_iters``."""
    if t.warmup_iters and step < t.warmup_iters:
        return t.lr * (step + 1) / t.warmup_iters
    end = t.lr_decay_iters or t.max_iters
    if step >= end:
        return t.min_lr
    frac = (step - t.warmup_iters) / max(1, end - t.warmup_iters)
    return t.min_lr + 0.5 * (1.0 + math.cos(math.pi * frac)) * (t.lr - t.min_lr)


def make_optimizer(model, t, device: torch.device) -> torch.optim.AdamW:
    """Weight decay on matrices (>= 2-D) only: not on biases, LayerNorm gains or... the embeddings'
    rows are matrices and decay like GPT-2's. Fused AdamW on CUDA."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kw = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), **kw)


def batch_rows(n_tokens: int, T: int, rows: int, seed: int, step: int, micro: int) -> torch.Tensor:
    """Window starts of one global micro-batch: a function of (seed, step, micro) only."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + micro) % (2**63))
    return torch.randint(0, n_tokens - T, (rows,), generator=g)


class Windows:
    """(x, y) int64 batches of T-token windows from a token dataset (``TokenDataset``)."""

    def __init__(self, ds, T: int) -> None:
        if len(ds) < T + 2:
            raise ValueError(f"data: {len(ds)} tokens in the {ds.split} split, fewer than block_size + 2 = {T + 2}")
        self.ds, self.T = ds, T

    def __len__(self) -> int:
        return len(self.ds)

    def get(self, starts: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        w = np.stack([self.ds.window(int(s), self.T + 1) for s in starts.tolist()]).astype(np.int64)
        xy = torch.from_numpy(w)
        x, y = xy[:, :-1], xy[:, 1:]
        if device.type == "cuda":
            # x and y are strided views: pinning them keeps the strides, and a strided host-to-device
            # copy goes through a contiguous *pageable* temporary, so the pinning would be wasted.
            # One contiguous pinned (2, B, T) buffer, one asynchronous copy.
            buf = torch.empty((2, *x.shape), dtype=torch.int64, pin_memory=True)
            buf[0].copy_(x)
            buf[1].copy_(y)
            buf = buf.to(device, non_blocking=True)
            return buf[0], buf[1]
        return x.contiguous(), y.contiguous()


def _dist() -> tuple[int, int, int]:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


class _Stop:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step boundary and exits 0."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _rng_state(device: torch.device) -> dict[str, Any]:
    """The CPU generator and the training GPU's. Every rank seeds alike and draws alike, so rank 0's
    state is every rank's: saving all GPUs' generators of process 0 (``get_rng_state_all``) would
    hand rank r, on resume, process 0's never-used generator for GPU r instead."""
    st = {"rng_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        st["rng_cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(st["rng_cpu"])
    cuda = st.get("rng_cuda")
    if device.type != "cuda" or cuda is None:
        return
    if isinstance(cuda, (list, tuple)):  # a per-GPU list (older checkpoints): this GPU's entry, if any
        i = device.index if device.index is not None else torch.cuda.current_device()
        if i >= len(cuda):
            return
        cuda = cuda[i]
    torch.cuda.set_rng_state(cuda, device)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop lines of steps after the checkpoint (the interrupted run logged them)."""
    from .fsutil import atomic_write_text

    if not path.exists():
        return
    keep = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if _step_of(ln) <= last_step]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _step_of(line: str) -> float:
    """A metrics line's step; inf (dropped) for a line a kill cut short or that is not a record."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return math.inf
    step = rec.get("step", 0) if isinstance(rec, dict) else None
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else math.inf


def warn(msg: str) -> None:
    """One ``warning: ...`` line on stderr (shown with --quiet too: it is not progress)."""
    print(f"warning: {' '.join(msg.split())}", file=sys.stderr, flush=True)


def run_warnings(t, block_size: int, world: int, split_tokens: dict[str, int]) -> list[str]:
    """Settings that run but probably not as meant: one line each."""
    out = []
    rows = t.batch_size * world
    for split, n in split_tokens.items():
        if rows * block_size > n:
            out.append(f"train.batch_size x block_size = {rows} x {block_size} = {rows * block_size} tokens exceeds "
                       f"the {split} split's {n} tokens: windows are drawn with replacement, so a batch repeats "
                       "tokens")
    if t.warmup_iters > t.max_iters:
        out.append(f"train.warmup_iters = {t.warmup_iters} exceeds train.max_iters = {t.max_iters}: the learning "
                   f"rate never reaches train.lr = {t.lr}")
    return out


def check_run_folder(out: Path) -> None:
    """Refuse an ``--out`` that cannot be a folder before any work is done, naming the path at fault."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out}: exists and is not a folder (the run folder holds checkpoints "
                                 "and metrics.jsonl)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"--out {out}: cannot create the run folder, {parent} is a file, not a folder")
            return


def make_run_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"--out {out}: cannot create the run folder ({e.strerror or e})") from e


def train(run: RunConfig, out: str | Path, *, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    from .train_loop import run_loop

    return run_loop(run, Path(out), resume=resume, quiet=quiet)


def main(args) -> int:
    from .train_config import load_run_config

    # Errors reach cli.main, which prints them as one ``error:`` line (exit 2).
    run = load_run_config(args.config, args.set)
    result = train(run, args.out, resume=args.resume, quiet=args.quiet)
    if result.get("stopped_by"):
        print(f"stopped by {result['stopped_by']}: checkpoint saved at step {result['step']}", file=sys.stderr)
    return 0

