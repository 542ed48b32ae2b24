"""Training checkpoints: ``OUT/checkpoints/step_NNNNNNNN/`` folders written atomically.

Each holds ``model.safetensors`` + ``config.json`` (a normal tritongpt checkpoint: `generate` and
`--init-from` read it, with the run config and tokenizer inside), and ``trainer.pt``: optimizer state,
step, RNG states and the data position, loaded with ``torch.load(weights_only=True)``. A folder is
renamed into place only once every file is written and fsynced, so a crash or a signal mid-save
leaves the previous checkpoint as the newest complete one. The newest ``keep_last`` are kept.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from .fsutil import atomic_dir
from .weights import CheckpointError, _read_json, _read_tensors, load_state, write_model_files

TRAINER_FILE = "trainer.pt"
_NAME = re.compile(r"^step_(\d{8})$")


def checkpoint_root(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def list_checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (atomic renames only ever produce complete ones), oldest first."""
    root = checkpoint_root(out)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def save(out: str | Path, model, optimizer, step: int, trainer_state: dict[str, Any], meta: dict[str, Any],
         keep_last: int) -> Path:
    dest = checkpoint_root(out) / f"step_{step:08d}"
    with atomic_dir(dest) as tmp:
        write_model_files(model, tmp, {**meta, "step": step})
        torch.save({"optimizer": optimizer.state_dict(), "step": step, **trainer_state}, tmp / TRAINER_FILE)
    for _, old in list_checkpoints(out)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: checkpoint {a.get(k)!r} vs run {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def load(path: Path, model, optimizer) -> dict[str, Any]:
    """Restore ``model`` and ``optimizer`` from a checkpoint folder; returns the trainer state.
    A checkpoint of another model shape or a damaged file raises ``CheckpointError`` naming it."""
    meta = _read_json(path / "config.json")
    if meta.get("format") != "tritongpt" or "model" not in meta:
        raise CheckpointError(f"{path}: not a tritongpt training checkpoint")
    diffs = _differences(meta["model"], model.config.to_dict())
    if diffs:
        raise CheckpointError(f"{path}: checkpoint from another model config ({'; '.join(diffs[:4])})")
    sd, src = _read_tensors(path)
    load_state(model, sd, str(src))
    f = path / TRAINER_FILE
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read it means a damaged or foreign file
        raise CheckpointError(f"{f}: not a readable trainer state ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or "optimizer" not in state or "step" not in state:
        raise CheckpointError(f"{f}: missing optimizer state or step")
    try:
        # The implementation flags follow this run's device, not the saving run's: a group's saved
        # ``fused`` would otherwise override ours (a CPU checkpoint resumed on a GPU would lose the
        # fused AdamW, and the fused one hosts ``step`` on the parameters' device).
        for saved, ours in zip(state["optimizer"].get("param_groups", ()), optimizer.param_groups, strict=False):
            for key in ("fused", "foreach", "capturable"):
                if key in ours:
                    saved[key] = ours[key]
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{f}: optimizer state does not fit this model ({e})") from e
    state["meta"] = meta
    return state


def describe(path: Path) -> str:
    meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return f"{path} (step {meta.get('step')})"
