"""``tritongpt classify``: label texts with a fine-tuned classifier (``tritongpt finetune classify``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--checkpoint", type=Path, required=True,
                   help="a fine-tuning run folder (its model/) or a classifier checkpoint folder")
    s.add_argument("text", nargs="*", help="texts to classify")
    s.add_argument("--file", type=Path, default=None, help="one text per line")
    s.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    s.add_argument("--json", action="store_true", help="one JSON object per text")


def checkpoint_folder(path: Path) -> Path:
    """The classifier folder: ``path`` itself, or a run folder's ``model/``."""
    if not path.is_dir():
        why = "it is a file" if path.exists() else "it does not exist"
        raise ValueError(f"--checkpoint: {path}: not a folder ({why}); expected a fine-tuning run folder or a "
                         "classifier checkpoint folder")
    if (path / "config.json").is_file():
        return path
    if (path / "model" / "config.json").is_file():
        return path / "model"
    raise ValueError(f"--checkpoint: {path}: no config.json here or in {path / 'model'} (a run folder gets its "
                     "model/ when fine-tuning finishes)")


def _texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.text)
    if args.file is not None:
        try:
            texts += [ln for ln in args.file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--file: {args.file}: cannot read it as UTF-8 text ({e})") from None
    if not texts:
        raise ValueError("text: give texts to classify as arguments or with --file")
    return texts


def main(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..model.classifier import classify_text, load_classifier
    from ..model.model_source import default_tokenizer

    folder = checkpoint_folder(args.checkpoint)
    texts = _texts(args)
    device = resolve_device(args.device, "--device")
    model = load_classifier(folder).to(device)
    model.backend = "auto"
    tok, _ = default_tokenizer(folder, True)
    for text, (label, p) in zip(texts, classify_text(model, tok, texts), strict=True):
        print(json.dumps({"text": text, "label": label, "probability": round(p, 6)}) if args.json
              else f"{label}\t{p:.4f}\t{text}")
    return 0
