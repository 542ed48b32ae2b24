"""Model configuration: a dataclass of GPT-2 defaults plus named presets in ``configs/*.toml``."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BACKENDS = ("auto", "torch", "triton")


@dataclass
class GPTConfig:
    """GPT-2 hyper-parameters. Defaults are the 124M model."""

    vocab_size: int = 50257
    block_size: int = 1024  # context window (n_positions)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # embeddings, attention probabilities and residual branches
    bias: bool = True  # GPT-2 has biases in every Linear and LayerNorm
    layer_norm_eps: float = 1e-5
    # Round the embedding/LM-head rows up to a multiple of 64 (50257 -> 50304): faster matmuls.
    # The extra rows are zero, their logits are sliced off before loss and sampling.
    pad_vocab: bool = False
    backend: str = "auto"  # "torch" reference, "triton" kernels, "auto": triton on CUDA else torch
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # unknown keys from files

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name}: expected a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd: {self.n_embd} is not divisible by n_head={self.n_head}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"GPTConfig.dropout: expected 0 <= dropout < 1, got {self.dropout!r}")
        if not float(self.layer_norm_eps) > 0:
            raise ValueError(f"GPTConfig.layer_norm_eps: expected > 0, got {self.layer_norm_eps!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"GPTConfig.backend: expected one of {BACKENDS}, got {self.backend!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // 64) * 64 if self.pad_vocab else self.vocab_size

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, strict: bool = True) -> GPTConfig:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = {k: v for k, v in d.items() if k not in known}
        if unknown and strict:
            raise ValueError(f"GPTConfig: unknown keys {sorted(unknown)}; known keys are {sorted(known)}")
        return cls(**{k: v for k, v in d.items() if k in known}, extra=unknown)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """Load ``configs/<name>.toml`` (its ``[model]`` table) and apply ``overrides``."""
        data = load_preset(name)
        model = dict(data.get("model", {}))
        model.update(overrides)
        return cls.from_dict(model)


def preset_names() -> list[str]:
    """Names of the model presets shipped in ``configs/``."""
    root = resources.files("tritongpt.configs")
    out = []
    for entry in root.iterdir():
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            if "model" in data and "train" not in data:  # run configs (train) are not model presets
                out.append(entry.name[: -len(".toml")])
    return sorted(out)


def load_preset(name_or_path: str | Path) -> dict[str, Any]:
    """Parse a preset by name (``gpt2``) or a TOML file path; error lists the known presets."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return tomllib.loads(path.read_text(encoding="utf-8"))
    if path.suffix == ".toml":
        raise FileNotFoundError(f"config file not found: {path}")
    entry = resources.files("tritongpt.configs") / f"{name_or_path}.toml"
    if not entry.is_file():
        raise ValueError(f"unknown preset {str(name_or_path)!r}; available: {', '.join(preset_names())}")
    return tomllib.loads(entry.read_text(encoding="utf-8"))
