"""What a training run is set up with: the learning-rate schedule, AdamW groups, the batch draws per
(seed, step, micro-step), the run's warnings and folder checks. ``command.py`` documents the data scheme; the
loop (``train_steps.py``, ``train_loop.py``) and the fine-tuning tasks use these.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch


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


def batch_source(t, n_tokens: int, T: int, world: int, rank: int, sampler=None):
    """``draw(step, micro)``: this rank's window starts, from ``sampler`` (an ``EpochSampler``) when
    given, else from ``batch_rows`` (rank r takes rows [r*B, (r+1)*B) of the global micro-batch)."""
    B = t.batch_size
    if sampler is not None:
        return lambda step, micro: torch.from_numpy(sampler.starts(step, micro, rank))
    return lambda step, micro: batch_rows(n_tokens, T, B * world, t.seed, step, micro)[rank * B: (rank + 1) * B]


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


def warn(msg: str) -> None:
    """One ``warning: ...`` line on stderr (shown with --quiet too: it is not progress)."""
    print(f"warning: {' '.join(msg.split())}", file=sys.stderr, flush=True)


def run_warnings(t, block_size: int, world: int, split_tokens: dict[str, int]) -> list[str]:
    """Settings that run but probably not as meant: one line each."""
    out = []
    rows = t.batch_size * world
    for split, n in split_tokens.items():
        if split == "train" and t.sampling == "epoch":
            out += _epoch_warnings(t, block_size, rows, n)
        elif rows * block_size > n:
            out.append(f"train.batch_size x block_size = {rows} x {block_size} = {rows * block_size} tokens exceeds "
                       f"the {split} split's {n} tokens: windows are drawn with replacement, so a batch repeats "
                       "tokens")
    if t.warmup_iters > t.max_iters:
        out.append(f"train.warmup_iters = {t.warmup_iters} exceeds train.max_iters = {t.max_iters}: the learning "
                   f"rate never reaches train.lr = {t.lr}")
    return out


def _epoch_warnings(t, block_size: int, rows: int, n_tokens: int) -> list[str]:
    """Epoch sampling repeats a window within a step only when one step holds more than an epoch."""
    from ..data.epoch_sampling import window_count

    windows = window_count(n_tokens, block_size, t.stride or block_size)
    per_step = rows * t.grad_accum
    if 0 < windows < per_step:
        return [f"one step's batch (batch_size x world size x grad_accum = {per_step} windows) exceeds the "
                f"{windows} windows of an epoch (train.stride = {t.stride or block_size}): a step spans "
                "several epochs and repeats windows"]
    return []


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
