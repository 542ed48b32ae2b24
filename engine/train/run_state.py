"""Process state a training run saves, restores and reacts to: the torchrun environment (rank, world
size, local rank), the RNG states a checkpoint carries, the metrics lines a resume drops, and the
SIGINT/SIGTERM flag the loop checks at step boundaries."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import torch


def dist_env() -> tuple[int, int, int]:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))


class StopSignals:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step boundary and exits 0."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The CPU generator and the training GPU's. Every rank seeds alike and draws alike, so rank 0's
    state is every rank's: saving all GPUs' generators of process 0 (``get_rng_state_all``) would
    hand rank r, on resume, process 0's never-used generator for GPU r instead."""
    st = {"rng_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        st["rng_cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict[str, Any], device: torch.device) -> None:
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


def truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop lines of steps after the checkpoint (the interrupted run logged them)."""
    from ..fsutil import atomic_write_text

    if not path.exists():
        return
    keep = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if step_of(ln) <= last_step]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def step_of(line: str) -> float:
    """A metrics line's step; inf (dropped) for a line a kill cut short or that is not a record."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return math.inf
    step = rec.get("step", 0) if isinstance(rec, dict) else None
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else math.inf
