"""Fine-tuning settings: a ``[finetune]`` table (task keys) and a ``[train]`` table (the optimizer, schedule,
evaluation and checkpoint keys of ``TrainConfig``) in an optional TOML file, ``--set section.key=value``
overrides, and the command's shortcut flags (``--epochs``, ``--trainable``, ``--max-length``,
``--eval-interval``, ``--lora-rank``, ``--mask-prompt``), which win over both."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..schema import check_values, describe_unknown, setting, spellings, suggest, validate_fields
from .train_config import TrainConfig, parse_value, read_toml

SECTIONS = ("finetune", "train")
TASKS = ("classify", "instruct")

# Fine-tuning starts from trained weights: a small constant learning rate (the books' AdamW 5e-5, weight
# decay 0.1), no warmup, small batches, frequent evaluation. Any of them can be set in [train].
TRAIN_DEFAULTS = {"lr": 5e-5, "min_lr": 5e-5, "warmup_iters": 0, "batch_size": 8, "eval_interval": 50,
                  "eval_iters": 5, "sample_tokens": 0, "log_interval": 1}


@dataclass
class FinetuneConfig:
    """Every field typed and ranged (``schema.setting``); task defaults where a field is unset."""

    epochs: int = setting(3, "int", ge=1)
    # all | head | last:N (the last N blocks, the final LayerNorm and the head).
    trainable: str | None = setting(None, "str", optional=True)  # default: classify last:1, instruct all
    max_length: int | None = setting(None, "int", ge=1, optional=True)  # default: the context window
    lora_rank: int | None = setting(None, "int", ge=1, optional=True)
    lora_alpha: float | None = setting(None, "float", gt=0, optional=True)  # default: lora_rank (scale 1)
    seed: int = setting(123, "int", ge=0)
    # Splits: one file split by these fractions (seeded, stratified for classification), or own files.
    train_fraction: float = setting(0.7, "float", gt=0, lt=1)
    val_fraction: float = setting(0.1, "float", ge=0, lt=1)
    val_data: str | None = setting(None, "str", optional=True)
    test_data: str | None = setting(None, "str", optional=True)
    # classify
    text_column: str | None = setting(None, "str", optional=True)
    label_column: str | None = setting(None, "str", optional=True)
    balance: bool = setting(False, "bool")  # undersample every class to the smallest
    eval_batches: int = setting(5, "int", ge=1)  # batches per split at each evaluation (the final one: all)
    # instruct
    template: str = setting("alpaca", "choice", choices=("alpaca", "phi3"))
    mask_prompt: bool = setting(False, "bool")
    max_new_tokens: int = setting(256, "int", ge=1)  # per test response
    test_limit: int | None = setting(None, "int", ge=1, optional=True)  # responses for the first N test entries
    judge_url: str | None = setting(None, "str", optional=True)
    judge_model: str | None = setting(None, "str", optional=True)

    def __post_init__(self) -> None:
        validate_fields(self, "finetune")
        if self.train_fraction + self.val_fraction >= 1 and self.test_data is None:
            raise ValueError(f"finetune.train_fraction + finetune.val_fraction = "
                             f"{self.train_fraction + self.val_fraction:g} leaves no test split; keep the sum below 1")
        if (self.judge_url is None) != (self.judge_model is None):
            raise ValueError("finetune.judge_url and finetune.judge_model: give both (the endpoint and the model "
                             "name it serves) or neither")

    def trainable_for(self, task: str) -> str:
        return self.trainable or ("last:1" if task == "classify" else "all")


def _check_table(table: Any, section: str, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: {section} must be a table ([{section}]), got {table!r}")
    keys = spellings(FinetuneConfig if section == "finetune" else TrainConfig)
    unknown = [k for k in table if k not in keys]
    if unknown:
        raise ValueError(f"{where}: unknown [{section}] keys: {describe_unknown(unknown, keys)}")
    return {keys[k]: v for k, v in table.items()}


def _apply_sets(raw: dict[str, Any], sets: list[str]) -> None:
    for item in sets:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise ValueError(f"--set: expected section.key=value (e.g. finetune.epochs=2), got {item!r}")
        if section not in SECTIONS:
            raise ValueError(f"--set {item}: unknown section {section!r}{suggest(section, SECTIONS)}; "
                             "the sections are finetune and train")
        raw.setdefault(section, {})[name] = parse_value(value)


def load_finetune_config(path: str | Path | None, sets: list[str], flags: dict[str, Any],
                         ) -> tuple[FinetuneConfig, dict[str, Any]]:
    """(task settings, [train] keys over ``TRAIN_DEFAULTS``) from the file, ``--set`` and the flags that
    were given (None values are absent flags). The train keys become a TrainConfig once the run length
    is known (``max_iters`` from ``epochs`` and the training split)."""
    raw: dict[str, Any] = read_toml(Path(path)) if path is not None else {}
    where = f"--config {path}" if path is not None else "--set"
    for key in raw:
        if key not in SECTIONS:
            raise ValueError(f"{where}: unknown section [{key}]{suggest(key, SECTIONS, '[{}]')}; a fine-tuning "
                             "config has [finetune] and [train]")
    _apply_sets(raw, sets)
    task = _check_table(raw.get("finetune", {}), "finetune", where)
    train = _check_table(raw.get("train", {}), "train", where)
    task.update({k: v for k, v in flags.items() if v is not None})
    if "eval_interval" in task:
        train["eval_interval"] = task.pop("eval_interval")
    check_values(FinetuneConfig, task, "finetune")
    check_values(TrainConfig, train, "train")
    if "max_iters" in train:
        raise ValueError("train.max_iters: fine-tuning runs for finetune.epochs over the training split; set "
                         "finetune.epochs (or --epochs) instead")
    return FinetuneConfig(**task), {**TRAIN_DEFAULTS, **train}


def train_config(keys: dict[str, Any], max_iters: int) -> TrainConfig:
    """The TrainConfig of a fine-tuning run of ``max_iters`` steps."""
    return TrainConfig(**{**keys, "max_iters": max_iters})


def as_dict(cfg: FinetuneConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
