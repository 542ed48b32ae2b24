"""Training run configuration: a TOML file with ``[model]`` (GPTConfig fields, or ``preset = NAME``
plus overrides), ``[data]`` and ``[train]`` tables, and ``--set section.key=value`` overrides.

``vocab_size`` comes from the prepared data's ``meta.json`` unless the config sets it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib


@dataclass
class TrainConfig:
    batch_size: int = 12  # rows per micro-step per process
    grad_accum: int = 1  # micro-steps per optimizer step
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # cosine reaches min_lr here (default: max_iters)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 = off
    eval_interval: int = 250
    eval_iters: int = 20  # fixed validation windows (x batch_size rows)
    log_interval: int = 1
    ckpt_interval: int | None = None  # default: eval_interval
    keep_last: int = 2
    seed: int = 1337
    backend: str = "auto"
    compile: bool = False
    dtype: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or float32 / bfloat16
    device: str = "auto"
    nan_policy: str = "stop"  # stop | skip
    sample_tokens: int = 200  # sample printed at each evaluation (0 = none)
    sample_prompt: str = "\n"
    init_from: str | None = None  # a tritongpt checkpoint or a Hugging Face GPT-2 folder
    plot: bool = True

    def validate(self) -> TrainConfig:
        pos = ("batch_size", "grad_accum", "max_iters", "eval_interval", "eval_iters", "log_interval", "keep_last")
        for name in pos:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"train.{name}: expected an integer >= 1, got {v!r}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or v != v:
                raise ValueError(f"train.{name}: expected a number >= 0, got {v!r}")
        if not 0 <= self.warmup_iters:
            raise ValueError(f"train.warmup_iters: expected >= 0, got {self.warmup_iters!r}")
        if self.nan_policy not in ("stop", "skip"):
            raise ValueError(f"train.nan_policy: expected 'stop' or 'skip', got {self.nan_policy!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"train.dtype: expected auto, float32 or bfloat16, got {self.dtype!r}")
        if self.backend not in ("auto", "torch", "triton"):
            raise ValueError(f"train.backend: expected auto, torch or triton, got {self.backend!r}")
        return self


@dataclass
class RunConfig:
    model: dict[str, Any]
    data: str
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"model": dict(self.model), "data": self.data, "train": dataclasses.asdict(self.train)}


def _parse_value(text: str) -> Any:
    """``--set`` values are TOML scalars (numbers, true/false, quoted strings); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set: expected section.key=value (e.g. train.lr=3e-4), got {item!r}")
        section, name = key.split(".", 1)
        if section not in ("model", "data", "train"):
            raise ValueError(f"--set: unknown section {section!r} in {item!r} (model, data or train)")
        if section == "data":
            if name != "dir":
                raise ValueError(f"--set: the data section has only 'dir', got {item!r}")
            raw["data"] = {"dir": _parse_value(value)}
            continue
        raw.setdefault(section, {})[name] = _parse_value(value)
    return raw


def load_run_config(path: str | Path, sets: list[str] | None = None) -> RunConfig:
    from .config import load_preset

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--config: cannot read {path} ({e})") from e
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--config: {path} is not valid TOML ({e})") from e
    raw = apply_overrides(raw, sets or [])
    model = dict(raw.get("model", {}))
    preset = model.pop("preset", None)
    if preset is not None:
        model = {**load_preset(preset).get("model", {}), **model}
    data = raw.get("data", {}).get("dir")
    if not isinstance(data, str) or not data:
        raise ValueError(f"{path}: [data] dir = \"PATH\" (a folder written by `tritongpt prepare`) is required")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw.get("train", {})) - known)
    if unknown:
        raise ValueError(f"{path}: unknown [train] keys {unknown}; known: {sorted(known)}")
    train = TrainConfig(**raw.get("train", {})).validate()
    return RunConfig(model=model, data=data, train=train, source=str(path))
