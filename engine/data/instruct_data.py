"""Instruction data for ``tritongpt finetune instruct``: Alpaca-format entries, prompt templates, and the
padded batches with masked targets that instruction fine-tuning trains on.

An entry is a JSON object with ``instruction`` and ``output`` (non-empty strings) and an optional
``input`` (may be empty or absent); a file is a JSON list of entries or JSON Lines, one per line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

IGNORE_INDEX = -100  # PyTorch's cross-entropy default; GPT.forward ignores every negative target

# {instruction} and {input} are filled in; the input part appears only for a non-empty input.
TEMPLATES: dict[str, dict[str, str]] = {
    "alpaca": {
        "head": ("Below is an instruction that describes a task. "
                 "Write a response that appropriately completes the request."
                 "\n\n### Instruction:\n{instruction}"),
        "input": "\n\n### Input:\n{input}",
        "response": "\n\n### Response:\n",
        "marker": "### Response:",
    },
    "phi3": {
        "head": "<|user|>\n{instruction}",
        "input": "\n{input}",
        "response": "\n<|assistant|>\n",
        "marker": "<|assistant|>",
    },
}


class InstructionDataError(ValueError):
    """An instruction file or entry is unusable; the message names it and what was expected."""


def _template(name: str) -> dict[str, str]:
    if name not in TEMPLATES:
        raise ValueError(f"template: unknown {name!r}; expected one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def format_instruction(entry: dict[str, Any], template: str = "alpaca") -> str:
    """The prompt for ``entry``: instruction, the input when it is non-empty, and the response header
    (the model's answer follows it)."""
    t = _template(template)
    text = t["head"].format(instruction=entry["instruction"])
    if entry.get("input"):
        text += t["input"].format(input=entry["input"])
    return text + t["response"]


def extract_response(generated: str, template: str = "alpaca") -> str:
    """The model's answer in ``generated`` (a full prompt + response or the response alone): the text
    after the last response marker, stripped."""
    marker = _template(template)["marker"]
    return generated.rsplit(marker, 1)[-1].strip()


def check_entry(entry: Any, where: str) -> dict[str, str]:
    if not isinstance(entry, dict):
        raise InstructionDataError(f"{where}: expected an object with 'instruction' and 'output', "
                                   f"got {type(entry).__name__}")
    for key in ("instruction", "output"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise InstructionDataError(f"{where}: '{key}' must be a non-empty string")
    if not isinstance(entry.get("input", ""), str):
        raise InstructionDataError(f"{where}: 'input' must be a string when present")
    return {"instruction": entry["instruction"], "input": entry.get("input", ""), "output": entry["output"]}


def load_instructions(path: str | Path) -> list[dict[str, str]]:
    """Entries from a JSON list or a JSON Lines file; every entry checked."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(2, "no such instruction file", str(path)) from None
    except UnicodeDecodeError as e:
        raise InstructionDataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise InstructionDataError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
        entries = [check_entry(e, f"{path}: entry {i}") for i, e in enumerate(raw)]
    else:
        entries = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InstructionDataError(f"{path}: line {n}: invalid JSON ({e.msg}); expected a JSON list of "
                                           "entries or one JSON object per line") from None
            entries.append(check_entry(obj, f"{path}: line {n}"))
    if not entries:
        raise InstructionDataError(f"{path}: no entries; expected objects with 'instruction' and 'output'")
    return entries


@dataclass
class EncodedExample:
    ids: list[int]  # prompt + response + one end-of-text
    prompt_len: int


@dataclass
class EncodeReport:
    truncated: int = 0  # examples cut to max_length
    dropped: int = 0  # examples whose response was cut away entirely


def encode_examples(entries: list[dict[str, str]], tokenizer, eot: int, max_length: int,
                    template: str = "alpaca") -> tuple[list[EncodedExample], EncodeReport]:
    """Token ids per entry: the prompt, the output and one end-of-text, cut to ``max_length`` tokens. An
    example with no response token left would train on nothing (and, alone in a batch, give a NaN
    mean): it is dropped and counted."""
    out, report = [], EncodeReport()
    for entry in entries:
        prompt = tokenizer.encode(format_instruction(entry, template))
        ids = prompt + tokenizer.encode(entry["output"]) + [eot]
        if len(ids) > max_length:
            report.truncated += 1
            ids = ids[:max_length]
            if len(prompt) >= max_length:
                report.dropped += 1
                continue
        out.append(EncodedExample(ids, len(prompt)))
    return out, report


def collate(batch: list[EncodedExample], eot: int, *, mask_prompt: bool = False,
            pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of shape (B, L): inputs padded with end-of-text to the longest example (or
    ``pad_to``), targets the inputs shifted by one. The first end-of-text after a response stays a
    target (the model learns to stop); every later padding position is ``IGNORE_INDEX``, and with
    ``mask_prompt`` the prompt's positions are too."""
    # Each example contributes len(ids) - 1 (input, target) pairs; its own final end-of-text is a target.
    width = max(len(e.ids) for e in batch) - 1
    if pad_to is not None:
        width = max(width, pad_to)
    x = torch.full((len(batch), width), eot, dtype=torch.long)
    y = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for r, e in enumerate(batch):
        n = len(e.ids) - 1
        x[r, :n] = torch.tensor(e.ids[:-1])
        y[r, :n] = torch.tensor(e.ids[1:])
        if mask_prompt:
            y[r, : e.prompt_len - 1] = IGNORE_INDEX
    return x, y
