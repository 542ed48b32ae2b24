"""``tritongpt demo --finetune`` (``make demo-finetune``): both fine-tuning jobs end to end on the project's
own fixtures, from tiny models pretrained here on Shakespeare, in about a minute on a CPU.

- classify: a GPT-2-BPE model (2 layers, 32 wide) pretrained for 30 steps on two plays, then fine-tuned to
  tell their speeches apart (the SMS Spam Collection's file layout);
- instruct: a character model with an end-of-text token, pretrained for 100 steps, then taught three
  deterministic tasks (upper-casing, reversing words, adding numbers) with the phi3-style template.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import assets
from ..data import finetune_fixtures as fx
from ..model.config import GPTConfig
from ..model.gpt import GPT

PLAYS = ("julius_caesar", "merry_wives_of_windsor")


def pretrain(tok, text: str, cfg: GPTConfig, steps: int, rows: int, seed: int = 0, lr: float = 3e-3) -> GPT:
    """A few AdamW steps of language modelling on random windows of ``text`` (half the context long)."""
    torch.manual_seed(seed)
    ids = torch.tensor(tok.encode(text))
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    T = cfg.block_size // 2
    for _ in range(steps):
        ix = torch.randint(0, len(ids) - T - 1, (rows,))
        x = torch.stack([ids[i:i + T] for i in ix])
        y = torch.stack([ids[i + 1:i + T + 1] for i in ix])
        loss = model(x, y)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def save_with_tokenizer(model: GPT, tok, path: Path) -> Path:
    """A checkpoint folder whose config.json names its tokenizer (what --checkpoint reads)."""
    from ..model.weights import save_checkpoint

    return save_checkpoint(model, path, {"tokenizer": tok.to_dict()})


def bpe_base(text: str, path: Path) -> Path:
    from ..data.tokenizer import GPT2Tokenizer

    tok = GPT2Tokenizer()
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32, backend="torch")
    return save_with_tokenizer(pretrain(tok, text, cfg, steps=30, rows=8), tok, path)


def char_base(text: str, entries: list[dict[str, str]], path: Path) -> Path:
    from ..data.instruct_data import format_instruction
    from ..data.tokenizer import CharTokenizer

    # The vocabulary covers the corpus, the template and the tasks' characters.
    tok = CharTokenizer.from_text(text + "".join(format_instruction(e, "phi3") + e["output"] for e in entries),
                                  eot=True)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=2, n_head=4, n_embd=64, backend="torch")
    return save_with_tokenizer(pretrain(tok, text, cfg, steps=100, rows=16), tok, path)


def run_finetune_demo(out: str | Path = "out/finetune-demo") -> dict[str, dict]:
    """Fixtures, pretraining and both fine-tuning runs under ``out``; returns each run's metrics."""
    out = Path(out)
    assets.fetch_gpt2_ranks(quiet=True)
    corpus = "".join(fx.play_text(p) for p in PLAYS)
    plays = out / "plays.tsv"
    from ..fsutil import atomic_write_text

    atomic_write_text(plays, "\n".join(fx.classification_rows(300, seed=0, plays=PLAYS)) + "\n")
    tasks = fx.write_instructions(out / "tasks.json", 300, seed=0)
    base = bpe_base(corpus, out / "base-bpe")
    runs = {
        "classify": ["finetune", "classify", "--data", plays, "--out", out / "classify", "--checkpoint", base,
                     "--epochs", 4, "--trainable", "all", "--max-length", 64, "--eval-interval", 40,
                     "--set", "train.lr=2e-3", "--set", "train.batch_size=16"],
        "instruct": ["finetune", "instruct", "--data", tasks, "--out", out / "instruct", "--checkpoint",
                     char_base(corpus[:200_000], fx.instruction_entries(50), out / "base-char"), "--mask-prompt",
                     "--epochs", 25, "--eval-interval", 100, "--set", "train.lr=3e-3", "--set",
                     "train.batch_size=16", "--set", "finetune.max_new_tokens=6", "--set",
                     'finetune.template="phi3"'],
    }
    results = {}
    for name, argv in runs.items():
        for sub in ("checkpoints", "model"):  # a demo run starts afresh each time
            _remove(out / name / sub)
        code = _finetune([str(a) for a in argv])
        if code != 0:
            raise RuntimeError(f"finetune demo: the {name} run failed (exit {code})")
        results[name] = json.loads((out / name / "metrics.json").read_text(encoding="utf-8"))
    return results


def _finetune(argv: list[str]) -> int:
    """``tritongpt finetune ...`` in this process, through the command's own parser."""
    import argparse

    from . import finetune

    parser = argparse.ArgumentParser(prog="tritongpt finetune")
    finetune.add_arguments(parser)
    return int(finetune.main(parser.parse_args(argv[1:])) or 0)


def _remove(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path)
