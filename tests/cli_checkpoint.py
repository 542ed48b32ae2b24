"""A tiny character-level checkpoint for the command-line tests, and one `tritongpt generate` call."""

from __future__ import annotations

import json
import string
from pathlib import Path

from tritongpt.cli import main
from tritongpt.engine.data.tokenizer import CharTokenizer

CHARS = string.printable[:97]  # the tiny preset's vocabulary size


def save_char_checkpoint(model, folder: Path) -> tuple[Path, CharTokenizer]:
    """``model`` saved to ``folder`` with a character tokenizer over CHARS in its config.json, as
    `tritongpt train` writes it."""
    tok = CharTokenizer(CHARS)
    model.save(folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["tokenizer"] = tok.to_dict()
    (folder / "config.json").write_text(json.dumps(meta))
    return folder, tok


def run(capsys, *argv) -> tuple[int, str, str]:
    """`tritongpt generate ARGV...`: (exit code, stdout, stderr)."""
    code = main(["generate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err
