"""The model a command starts from, named the same way everywhere (``generate``, ``finetune``,
``classify``): ``--checkpoint PATH`` (a tritongpt checkpoint folder), ``--hf-dir DIR_OR_HUB_ID`` (a Hugging
Face GPT-2 folder, else a Hub model id; never a preset of that name) or ``--preset NAME`` (random
weights), plus ``--tokenizer``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_arguments(s: argparse.ArgumentParser, *, presets: bool = True) -> None:
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="tritongpt checkpoint folder (config.json + model.safetensors)")
    src.add_argument("--hf-dir", help="Hugging Face GPT-2 folder (config.json + weights), or a Hub model id")
    if presets:
        src.add_argument("--preset", help="a preset with random weights (smoke tests and benchmarks)")
    s.add_argument("--tokenizer", default=None, help="'gpt2' or a tokenizer JSON file (default: from the checkpoint)")


def model_folder(args: argparse.Namespace) -> Path | None:
    """--checkpoint / --hf-dir, checked: a folder with a config.json (for --hf-dir a Hub id resolves to
    its cached snapshot folder)."""
    if getattr(args, "checkpoint", None) is not None:
        folder, flag = Path(args.checkpoint), "--checkpoint"
    elif getattr(args, "hf_dir", None) is not None:
        folder, flag = Path(args.hf_dir), "--hf-dir"
        # A name that is no local path (nothing there, no existing parent folder) is a Hub model id.
        if not folder.exists() and not (folder.parent.name and folder.parent.is_dir()):
            from .weights import CheckpointError, resolve_folder

            try:
                return resolve_folder(str(args.hf_dir))
            except CheckpointError as e:
                raise ValueError(f"--hf-dir: {e}") from None
    else:
        return None
    if not folder.is_dir():
        why = "it is a file" if folder.exists() else "it does not exist"
        raise ValueError(f"{flag}: {folder}: not a folder ({why}); expected a folder with config.json + weights")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{flag}: {folder}: no config.json in this folder (expected config.json + weights)")
    return folder


def named_tokenizer(value: str):
    from ..data.tokenizer import get_tokenizer, load_tokenizer

    if value == "gpt2":
        return get_tokenizer("gpt2")
    try:
        return load_tokenizer(value)
    except OSError as e:
        raise ValueError(f"--tokenizer: {e.filename}: {e.strerror} (expected 'gpt2' or a tokenizer JSON file)") from e
    except ValueError as e:
        raise ValueError(f"--tokenizer: {e}") from e


def default_tokenizer(folder: Path | None, checkpoint: bool):
    """(tokenizer, where it came from): the checkpoint's own, else GPT-2's."""
    from ..data.tokenizer import get_tokenizer, load_tokenizer, tokenizer_from_dict
    from .weights import read_json_config

    if folder is not None:
        config = folder / "config.json"
        meta = read_json_config(config)
        if isinstance(meta.get("tokenizer"), dict):
            return tokenizer_from_dict(meta["tokenizer"], source=f"{config}: tokenizer"), f"{config}: tokenizer"
        if checkpoint and (folder / "tokenizer.json").exists():
            return load_tokenizer(folder / "tokenizer.json"), str(folder / "tokenizer.json")
    return get_tokenizer("gpt2"), "the default tokenizer (gpt2)"


def load_model(args: argparse.Namespace, **overrides):
    """(GPT, tokenizer, folder) from the model flags, on the CPU in float32. ``overrides`` (e.g. dropout)
    apply to the model config."""
    from .gpt import GPT

    folder = model_folder(args)
    # An explicit --tokenizer is read first: a wrong path fails before a large model is loaded.
    named = (named_tokenizer(args.tokenizer), f"--tokenizer {args.tokenizer}") if args.tokenizer else None
    preset = getattr(args, "preset", None)
    model = GPT.from_preset(preset, **overrides) if preset else GPT.from_pretrained(folder, **overrides)
    tok, origin = named or default_tokenizer(folder, getattr(args, "checkpoint", None) is not None)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"{origin}: the tokenizer has {tok.vocab_size} tokens but the model's vocabulary only "
                         f"{model.config.vocab_size}; use the tokenizer the model was trained with")
    return model, tok, folder
