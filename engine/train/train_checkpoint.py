"""Training checkpoints: ``OUT/checkpoints/step_NNNNNNNN/`` folders written atomically.

Each holds ``model.safetensors`` + ``config.json`` (a normal tritongpt checkpoint: `generate` and
`--init-from` read it, with the run config and tokenizer inside), and ``trainer.pt``: optimizer state,
step, RNG states and the data position, loaded with ``torch.load(weights_only=True)``. A folder is
renamed into place only once every file is written and fsynced, so a crash or a signal mid-save
leaves the previous checkpoint as the newest complete one; ``recover`` clears what such a crash
leaves behind. The newest ``keep_last`` are kept. A checkpoint is read and checked whole (JSON
fields, tensor shapes, NaN/Inf) before the model or optimizer is touched.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..fsutil import atomic_dir, recover_leftovers
from ..model.weights import CheckpointError, check_finite, load_state, read_json_config, read_tensors, write_model_files

TRAINER_FILE = "trainer.pt"
_NAME = re.compile(r"^step_(\d{8})$")


class CheckpointMismatch(CheckpointError):
    """An intact checkpoint of another model config: every checkpoint of the run differs alike."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (disk full, permissions); nothing of it is left."""


def checkpoint_root(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def list_checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (atomic renames only ever produce complete ones), oldest first."""
    root = checkpoint_root(out)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def recover(out: str | Path) -> list[str]:
    """Remove the temporaries of saves a kill cut short (they are never complete; left alone they pile
    up beside the checkpoints). Returns one line per action."""
    return recover_leftovers(checkpoint_root(out), "step_")


def save(out: str | Path, model, optimizer, step: int, trainer_state: dict[str, Any], meta: dict[str, Any],
         keep_last: int) -> Path:
    dest = checkpoint_root(out) / f"step_{step:08d}"
    try:
        with atomic_dir(dest) as tmp:
            write_model_files(model, tmp, {**meta, "step": step})
            torch.save({"optimizer": optimizer.state_dict(), "step": step, **trainer_state}, tmp / TRAINER_FILE)
    except Exception as e:
        if not _is_write_error(e):
            raise
        raise CheckpointWriteError(f"{dest}: cannot write the checkpoint ({_reason(e)}); no part of it is left on "
                                   f"disk; {_newest_note(out)}") from e
    for _, old in list_checkpoints(out)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _is_write_error(e: BaseException) -> bool:
    from safetensors import SafetensorError

    return isinstance(e, (OSError, SafetensorError)) or isinstance(e.__cause__, OSError)


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return " ".join(str(e).split()) or type(e).__name__


def _newest_note(out: str | Path) -> str:
    found = list_checkpoints(out)
    return f"the newest complete checkpoint is {found[-1][1].name}" if found else "no earlier checkpoint exists"


def load_newest(out: str | Path, model, optimizer, warn: Callable[[str], None], *,
                set_aside: bool = True) -> tuple[dict[str, Any], Path] | None:
    """Restore the newest intact checkpoint of ``out``; None when there is none at all.

    A damaged newer one is reported through ``warn`` and, with ``set_aside``, renamed to
    ``step_N.damaged`` (kept, but no longer a checkpoint the run would prune or overwrite). A checkpoint
    of another model config raises at once; so does a run whose checkpoints are all damaged."""
    found = list_checkpoints(out)
    if not found:
        return None
    damaged: list[tuple[Path, CheckpointError]] = []
    for _, path in reversed(found):
        try:
            state = load(path, model, optimizer)
        except CheckpointMismatch:
            raise
        except CheckpointError as e:
            damaged.append((path, e))
            continue
        for bad, err in damaged:
            kept = _set_aside(bad) if set_aside else bad
            warn(f"{err}; resuming from the older {path.name} instead (the damaged one is kept as {kept.name})")
        return state, path
    more = f" (and {len(damaged) - 1} older damaged one(s))" if len(damaged) > 1 else ""
    raise CheckpointError(f"no intact checkpoint to resume from in {checkpoint_root(out)}: {damaged[0][1]}{more}; "
                          "move the damaged ones away to start afresh, or choose a new --out")


def _set_aside(path: Path) -> Path:
    dest, n = path.with_name(path.name + ".damaged"), 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.damaged-{n}")
    os.replace(path, dest)
    return dest


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}: checkpoint {a.get(k)!r} vs run {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def read_meta(path: Path, model) -> dict[str, Any]:
    """``config.json`` of a checkpoint folder, checked against ``model``'s config."""
    f = path / "config.json"
    meta = read_json_config(f)
    if meta.get("format") != "tritongpt" or "model" not in meta:
        raise CheckpointError(f"{f}: not a tritongpt training checkpoint (no format = \"tritongpt\" and model)")
    if not isinstance(meta["model"], dict):
        raise CheckpointError(f"{f}: 'model' is {meta['model']!r}, expected an object of model settings "
                              "(damaged checkpoint?)")
    try:  # through GPTConfig: a checkpoint written before a setting existed carries that setting's default
        saved = type(model.config).from_dict(meta["model"], strict=False).to_dict()
    except ValueError as e:
        raise CheckpointError(f"{f}: 'model' settings are invalid ({e})") from None
    diffs = _differences(saved, model.config.to_dict())
    if diffs:
        raise CheckpointMismatch(f"{path}: checkpoint from another model config ({'; '.join(diffs[:4])})")
    return meta


def read_trainer_state(f: Path) -> dict[str, Any]:
    """``trainer.pt``, checked: a dict with an optimizer state of finite tensors, a step and RNG state."""
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read it means a damaged or foreign file
        raise CheckpointError(f"{f}: not a readable trainer state ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not isinstance(state.get("optimizer"), dict) or "step" not in state:
        raise CheckpointError(f"{f}: missing optimizer state or step")
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{f}: step is {step!r}, expected an integer >= 0")
    rng = state.get("rng_cpu")
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
        raise CheckpointError(f"{f}: rng_cpu is not a uint8 tensor (damaged trainer state)")
    per_param = state["optimizer"].get("state", {})
    for pid, slots in per_param.items() if isinstance(per_param, dict) else ():
        for key, v in slots.items() if isinstance(slots, dict) else ():
            if isinstance(v, torch.Tensor):
                check_finite(v, f"optimizer state[{pid}].{key}", str(f))
    return state


def load(path: Path, model, optimizer) -> dict[str, Any]:
    """Restore ``model`` and ``optimizer`` from a checkpoint folder; returns the trainer state.
    A checkpoint of another model shape (``CheckpointMismatch``) or a damaged file (``CheckpointError``)
    raises naming it, before the model or optimizer is changed."""
    meta = read_meta(path, model)
    sd, src = read_tensors(path)
    f = path / TRAINER_FILE
    state = read_trainer_state(f)
    if isinstance(meta.get("step"), int) and meta["step"] != state["step"]:
        raise CheckpointError(f"{path}: config.json says step {meta['step']}, {TRAINER_FILE} step {state['step']}")
    load_state(model, sd, str(src))
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

