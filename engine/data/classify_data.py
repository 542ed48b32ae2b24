"""Labelled text for ``tritongpt finetune classify``: reading CSV/TSV files, class balancing, a seeded
stratified split, label maps and padded token batches.

Accepted layouts: a CSV or TSV file with a header naming a text and a label column (``text_column``,
``label_column``: by default the first of ``text``/``sentence``/``message``/``sms`` and of
``label``/``class``/``category``/``target``), or a header-less file of ``label<TAB>text`` lines: the SMS
Spam Collection's layout, read as is.
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

TEXT_NAMES = ("text", "sentence", "message", "sms", "review")
LABEL_NAMES = ("label", "class", "category", "target", "sentiment")


class ClassifyDataError(ValueError):
    """A labelled-data file is unusable; the message names it and what was expected."""


@dataclass
class Example:
    text: str
    label: str


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(2, "no such data file", str(path)) from None
    except IsADirectoryError:
        raise IsADirectoryError(21, "is a folder; expected a CSV/TSV file", str(path)) from None
    except UnicodeDecodeError as e:
        raise ClassifyDataError(f"{path}: not UTF-8 text (byte {e.start})") from None


def _pick(header: list[str], wanted: str | None, names: tuple[str, ...], what: str, path: Path) -> int:
    low = [h.strip().lower() for h in header]
    if wanted is not None:
        if wanted.lower() not in low:
            raise ClassifyDataError(f"{path}: no column {wanted!r} ({what}); the header has {header}")
        return low.index(wanted.lower())
    for n in names:
        if n in low:
            return low.index(n)
    raise ClassifyDataError(f"{path}: no {what} column in the header {header}; expected one of {list(names)} "
                            f"(or name it with finetune.{what}_column)")


def read_examples(path: str | Path, text_column: str | None = None, label_column: str | None = None) -> list[Example]:
    """Every (text, label) row of ``path``; see the module docstring for the layouts."""
    path = Path(path)
    text = _read_text(path)
    first = text.split("\n", 1)[0]
    delim = "\t" if "\t" in first else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delim,
                           quoting=csv.QUOTE_NONE if delim == "\t" else csv.QUOTE_MINIMAL))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise ClassifyDataError(f"{path}: no rows; expected a text and a label column")
    header = [c.strip().lower() for c in rows[0]]
    has_header = text_column is not None or any(n in header for n in TEXT_NAMES + LABEL_NAMES)
    if has_header:
        ti = _pick(rows[0], text_column, TEXT_NAMES, "text", path)
        li = _pick(rows[0], label_column, LABEL_NAMES, "label", path)
        body, first_line = rows[1:], 2
    elif delim == "\t" and all(len(r) >= 2 for r in rows):
        ti, li, body, first_line = 1, 0, rows, 1  # SMS Spam Collection: label<TAB>text
    else:
        raise ClassifyDataError(f"{path}: no header naming a text and a label column (e.g. text,label; or name "
                                "them with finetune.text_column and finetune.label_column), and not label<TAB>text "
                                "lines (the SMS Spam Collection layout)")
    out = []
    for n, r in enumerate(body, first_line):
        if max(ti, li) >= len(r):
            raise ClassifyDataError(f"{path}: line {n}: {len(r)} columns, expected at least {max(ti, li) + 1}")
        t = "\t".join(r[ti:]) if not has_header and delim == "\t" else r[ti]  # a tab inside an SMS stays text
        if not r[li].strip():
            raise ClassifyDataError(f"{path}: line {n}: empty label")
        out.append(Example(t, r[li].strip()))
    if not out:
        raise ClassifyDataError(f"{path}: a header but no rows")
    return out


def balance(examples: list[Example], seed: int) -> list[Example]:
    """Undersample every class to the size of the smallest one (seeded), keeping the file order."""
    by = Counter(e.label for e in examples)
    n = min(by.values())
    rng = random.Random(seed)
    keep: set[int] = set()
    for label in by:
        idx = [i for i, e in enumerate(examples) if e.label == label]
        keep.update(rng.sample(idx, n))
    return [e for i, e in enumerate(examples) if i in keep]


def stratified_split(examples: list[Example], fractions: tuple[float, float, float],
                     seed: int) -> tuple[list[Example], list[Example], list[Example]]:
    """(train, val, test) with each class split in ``fractions`` (seeded shuffle per class)."""
    rng = random.Random(seed)
    parts: tuple[list[Example], list[Example], list[Example]] = ([], [], [])
    for label in sorted({e.label for e in examples}):
        group = [e for e in examples if e.label == label]
        rng.shuffle(group)
        n_train = round(len(group) * fractions[0])
        n_val = round(len(group) * fractions[1])
        parts[0].extend(group[:n_train])
        parts[1].extend(group[n_train:n_train + n_val])
        parts[2].extend(group[n_train + n_val:])
    for p in parts:
        rng.shuffle(p)
    return parts


def label_map(examples: list[Example]) -> dict[str, int]:
    """Label -> class id, in sorted label order (stable across runs and files)."""
    return {label: i for i, label in enumerate(sorted({e.label for e in examples}))}


def label_ids(examples: list[Example], labels: dict[str, int], where: str) -> list[int]:
    unknown = sorted({e.label for e in examples} - labels.keys())
    if unknown:
        raise ClassifyDataError(f"{where}: labels {unknown[:10]} are not among the trained ones {sorted(labels)}")
    return [labels[e.label] for e in examples]


@dataclass
class Encoded:
    ids: list[list[int]]
    truncated: int  # texts cut to max_length


def encode_texts(tokenizer, texts: list[str], max_length: int) -> Encoded:
    """Token ids per text, each cut to ``max_length`` (the count of cut texts reported); an empty text
    keeps one token so it has a last real position."""
    ids, cut = [], 0
    for t in texts:
        x = tokenizer.encode(t) or [tokenizer.eot_token]
        if len(x) > max_length:
            x, cut = x[:max_length], cut + 1
        ids.append(x)
    return Encoded(ids, cut)


def pad_batch(rows: list[list[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, L) right-padded with ``pad_id``, last (B,) the index of each row's last real token)."""
    width = max(width or 0, max(len(r) for r in rows))
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r)
    last = torch.tensor([len(r) - 1 for r in rows])
    return x, last
