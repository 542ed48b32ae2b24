"""Model configuration: a dataclass of GPT-2 defaults plus named presets in ``configs/*.toml``."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..schema import check_values, describe_unknown, rules, setting, spellings, validate_fields

BACKENDS = ("auto", "torch", "triton")


@dataclass
class GPTConfig:
    """GPT-2 hyper-parameters. Defaults are the 124M model. Every field is checked on construction."""

    vocab_size: int = setting(50257, "int", ge=1, aliases=("n_vocab",))
    block_size: int = setting(1024, "int", ge=1, aliases=("n_positions", "n_ctx", "context_length", "seq_len"))
    n_layer: int = setting(12, "int", ge=1, aliases=("n_layers", "num_layers", "num_hidden_layers"))
    n_head: int = setting(12, "int", ge=1, aliases=("n_heads", "num_heads", "num_attention_heads"))
    n_embd: int = setting(768, "int", ge=1, aliases=("n_embed", "hidden_size", "d_model"))
    # Embeddings, attention probabilities and residual branches.
    dropout: float = setting(0.0, "float", ge=0, lt=1, aliases=("resid_pdrop", "pdrop"))
    bias: bool = setting(True, "bool")  # GPT-2 has biases in every Linear and LayerNorm
    # The fused q/k/v projection's bias alone; None (or no key in a TOML file) follows ``bias``.
    qkv_bias: bool | None = setting(None, "bool", optional=True, aliases=("attention_bias", "add_qkv_bias"))
    layer_norm_eps: float = setting(1e-5, "float", gt=0, aliases=("layer_norm_epsilon", "ln_eps"))
    # Round the embedding/LM-head rows up to a multiple of 64 (50257 -> 50304): faster matmuls.
    # The extra rows are zero, their logits are sliced off before loss and sampling.
    pad_vocab: bool = setting(False, "bool")
    # The LM head shares the token-embedding matrix (GPT-2); false gives the head its own weight.
    tie_embeddings: bool = setting(True, "bool", aliases=("tie_word_embeddings", "tie_word_embedding"))
    # "torch" reference, "triton" kernels, "auto": triton on CUDA else torch.
    backend: str = setting("auto", "choice", choices=BACKENDS)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # unknown keys from files

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        validate_fields(self, "GPTConfig")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig.n_embd: {self.n_embd} is not divisible by n_head={self.n_head}"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def has_qkv_bias(self) -> bool:
        """Whether the attention's c_attn has a bias: ``qkv_bias``, or ``bias`` when that is None."""
        return self.bias if self.qkv_bias is None else self.qkv_bias

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // 64) * 64 if self.pad_vocab else self.vocab_size

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, strict: bool = True, where: str = "GPTConfig") -> GPTConfig:
        """``strict``: unknown keys are an error (with a suggestion); otherwise they go to ``extra``.
        ``where`` prefixes the errors of single keys (``model`` -> ``model.dropout: ...``)."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a table of model settings, got {d!r}")
        known = rules(cls)
        unknown = {k: v for k, v in d.items() if k not in known}
        if unknown and strict:
            raise ValueError(f"{where}: unknown keys: {describe_unknown(unknown, spellings(cls))}")
        check_values(cls, d, where)
        try:
            return cls(**{k: v for k, v in d.items() if k in known}, extra=unknown)
        except ValueError as e:  # a rule across keys (n_embd and n_head): name it as the caller does
            raise ValueError(where + str(e).removeprefix("GPTConfig")) from e

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
