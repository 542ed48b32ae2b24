"""Training run configuration: a TOML file with ``[model]`` (GPTConfig fields, or ``preset = NAME``
plus overrides), ``[data]`` and ``[train]`` tables, and ``--set section.key=value`` overrides.

``vocab_size`` comes from the prepared data's ``meta.json`` unless the config sets it.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..schema import describe_unknown, setting, spellings, suggest, validate_fields

SECTIONS = ("model", "data", "train")


@dataclass
class TrainConfig:
    """Every field is typed and ranged (``schema.setting``) and checked on construction."""

    batch_size: int = setting(12, "int", ge=1)  # rows per micro-step per process
    grad_accum: int = setting(1, "int", ge=1, aliases=("gradient_accumulation_steps",))  # micro-steps per step
    max_iters: int = setting(2000, "int", ge=1, aliases=("max_steps", "iters", "steps"))
    lr: float = setting(1e-3, "float", ge=0, aliases=("learning_rate", "max_lr"))
    min_lr: float = setting(1e-4, "float", ge=0, aliases=("min_learning_rate", "final_lr"))
    warmup_iters: int = setting(100, "int", ge=0, aliases=("warmup_steps", "warmup"))
    # The cosine reaches min_lr here (default: max_iters).
    lr_decay_iters: int | None = setting(None, "int", ge=1, optional=True, aliases=("decay_iters", "lr_decay_steps"))
    weight_decay: float = setting(0.1, "float", ge=0)
    beta1: float = setting(0.9, "float", ge=0, lt=1)
    beta2: float = setting(0.99, "float", ge=0, lt=1)
    grad_clip: float = setting(1.0, "float", ge=0, aliases=("clip_grad", "max_grad_norm"))  # 0 = off
    eval_interval: int = setting(250, "int", ge=1)
    eval_iters: int = setting(20, "int", ge=1)  # fixed validation windows (x batch_size rows)
    log_interval: int = setting(1, "int", ge=1)
    ckpt_interval: int | None = setting(None, "int", ge=1, optional=True,  # default: eval_interval
                                        aliases=("checkpoint_interval", "save_interval"))
    keep_last: int = setting(2, "int", ge=1)
    seed: int = setting(1337, "int", ge=0)
    # random: windows drawn per (seed, step); epoch: each stride window once per epoch (data/epoch_sampling.py).
    sampling: str = setting("random", "choice", choices=("random", "epoch"))
    stride: int | None = setting(None, "int", ge=1, optional=True)  # epoch window spacing (default: block_size)
    epochs: int | None = setting(None, "int", ge=1, optional=True)  # epoch run length: derives max_iters
    backend: str = setting("auto", "choice", choices=("auto", "torch", "triton"))
    compile: bool = setting(False, "bool")
    # auto: bf16 autocast on CUDA, fp32 on CPU.
    dtype: str = setting("auto", "choice", choices=("auto", "float32", "bfloat16"))
    device: str = setting("auto", "device")  # availability is checked when the run starts (engine/devices.py)
    nan_policy: str = setting("stop", "choice", choices=("stop", "skip"))
    sample_tokens: int = setting(200, "int", ge=0)  # sample printed at each evaluation (0 = none)
    sample_prompt: str = setting("\n", "str")
    # A tritongpt checkpoint or a Hugging Face GPT-2 folder.
    init_from: str | None = setting(None, "str", optional=True, aliases=("init", "pretrained"))
    plot: bool = setting(True, "bool")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> TrainConfig:
        validate_fields(self, "train")
        for key in ("stride", "epochs"):  # a setting that would do nothing is refused, never ignored
            if self.sampling != "epoch" and getattr(self, key) is not None:
                raise ValueError(f"train.{key}: only used with train.sampling = \"epoch\" (sampling is "
                                 f"{self.sampling!r}); set train.sampling = \"epoch\" or remove train.{key}")
        return self


@dataclass
class RunConfig:
    model: dict[str, Any]
    data: str
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"model": dict(self.model), "data": self.data, "train": dataclasses.asdict(self.train)}


def parse_value(text: str) -> Any:
    """``--set`` values are TOML scalars (numbers, true/false, quoted strings); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def section_keys(section: str) -> dict[str, str]:
    """Spellings (names and aliases) -> names of the keys a section accepts."""
    if section == "data":
        return {"dir": "dir"}
    if section == "model":
        from ..model.config import GPTConfig

        return {**spellings(GPTConfig), "preset": "preset"}
    return spellings(TrainConfig)


def check_keys(table: dict[str, Any], section: str, where: str) -> None:
    keys = section_keys(section)
    unknown = [k for k in table if k not in keys.values()]
    if unknown:
        raise ValueError(f"{where}: unknown [{section}] keys: {describe_unknown(unknown, keys)}")


def check_sections(raw: dict[str, Any], where: str) -> None:
    """Only [model], [data] and [train] tables at the top level: a misspelt table is never ignored."""
    for key, value in raw.items():
        if key not in SECTIONS:
            raise ValueError(f"{where}: {describe_top_level(key, value)}")
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {key} must be a table ([{key}]), got {value!r}")
        check_keys(value, key, where)


def describe_top_level(key: str, value: Any) -> str:
    if isinstance(value, dict):
        return (f"unknown section [{key}]{suggest(key, SECTIONS, '[{}]')}; "
                "a run config has [model], [data] and [train]")
    home = next((s for s in SECTIONS if key in section_keys(s).values()), None)
    hint = f" (it belongs in [{home}])" if home else suggest(key, SECTIONS, "[{}]")
    return f"unknown top-level key {key!r}{hint}; a run config has [model], [data] and [train] tables"


def apply_overrides(raw: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ValueError(f"--set: expected section.key=value (e.g. train.lr=3e-4), got {item!r}")
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise ValueError(f"--set {item}: unknown section {section!r}{suggest(section, SECTIONS)}; "
                             "the sections are model, data and train")
        if section == "data" and name != "dir":
            raise ValueError(f"--set: the data section has only 'dir', got {item!r}")
        check_keys({name: None}, section, f"--set {item}")
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ValueError(f"--set {item}: {section} is not a table in the config file")
        table[name] = parse_value(value)
    return raw


def check_run_length(table: dict[str, Any]) -> None:
    """``epochs`` derives ``max_iters``: a config (file and --set together) may give one of them only."""
    if "epochs" in table and "max_iters" in table:
        raise ValueError("train.epochs: train.max_iters is set too; epochs derives the run length "
                         "(ceil(epochs x windows per epoch / global batch) steps), so remove one of them")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--config: cannot read {path} ({e})") from e
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--config: {path} is not valid TOML ({e})") from e


def resolve_model(model: dict[str, Any], where: str) -> dict[str, Any]:
    """[model] with its ``preset`` expanded, checked in full (vocab_size from the data when unset)."""
    from ..model.config import GPTConfig, load_preset

    model = dict(model)
    preset = model.pop("preset", None)
    if preset is not None:
        if not isinstance(preset, str) or not preset:
            raise ValueError(f"model.preset: expected a preset name or a .toml path, got {preset!r}")
        base = load_preset(preset).get("model", {})
        check_keys(base, "model", f"{where}: preset {preset}")
        model = {**base, **model}
    GPTConfig.from_dict({"vocab_size": 1, **model}, where="model")
    return model


def load_run_config(path: str | Path, sets: list[str] | None = None) -> RunConfig:
    """Every key and value is checked here, before any data is read or any file written."""
    path = Path(path)
    raw = read_toml(path)
    check_sections(raw, str(path))
    raw = apply_overrides(raw, sets or [])
    data = raw.get("data", {}).get("dir")
    if not isinstance(data, str) or not data:
        raise ValueError(f"{path}: [data] dir = \"PATH\" (a folder written by `tritongpt prepare`) is required")
    model = resolve_model(raw.get("model", {}), str(path))
    check_run_length(raw.get("train", {}))
    train = TrainConfig(**raw.get("train", {}))
    return RunConfig(model=model, data=data, train=train, source=str(path))
