"""Language-model pretraining: ``train()`` and ``tritongpt train`` (the LR schedule, AdamW groups, batch draws and
run warnings: ``train_setup.py``; the loop itself: ``train_steps.py``).

Data: every optimizer step draws its global batch (``batch_size`` x world size rows per micro-step)
from a generator seeded by (seed, step, micro-step); rank r takes rows [r*B, (r+1)*B). So each rank's
stream is disjoint from the others', a single process with the same global batch sees exactly the
same rows as a DDP job, and the data position of a checkpoint is simply its step: ``--resume``
continues with the very batches the uninterrupted run would have drawn. Dropout draws from the
global RNG, whose state is checkpointed too, so a resumed CPU run repeats the uninterrupted losses.
``train.sampling = "epoch"`` replaces the random draws by an epoch order with the same properties
(``data/epoch_sampling.py``); validation windows are drawn alike in both modes.

MFU = flops_per_token (6N + 6LTC, forward + backward, ``GPT.flops_per_token``) x tokens/s per GPU /
the GPU's dense bf16 peak from ``engine/gpu_peaks.py``; an unknown GPU gets ``null``, a CPU run none.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .train_config import RunConfig
from .train_loop import run_loop

__all__ = ["main", "train"]


def train(run: RunConfig, out: str | Path, *, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    return run_loop(run, Path(out), resume=resume, quiet=quiet)


def main(args) -> int:
    from .train_config import load_run_config

    # Errors reach cli.main, which prints them as one ``error:`` line (exit 2).
    run = load_run_config(args.config, args.set)
    result = train(run, args.out, resume=args.resume, quiet=args.quiet)
    if result.get("stopped_by"):
        print(f"stopped by {result['stopped_by']}: checkpoint saved at step {result['step']}", file=sys.stderr)
    return 0

