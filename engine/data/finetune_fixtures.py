"""Small fine-tuning datasets the project makes itself (the SMS Spam Collection and Alpaca data cannot be
fetched everywhere and are not shipped): a classification set of real sentences, speeches from two
Shakespeare plays labelled by play, in the SMS Spam Collection's ``label<TAB>text`` layout; and an
instruction set of deterministic tasks a tiny model can learn (upper-casing and reversing words,
adding small numbers), in Alpaca's JSON format."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from ..fsutil import atomic_write_text

PLAYS = ("hamlet", "comedy_of_errors")
WORDS = ("cat", "dog", "sun", "tree", "bird", "fish", "moon", "star", "rain", "wind", "ship", "road",
         "book", "lamp", "door", "rose", "king", "gold", "milk", "snow")


def play_text(name: str) -> str:
    from .. import assets

    path = assets.fetch_shakespeare(quiet=True)
    text = path.read_text(encoding="utf-8")
    index = json.loads(path.with_suffix(".index.json").read_text(encoding="utf-8"))
    doc = next((d for d in index["documents"] if d["name"] == f"{name}_gut.txt"), None)
    if doc is None:
        raise ValueError(f"play {name!r} is not in the corpus")
    return text[doc["start"]: doc["end"]]


def speeches(text: str, min_words: int = 6, max_words: int = 60) -> list[str]:
    """The speeches of a play: paragraphs after a speaker line (``NAME.``), one line each, stage
    directions and headings left out."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in para.strip().splitlines()]
        if len(lines) < 2 or not re.fullmatch(r"[A-Z][A-Za-z .']*\.", lines[0]):
            continue
        speech = " ".join(ln for ln in lines[1:] if not ln.startswith(("[", "Enter", "Exit", "Exeunt")))
        n = len(speech.split())
        if min_words <= n <= max_words:
            out.append(speech)
    return out


def classification_rows(per_class: int = 300, seed: int = 0, plays: tuple[str, str] = PLAYS) -> list[str]:
    """``play<TAB>speech`` lines, ``per_class`` speeches of each play, shuffled (seeded)."""
    rng = random.Random(seed)
    rows = []
    for play in plays:
        found = speeches(play_text(play))
        if len(found) < per_class:
            raise ValueError(f"{play}: {len(found)} speeches, fewer than per_class = {per_class}")
        rows += [f"{play}\t{s}" for s in rng.sample(found, per_class)]
    rng.shuffle(rows)
    return rows


def instruction_entries(n: int = 400, seed: int = 0) -> list[dict[str, str]]:
    """``n`` Alpaca entries of three deterministic tasks, drawn (seeded) from small vocabularies."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.randrange(3)
        if kind == 0:
            w = rng.choice(WORDS)
            out.append({"instruction": "Uppercase the word.", "input": w, "output": w.upper()})
        elif kind == 1:
            w = rng.choice(WORDS)
            out.append({"instruction": "Reverse the word.", "input": w, "output": w[::-1]})
        else:
            a, b = rng.randrange(10), rng.randrange(10)
            out.append({"instruction": "Add the numbers.", "input": f"{a} + {b}", "output": str(a + b)})
    return out


def write_classification(path: str | Path, per_class: int = 300, seed: int = 0) -> Path:
    return atomic_write_text(Path(path), "\n".join(classification_rows(per_class, seed)) + "\n")


def write_instructions(path: str | Path, n: int = 400, seed: int = 0) -> Path:
    return atomic_write_text(Path(path), json.dumps(instruction_entries(n, seed), indent=1))
