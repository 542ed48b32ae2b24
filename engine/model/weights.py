"""Loading and saving weights: Hugging Face GPT-2 folders (local, or a Hub model id resolved through
``huggingface_hub``'s cache) and tritongpt checkpoints.

Only safetensors, or ``torch.load(weights_only=True)`` for ``pytorch_model.bin``: arbitrary
pickled objects are never unpickled. Every mismatch names the tensor at fault.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..fsutil import atomic_dir
from ..schema import rules
from .config import GPTConfig

# Hugging Face's GPT-2 stores these as Conv1D weights of shape (in, out): transpose to nn.Linear.
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HEAD = "lm_head.weight"
WTE = "transformer.wte.weight"
VOCAB_ROWS = (WTE, HEAD)  # the matrices with one row per (padded) vocabulary entry


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
           "layer_norm_epsilon": "layer_norm_eps", "tie_word_embeddings": "tie_embeddings"}


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
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of old checkpoints
        if name == HEAD:  # an nn.Linear on both sides; fit_head decides whether it is used
            out[HEAD] = v
            continue
        if name.endswith(_CONV1D):
            v = v.t()
        out["transformer." + name] = v
    return out


def fit_head(sd: dict[str, torch.Tensor], cfg: GPTConfig, source: str) -> dict[str, torch.Tensor]:
    """``sd`` with the LM head the model expects: an untied model gets the file's own head, or a copy
    of wte when the file has none (a tied checkpoint); a tied model refuses a head that differs from
    wte, as dropping it would silently change the model."""
    sd = dict(sd)
    if not cfg.tie_embeddings:
        if HEAD not in sd and WTE in sd:
            sd[HEAD] = sd[WTE]
        return sd
    head, wte = sd.pop(HEAD, None), sd.get(WTE)
    if head is None or wte is None or head.shape[1:] != wte.shape[1:]:
        return sd
    rows = min(cfg.vocab_size, head.shape[0], wte.shape[0])
    if not torch.equal(head[:rows], wte[:rows]):
        raise CheckpointError(f"{source}: {HEAD} differs from {WTE} (an untied LM head); "
                              "load it with tie_embeddings=False")
    return sd


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
    params = {k: v for k, v in model.state_dict().items() if k != HEAD or not model.config.tie_embeddings}
    missing = sorted(set(params) - set(sd))
    unexpected = sorted(set(sd) - set(params) - {HEAD})  # a tied model's copy of wte: not used
    if missing:
        raise CheckpointError(f"{source}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        raise _unexpected(unexpected, model.config, source)
    srcs = {name: _checked_source(name, sd[name], dst, model.config.vocab_size, source) for name, dst in params.items()}
    with torch.no_grad():
        for name, dst in params.items():
            src = srcs[name]
            if src.shape[0] != dst.shape[0]:  # unpadded checkpoint into a padded model
                dst[: src.shape[0]].copy_(src)
                dst[src.shape[0]:].zero_()
            else:
                dst.copy_(src)


def _unexpected(names: list[str], cfg: GPTConfig, source: str) -> CheckpointError:
    """Tensors the model has no place for; a bias the config switched off is named with its setting."""
    for name in names:
        flag = _bias_switch(name, cfg)
        if flag:
            return CheckpointError(f"{source}: the checkpoint has {name}, but the model is built with "
                                   f"{flag}=False and has no such tensor")
    return CheckpointError(f"{source}: unexpected tensors {names[:5]}{' ...' if len(names) > 5 else ''}")


def _bias_switch(name: str, cfg: GPTConfig) -> str | None:
    """The setting that leaves the model without the bias tensor ``name``; None when none does."""
    if name.endswith("attn.c_attn.bias"):
        return None if cfg.has_qkv_bias else "bias" if cfg.qkv_bias is None else "qkv_bias"
    return "bias" if name.endswith(".bias") and not cfg.bias else None


def _checked_source(name: str, src: torch.Tensor, dst: torch.Tensor, vocab: int, source: str) -> torch.Tensor:
    """``src`` fitted to ``dst`` (a padded vocabulary matrix is cut to the vocabulary), after every check."""
    want = tuple(dst.shape)
    if name in VOCAB_ROWS and src.shape[0] != dst.shape[0] == vocab:
        src = src[:vocab]  # padded checkpoint into an unpadded model
    elif name in VOCAB_ROWS and src.shape[0] == vocab != dst.shape[0]:
        want = (vocab, *want[1:])  # unpadded checkpoint into a padded model
    if tuple(src.shape) != want:
        raise CheckpointError(f"{source}: tensor {name} has shape {tuple(src.shape)}, the config expects {want}")
    if not src.is_floating_point():
        raise CheckpointError(f"{source}: tensor {name} has non-float dtype {src.dtype}")
    check_finite(src, name, source)
    return src


EXPECTED = "expected a folder with config.json + model.safetensors, or a Hugging Face Hub model id such as gpt2"


def resolve_folder(path: str | Path) -> Path:
    """The folder to load: ``path`` itself when it is a folder (a local folder always wins), else the
    Hub snapshot of model id ``path`` (downloaded, or read from the cache under HF_HOME)."""
    folder = Path(path)
    if folder.is_dir():
        return folder
    if _is_local_path(folder, str(path)):
        raise CheckpointError(f"{path}: not a folder ({EXPECTED})")
    return hub_folder(str(path))


def _is_local_path(folder: Path, name: str) -> bool:
    """A path, never looked up on the Hub: it exists (a file), its parent folder exists ("runs/ckpt"
    with runs/ here is a mistyped checkpoint: no Hub lookup, no network wait), or it is no valid id."""
    return folder.exists() or (folder.parent.name != "" and folder.parent.is_dir()) or not _is_repo_id(name)


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_folder(repo_id: str) -> Path:
    """The cached snapshot folder of Hub model ``repo_id`` holding its config.json and weights
    (model.safetensors, else pytorch_model.bin); only those files are fetched."""
    from huggingface_hub import hf_hub_download

    try:
        config = Path(hf_hub_download(repo_id, CONFIG_FILE))
        # The weights come from the config's commit, so both files belong to one revision.
        _hub_weights(repo_id, config.parent.name)
    except (OSError, ValueError) as e:  # the Hub's errors: not found, offline and not cached, network
        raise CheckpointError(_hub_error(repo_id, e)) from e
    return config.parent


def _hub_weights(repo_id: str, revision: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, WEIGHTS_FILE, revision=revision))
    except EntryNotFoundError as first:
        try:
            return Path(hf_hub_download(repo_id, "pytorch_model.bin", revision=revision))
        except EntryNotFoundError:
            raise first from None


def _hub_error(repo_id: str, e: Exception) -> str:
    """One line: what was tried, why it failed, what is accepted."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        why = f"HF_HUB_OFFLINE is set and it is not in the cache {constants.HF_HUB_CACHE}"
    else:
        line = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        sentence = line.split(". ")[0].rstrip(".")[:200]
        why = f"{type(e).__name__}: {sentence}" if sentence else type(e).__name__
    return f"{repo_id}: no such folder, and no Hugging Face Hub model could be fetched ({why}); {EXPECTED}"


def read_pretrained(path: str | Path, **overrides: Any) -> tuple[GPTConfig, dict[str, torch.Tensor], str]:
    """A Hugging Face GPT-2 folder, Hub model id or tritongpt checkpoint folder -> (config, state dict in this
    project's layout, the file it came from), checked; ``GPT.from_pretrained`` builds the model and loads it
    with :func:`load_state`."""
    folder = resolve_folder(path)
    if not (folder / CONFIG_FILE).exists():
        raise CheckpointError(f"{folder}: no {CONFIG_FILE}")
    raw = read_json_config(folder / CONFIG_FILE)
    if raw.get("task") not in (None, "lm"):
        raise CheckpointError(f"{folder}: a {raw['task']!r} checkpoint (a task head, no LM head), not a language "
                              "model; load it with tritongpt.engine.load_classifier or `tritongpt classify "
                              "--checkpoint`")
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
    return cfg, fit_head(sd, cfg, str(src)), str(src)


def write_model_files(model, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
    """``model.safetensors`` + ``config.json`` into an existing (temporary) folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tied = model.config.tie_embeddings  # a tied head is wte itself: stored once
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != HEAD or not tied}
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
    parity tests; ``save_pretrained`` on it writes a Hugging Face folder). Needs transformers. An
    untied model exports its own ``lm_head.weight`` with ``tie_word_embeddings=False``; a
    ``qkv_bias=False`` one zero q/k/v biases (GPT-2 always has them; zeros compute the same). GPT-2
    has every other bias too, so a ``bias=False`` model is refused."""
    import transformers

    cfg = model.config
    if not cfg.bias:
        raise ValueError("model: Hugging Face GPT-2 always has biases; this model was built with bias=False")
    hf_cfg = transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, layer_norm_epsilon=cfg.layer_norm_eps, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=cfg.tie_embeddings,
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg)
    missing, unexpected = hf.load_state_dict(_hf_export_state(model), strict=False)
    missing = [k for k in missing if not (k == HEAD and cfg.tie_embeddings)
               and not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise CheckpointError(f"to_hf: missing {missing[:3]}, unexpected {unexpected[:3]}")
    w = model.transformer.wte.weight
    return hf.to(device=w.device, dtype=w.dtype).eval()


def _hf_export_state(model) -> dict[str, torch.Tensor]:
    """``model``'s tensors in Hugging Face GPT-2's names and layout, vocabulary padding cut off."""
    cfg = model.config
    sd = {}
    for name, v in model.state_dict().items():
        if name == HEAD and cfg.tie_embeddings:
            continue  # tied to wte on both sides
        v = v.detach()
        if name.endswith(_CONV1D):
            v = v.t()
        if name in VOCAB_ROWS:
            v = v[: cfg.vocab_size]
        sd[name] = v.contiguous()
    if not cfg.has_qkv_bias:
        for i, block in enumerate(model.transformer.h):
            w = block.attn.c_attn.weight
            sd[f"transformer.h.{i}.attn.c_attn.bias"] = w.new_zeros(w.shape[0])
    return sd
