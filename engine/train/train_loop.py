"""``run_loop``: one language-model training run from a ``RunConfig`` (see ``command.py`` for the data and MFU
rules); the loop itself is ``train_steps.run_steps``."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from .train_config import RunConfig
from .train_setup import Windows, batch_source, make_optimizer, run_warnings
from .train_steps import Session, close_session, open_session, run_steps


def _build_model(run: RunConfig, vocab_size: int, device: torch.device):
    from ..model.config import GPTConfig
    from ..model.gpt import GPT

    t = run.train
    model_cfg = {"vocab_size": vocab_size, **run.model}
    if t.init_from:
        model = GPT.from_pretrained(t.init_from, **{k: v for k, v in run.model.items() if k in ("dropout", "backend")})
    else:
        model = GPT(GPTConfig.from_dict(model_cfg))
    model = model.to(device)
    model.backend = t.backend
    return model


class LMTask:
    """Language modelling on token windows: random or epoch-ordered windows per (seed, step), validation
    on fixed windows, a sample after each evaluation."""

    def __init__(self, run: RunConfig, s: Session, train_ds, val_ds, model, sampler) -> None:
        t = run.train
        T = model.config.block_size
        self.t, self.s, self.train_ds = t, s, train_ds
        self.train_w, self.val_w = Windows(train_ds, T), Windows(val_ds, T)
        self.sampler = sampler
        self.draw = batch_source(t, len(self.train_w), T, s.world, s.rank, sampler)
        self.val_starts = torch.randint(0, len(self.val_w) - T, (t.eval_iters * t.batch_size,),
                                        generator=torch.Generator().manual_seed(t.seed + 1))
        self.tokens_per_step = t.batch_size * s.world * t.grad_accum * T
        self.flops_per_token = model.flops_per_token(T)

    def batch(self, step: int, micro: int) -> tuple:
        return self.train_w.get(self.draw(step, micro), self.s.device)

    def loss(self, model, batch: tuple) -> torch.Tensor:
        return model(*batch, return_logits=False)[1]  # no logits: fused head + loss on the triton backend

    def evaluate(self, model) -> dict[str, float]:
        total = 0.0
        for chunk in self.val_starts.split(self.t.batch_size):
            x, y = self.val_w.get(chunk, self.s.device)
            total += model(x, y, return_logits=False)[1].item() * len(chunk)
        loss = total / len(self.val_starts)
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}

    def describe(self, rec: dict[str, Any]) -> str:
        epoch = f" (epoch {rec['epoch']:.2f})" if "epoch" in rec else ""
        return f"step {rec['step']}{epoch}: train {rec['train_loss']:.4f}  val {rec['val_loss']:.4f}  " \
               f"(ppl {rec['val_ppl']:.2f})"

    def extra(self, step: int) -> dict[str, Any]:
        return {"epoch": self.sampler.epoch_at(step)} if self.sampler is not None else {}  # samples / windows

    def after_eval(self, model) -> str | None:
        return _sample(model, self.train_ds, self.t) if self.t.sample_tokens else None

    def plot(self, metrics_path: Path, out: Path) -> Path | None:
        from .train_plot import plot_metrics

        return plot_metrics(metrics_path, out / "loss.png")


def run_loop(run: RunConfig, out: Path, *, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    from ..data.epoch_sampling import describe_length, epoch_sampler
    from ..data.shards import TokenDataset
    from ..gpu_peaks import lookup

    t = run.train
    s = open_session(t, out, quiet)
    train_ds, val_ds = TokenDataset(run.data, "train"), TokenDataset(run.data, "val")
    model = _build_model(run, train_ds.vocab_needed, s.device)
    for ds in (train_ds, val_ds):
        ds.check_vocab(model.config.vocab_size, _vocab_source(run))
    T = model.config.block_size
    sampler = epoch_sampler(t, len(train_ds), T, s.world)  # None with sampling = "random"
    if sampler is not None and t.epochs:
        t = dataclasses.replace(t, max_iters=sampler.steps_for(t.epochs))
        run = dataclasses.replace(run, train=t)  # checkpoints record the derived length
        s.log(describe_length(sampler, t.epochs, t.max_iters))
    task = LMTask(run, s, train_ds, val_ds, model, sampler)
    optimizer = make_optimizer(model, t, s.device)
    for line in run_warnings(t, T, s.world, {"train": len(train_ds), "val": len(val_ds)}):
        s.warn(line)
    meta = {"tokenizer": train_ds.tokenizer_meta, "run": run.to_dict()}
    peak = lookup(torch.cuda.get_device_name(s.device)) if s.device.type == "cuda" else None
    peak_tflops = peak.bf16_tflops if peak else None
    result = run_steps(s, task, model, optimizer, t, meta, resume=resume, peak_tflops=peak_tflops)
    close_session(s)  # not after an error: a barrier would wait for ranks that may never reach it
    return result


def _vocab_source(run: RunConfig) -> str:
    """Where the model's vocab_size comes from, for the error that finds it too small."""
    if run.train.init_from:
        return f"train.init_from {run.train.init_from}"
    return "model.vocab_size" if "vocab_size" in run.model else "the model"


def _sample(model, ds, t) -> str:
    from ..data.tokenizer import tokenizer_from_dict
    from ..generation.decoding import generate

    tok = tokenizer_from_dict(ds.tokenizer_meta)
    try:
        prompt = tok.encode(t.sample_prompt) or [0]
    except ValueError:
        prompt = [0]
    n = min(t.sample_tokens, model.config.block_size - len(prompt))
    if n < 1:
        return ""
    out = generate(model, [prompt], n, temperature=0.8, top_k=200, seed=t.seed, vocab_limit=tok.vocab_size)[0]
    return "--- sample ---\n" + t.sample_prompt + tok.decode(out) + "\n--------------"
