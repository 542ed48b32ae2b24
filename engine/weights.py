"""Loading and saving weights: Hugging Face GPT-2 folders and tritongpt checkpoints.

Only safetensors, or ``torch.load(weights_only=True)`` for ``pytorch_model.bin``: arbitrary
pickled objects are never unpickled. Every mismatch names the tensor at fault.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .config import GPTConfig
from .fsutil import atomic_dir
from .schema import rules

# Hugging Face's GPT-2 stores these as Conv1D weights of shape (in, out): transpose to nn.Linear.
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A file that is not a valid checkpoint for this model."""


def read_json_config(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else raises ``CheckpointError`` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable JSON config ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_tensors(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The tensors of ``folder``'s safetensors (or weights-only ``pytorch_model.bin``) file, and that file."""
    st, binf = folder / WEIGHTS_FILE, folder / "pytorch_model.bin"
    if st.exists():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(st), device="cpu"), st
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{st}: not a valid safetensors file ({e})") from e
    if binf.exists():
        try:
            sd = torch.load(binf, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
            raise CheckpointError(f"{binf}: not a valid weights-only PyTorch checkpoint ({e})") from e
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CheckpointError(f"{binf}: expected a dict of tensors")
        return sd, binf
    raise CheckpointError(f"{folder}: no {WEIGHTS_FILE} or pytorch_model.bin found")


# Hugging Face GPT2Config keys -> GPTConfig fields: each value is checked by the GPTConfig schema
# under the file's own key name, so a string "50257" is refused, never silently converted.
HF_KEYS = {"vocab_size": "vocab_size", "n_layer": "n_layer", "n_head": "n_head", "n_embd": "n_embd",
           "layer_norm_epsilon": "layer_norm_eps"}


def hf_config_to_gpt(hf: dict[str, Any], *, source: str = CONFIG_FILE, **overrides: Any) -> GPTConfig:
    """Translate a Hugging Face ``GPT2Config`` dict (read from ``source``) into a ``GPTConfig``."""
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"{source}: activation_function {act!r} is not GPT-2's tanh GELU")
    missing = [k for k in ("vocab_size", "n_layer", "n_head", "n_embd") if k not in hf]
    if missing:
        raise CheckpointError(f"{source}: missing GPT-2 field {missing[0]!r}")
    positions = "n_positions" if "n_positions" in hf else "n_ctx"
    fields = rules(GPTConfig)
    cfg: dict[str, Any] = {"block_size": 1024, "layer_norm_eps": 1e-5, "dropout": 0.0}
    try:
        for key, name in [*HF_KEYS.items(), (positions, "block_size")]:
            if key in hf:
                cfg[name] = fields[name].check(f"{source}: {key}", hf[key])
        if hf.get("n_inner") not in (None, 4 * cfg["n_embd"]):
            raise CheckpointError(f"{source}: n_inner={hf['n_inner']} differs from GPT-2's 4 * n_embd")
        return GPTConfig(**{**cfg, **overrides})
    except CheckpointError:
        raise
    except ValueError as e:
        raise CheckpointError(str(e) if str(e).startswith(source) else f"{source}: {e}") from e


def _hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        name = k[len("transformer."):] if k.startswith("transformer.") else k
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # causal-mask buffers of old checkpoints; the LM head is tied to wte
        if name.endswith(_CONV1D):
            v = v.t()
        out["transformer." + name] = v
    return out


def check_finite(t: torch.Tensor, name: str, source: str) -> None:
    """Refuse NaN/Inf weights at load: loaded silently, they surface only later as a non-finite loss
    that blames the learning rate and a checkpoint that passes for "last good"."""
    if not t.is_floating_point() or bool(torch.isfinite(t).all()):
        return
    n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    raise CheckpointError(f"{source}: tensor {name} has {n_nan} NaN and {n_inf} Inf value(s) of {t.numel()}: "
                          "damaged or diverged weights")


def load_state(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``sd`` into ``model``; names, shapes, dtypes and finiteness are all checked before anything
    is copied, so a refused file leaves the model as it was. Padded vocab rows stay zero."""
    params = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    missing = sorted(set(params) - set(sd))
    unexpected = sorted(set(sd) - set(params) - {"lm_head.weight"})
    if missing:
        raise CheckpointError(f"{source}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    srcs = {name: _checked_source(name, sd[name], dst, model.config.vocab_size, source) for name, dst in params.items()}
    with torch.no_grad():
        for name, dst in params.items():
            src = srcs[name]
            if src.shape[0] != dst.shape[0]:  # unpadded checkpoint into a padded model
                dst[: src.shape[0]].copy_(src)
                dst[src.shape[0]:].zero_()
            else:
                dst.copy_(src)


def _checked_source(name: str, src: torch.Tensor, dst: torch.Tensor, vocab: int, source: str) -> torch.Tensor:
    """``src`` fitted to ``dst`` (a padded embedding is cut to the vocabulary), after every check."""
    want = tuple(dst.shape)
    if name == "transformer.wte.weight" and src.shape[0] != dst.shape[0] == vocab:
        src = src[:vocab]  # padded checkpoint into an unpadded model
    elif name == "transformer.wte.weight" and src.shape[0] == vocab != dst.shape[0]:
        want = (vocab, *want[1:])  # unpadded checkpoint into a padded model
    if tuple(src.shape) != want:
        raise CheckpointError(f"{source}: tensor {name} has shape {tuple(src.shape)}, the config expects {want}")
    if not src.is_floating_point():
        raise CheckpointError(f"{source}: tensor {name} has non-float dtype {src.dtype}")
    check_finite(src, name, source)
    return src


def load_pretrained(path: str | Path, **overrides: Any):
    """A Hugging Face GPT-2 folder or a tritongpt checkpoint folder -> ``GPT``."""
    from .model import GPT

    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder (expected config.json + model.safetensors)")
    if not (folder / CONFIG_FILE).exists():
        raise CheckpointError(f"{folder}: no {CONFIG_FILE}")
    raw = read_json_config(folder / CONFIG_FILE)
    sd, src = read_tensors(folder)
    if raw.get("format") == "tritongpt":
        if not isinstance(raw.get("model"), dict):
            raise CheckpointError(f"{folder / CONFIG_FILE}: 'model' is {raw.get('model')!r}, expected an object "
                                  "of model settings (damaged checkpoint?)")
        try:
            cfg = GPTConfig.from_dict({**raw["model"], **overrides})
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{folder / CONFIG_FILE}: invalid model config ({e})") from e
    else:
        cfg = hf_config_to_gpt(raw, source=str(folder / CONFIG_FILE), **overrides)
        sd = _hf_state_dict(sd)
    model = GPT(cfg)
    load_state(model, sd, str(src))
    return model


def write_model_files(model, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
    """``model.safetensors`` + ``config.json`` into an existing (temporary) folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    meta = {"format": "tritongpt", "version": 1, "model": model.config.to_dict(), **(extra or {})}
    save_file(sd, str(folder / WEIGHTS_FILE), metadata={"format": "tritongpt"})
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")


def save_checkpoint(model, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``path``, atomically as a folder."""
    dest = Path(path)
    with atomic_dir(dest) as tmp:
        write_model_files(model, tmp, extra)
    return dest


def to_hf(model):
    """The same weights as a ``transformers.GPT2LMHeadModel`` in eval mode (side-by-side benchmarks,
    parity tests). Needs transformers; GPT-2 has biases, so a ``bias=False`` model is refused."""
    import transformers

    cfg = model.config
    if not cfg.bias:
        raise ValueError("model: Hugging Face GPT-2 always has biases; this model was built with bias=False")
    hf_cfg = transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, layer_norm_epsilon=cfg.layer_norm_eps, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg)
    sd = {}
    for name, v in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to wte on both sides
        v = v.detach()
        if name.endswith(_CONV1D):
            v = v.t()
        if name == "transformer.wte.weight":
            v = v[: cfg.vocab_size]
        sd[name] = v.contiguous()
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise CheckpointError(f"to_hf: missing {missing[:3]}, unexpected {unexpected[:3]}")
    w = model.transformer.wte.weight
    return hf.to(device=w.device, dtype=w.dtype).eval()
