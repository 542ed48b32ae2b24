"""``tritongpt finetune instruct``: Alpaca-style instruction fine-tuning of a GPT through the shared
training loop (``train_steps.run_steps``), then test responses from the KV-cache generator (greedy, stop
at end-of-text), extracted and scored: exact match and ROUGE-L always, an LLM judge when asked."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from ..data.epoch_sampling import EpochOrder
from ..data.instruct_data import (
    EncodedExample,
    InstructionDataError,
    collate,
    encode_examples,
    extract_response,
    format_instruction,
    load_instructions,
)
from .finetune_config import FinetuneConfig
from .instruct_score import exact_match, judge, rouge_l_f1


def split_entries(cfg: FinetuneConfig, data: Path) -> dict[str, list[dict[str, str]]]:
    """train/val/test entries: one file shuffled (seeded) and cut by the fractions, or the own files."""
    entries = load_instructions(data)
    rng = random.Random(cfg.seed)
    entries = entries[:]
    rng.shuffle(entries)
    n_train = round(len(entries) * cfg.train_fraction)
    n_val = round(len(entries) * cfg.val_fraction)
    parts = {"train": entries[:n_train], "val": entries[n_train:n_train + n_val], "test": entries[n_train + n_val:]}
    if cfg.val_data:
        parts["val"] = load_instructions(cfg.val_data)
    if cfg.test_data:
        parts["test"] = load_instructions(cfg.test_data)
    for name, part in parts.items():
        if not part:
            raise InstructionDataError(f"{data}: the {name} split is empty ({len(entries)} entries); give more "
                                       "entries or change the split fractions")
    return parts


def encode_splits(parts: dict[str, list[dict[str, str]]], tok, max_length: int, template: str,
                  ) -> tuple[dict[str, list[EncodedExample]], dict[str, Any]]:
    enc, report = {}, {}
    for name in ("train", "val"):
        enc[name], rep = encode_examples(parts[name], tok, tok.eot_token, max_length, template)
        report[f"{name}_examples"], report[f"{name}_truncated"], report[f"{name}_dropped"] = (
            len(enc[name]), rep.truncated, rep.dropped)
        if not enc[name]:
            raise InstructionDataError(f"the {name} split has no example left after --max-length {max_length} "
                                       f"(all {rep.dropped} prompts fill it); raise --max-length")
    report["test_entries"] = len(parts["test"])
    return enc, report


class InstructTask:
    """Next-token loss on collated instruction examples (padding and, with mask_prompt, the prompt
    ignored), each epoch's examples shuffled; evaluation: loss on bounded train and val batches."""

    flops_per_token = 0.0
    tokens_per_step = 0

    def __init__(self, enc: dict[str, list[EncodedExample]], t, cfg: FinetuneConfig, eot: int,
                 device: torch.device, world: int, rank: int) -> None:
        self.enc, self.t, self.cfg, self.eot, self.device, self.rank = enc, t, cfg, eot, device, rank
        self.order = EpochOrder(len(enc["train"]), t.seed, t.batch_size, world, t.grad_accum)

    def _collate(self, rows: list[EncodedExample]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = collate(rows, self.eot, mask_prompt=self.cfg.mask_prompt)
        return x.to(self.device), y.to(self.device)

    def batch(self, step: int, micro: int) -> tuple:
        return self._collate([self.enc["train"][int(i)] for i in self.order.indices(step, micro, self.rank)])

    def loss(self, model, batch: tuple) -> torch.Tensor:
        return model(*batch, return_logits=False)[1]

    def evaluate(self, model) -> dict[str, float]:
        out = {}
        for name, key in (("train", "train_eval_loss"), ("val", "val_loss")):
            rows = self.enc[name][: self.cfg.eval_batches * self.t.batch_size]
            total = 0.0
            for i in range(0, len(rows), self.t.batch_size):
                chunk = rows[i:i + self.t.batch_size]
                total += model(*self._collate(chunk), return_logits=False)[1].item() * len(chunk)
            out[key] = total / len(rows)
        return out

    def describe(self, rec: dict[str, Any]) -> str:
        return (f"step {rec['step']} (epoch {rec['epoch']:.2f}): train {rec['train_loss']:.4f}  "
                f"val {rec['val_loss']:.4f}")

    def extra(self, step: int) -> dict[str, Any]:
        return {"epoch": self.order.epoch_at(step)}

    def after_eval(self, model) -> str | None:
        return None

    def plot(self, metrics_path: Path, out: Path) -> Path | None:
        from .finetune_plot import plot_finetune

        return plot_finetune(metrics_path, out / "metrics.png")


def respond(model, tok, entries: list[dict[str, str]], cfg: FinetuneConfig, batch_size: int = 8,
            ) -> list[dict[str, str]]:
    """Greedy responses of ``model`` to each entry (stop at end-of-text), extracted after the response
    marker: entries ``{instruction, input, output, model_response}``."""
    from ..generation.decoding import generate

    out = []
    model.eval()
    limit = model.config.block_size
    for i in range(0, len(entries), batch_size):
        chunk = entries[i:i + batch_size]
        prompts = [tok.encode(format_instruction(e, cfg.template))[-limit:] for e in chunk]
        gen = generate(model, prompts, cfg.max_new_tokens, temperature=0.0, eos_token_id=tok.eot_token,
                       vocab_limit=tok.vocab_size)
        for e, ids in zip(chunk, gen, strict=True):
            text = tok.decode([t for t in ids if t != tok.eot_token])
            out.append({**e, "model_response": extract_response(text, cfg.template)})
    return out


def score(responses: list[dict[str, str]], cfg: FinetuneConfig) -> dict[str, Any]:
    """Exact match and ROUGE-L F1 means; the judge's mean score and unparsable count when configured."""
    n = max(len(responses), 1)
    out: dict[str, Any] = {
        "test_responses": len(responses),
        "test_exact_match": sum(exact_match(r["model_response"], r["output"]) for r in responses) / n,
        "test_rouge_l_f1": sum(rouge_l_f1(r["model_response"], r["output"]) for r in responses) / n,
    }
    if cfg.judge_url:
        res = judge(responses, cfg.judge_url, cfg.judge_model, template=cfg.template)
        for r, s in zip(responses, res.scores, strict=True):
            r["judge_score"] = s
        out.update(judge_model=cfg.judge_model, judge_mean_score=res.mean, judge_unparsable=res.unparsable)
    return out
