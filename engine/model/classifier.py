"""GPT-2 as a text classifier: the transformer body with its LM head replaced by ``n_embd -> num_classes``,
reading the hidden state of each row's last real (non-pad) token, the one that has attended to the
whole text under the causal mask."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gpt import GPT

TASK = "classify"


class GPTClassifier(nn.Module):
    """``model(idx, last)`` -> class logits (B, num_classes); ``model(idx, last, labels)`` -> ``(logits, loss)``.
    ``last`` (B,) is each row's last real position (right padding); None means the final column."""

    def __init__(self, gpt: GPT, labels: dict[str, int]) -> None:
        super().__init__()
        if len(labels) < 2:
            raise ValueError(f"labels: a classifier needs at least 2 classes, got {sorted(labels)}")
        if sorted(labels.values()) != list(range(len(labels))):
            raise ValueError(f"labels: ids must be 0..{len(labels) - 1}, got {labels}")
        # The body's modules under GPT's own names (transformer.*) and the head as score.*: checkpoints
        # and their loaders (weights.py, train/train_checkpoint.py) read a classifier like a GPT. The GPT object
        # stays unregistered: its LM head has no part here.
        self.transformer = gpt.transformer
        object.__setattr__(self, "gpt", gpt)
        self.labels = dict(labels)
        self.score = nn.Linear(gpt.config.n_embd, len(labels))
        nn.init.normal_(self.score.weight, std=0.02)
        nn.init.zeros_(self.score.bias)

    @property
    def config(self):
        return self.gpt.config

    @property
    def head(self) -> nn.Linear:
        return self.score

    @property
    def backend(self) -> str:
        return self.gpt.backend

    @backend.setter
    def backend(self, name: str) -> None:
        self.gpt.backend = name

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def forward(self, idx: torch.Tensor, last: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        h = self.gpt.hidden_states(idx)  # (B, T, C), after the final LayerNorm
        if last is None:
            last = torch.full((idx.shape[0],), idx.shape[1] - 1, device=idx.device)
        pooled = h[torch.arange(idx.shape[0], device=idx.device), last.to(idx.device)]
        logits = self.score(pooled)
        if labels is None:
            return logits
        return logits, F.cross_entropy(logits.float(), labels.to(logits.device))

    def task_config(self) -> dict[str, Any]:
        """What ``config.json`` records beside the GPT settings: the task and its label map."""
        return {"task": TASK, "num_classes": self.num_classes, "labels": self.labels}


def set_trainable(model: GPTClassifier | GPT, spec: str) -> int:
    """Freeze all but what ``spec`` names: ``all``, ``head`` (the output head), or ``last:N`` (the last
    N blocks, the final LayerNorm and the head). Returns the number of trainable parameters."""
    gpt = model.gpt if isinstance(model, GPTClassifier) else model
    head = model.score if isinstance(model, GPTClassifier) else gpt.lm_head
    if spec == "all":
        parts: list[nn.Module] = [model]
    elif spec == "head":
        parts = [head]
    elif spec.startswith("last:") and spec[5:].isdigit() and 1 <= int(spec[5:]) <= len(gpt.transformer.h):
        parts = [*gpt.transformer.h[-int(spec[5:]):], gpt.transformer.ln_f, head]
    else:
        raise ValueError(f"--trainable: expected 'all', 'head' or 'last:N' with 1 <= N <= "
                         f"{len(gpt.transformer.h)}, got {spec!r}")
    for p in model.parameters():
        p.requires_grad_(False)
    for part in parts:
        for p in part.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def classify_text(model: GPTClassifier, tokenizer, text: str | list[str],
                  max_length: int | None = None) -> tuple[str, float] | list[tuple[str, float]]:
    """(label, probability) of the most likely class for ``text`` (a list gives a list)."""
    from ..data.classify_data import encode_texts, pad_batch

    texts = [text] if isinstance(text, str) else list(text)
    limit = min(max_length or model.config.block_size, model.config.block_size)
    enc = encode_texts(tokenizer, texts, limit)
    pad = tokenizer.eot_token if tokenizer.eot_token is not None else 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), 32):
        x, last = pad_batch(enc.ids[i:i + 32], pad)
        probs = model(x.to(device), last.to(device)).float().softmax(-1)
        p, k = probs.max(-1)
        names = {v: k2 for k2, v in model.labels.items()}
        out.extend((names[int(c)], float(q)) for c, q in zip(k, p, strict=True))
    model.train(was_training)
    return out[0] if isinstance(text, str) else out


def save_classifier(model: GPTClassifier, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """A checkpoint folder: the body (GPT names) and ``score.*`` in ``model.safetensors``, ``config.json``
    with the GPT settings plus ``task``, ``num_classes`` and ``labels``."""
    from .weights import save_checkpoint

    return save_checkpoint(model, path, {**model.task_config(), **(extra or {})})


def load_classifier(path: str | Path) -> GPTClassifier:
    """Rebuild a classifier saved by :func:`save_classifier` (or a fine-tuning run's checkpoint)."""
    from .config import GPTConfig
    from .weights import CheckpointError, load_state, read_json_config, read_tensors

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json (expected a classifier checkpoint folder)")
    meta = read_json_config(folder / "config.json")
    labels = meta.get("labels")
    if meta.get("task") != TASK or not isinstance(labels, dict) or len(labels) < 2:
        raise CheckpointError(f"{folder}: not a classifier checkpoint (config.json has task "
                              f"{meta.get('task')!r}, expected {TASK!r} with a 'labels' map)")
    try:
        cfg = GPTConfig.from_dict(meta["model"])
        model = GPTClassifier(GPT(cfg), {str(k): int(v) for k, v in labels.items()})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'}: invalid classifier config ({e})") from e
    sd, src = read_tensors(folder)
    load_state(model, sd, str(src))
    return model


def read_task(path: str | Path) -> str | None:
    """The ``task`` a checkpoint folder's config.json records (None: a language model)."""
    f = Path(path) / "config.json"
    try:
        return json.loads(f.read_text(encoding="utf-8")).get("task")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
