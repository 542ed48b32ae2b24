"""``tritongpt finetune classify|instruct``: fine-tune a pretrained GPT through the shared training loop
(``train_steps``), then evaluate it and write ``OUT/model`` (the fine-tuned checkpoint with its
tokenizer), ``OUT/metrics.json`` and a plot; instruct also writes ``OUT/responses.json``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from .finetune_config import FinetuneConfig, as_dict, load_finetune_config, train_config


def add_arguments(s: argparse.ArgumentParser) -> None:
    from ..model.model_source import add_model_arguments

    s.add_argument("task", choices=("classify", "instruct"), help="classification head, or instruction following")
    s.add_argument("--data", type=Path, required=True, help="classify: CSV/TSV (or SMS Spam label<TAB>text); "
                   "instruct: JSON list or JSON Lines of {instruction, input, output}")
    s.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, metrics, model/")
    add_model_arguments(s)
    s.add_argument("--config", type=Path, default=None, help="TOML with [finetune] and [train] tables")
    s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key, e.g. finetune.balance=true or train.lr=1e-4 (repeatable)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    s.add_argument("--epochs", type=int, default=None)
    s.add_argument("--trainable", default=None, help="all | head | last:N (default: classify last:1, instruct all)")
    s.add_argument("--max-length", type=int, default=None, help="tokens per example (default: the context window)")
    s.add_argument("--eval-interval", type=int, default=None, help="steps between evaluations")
    s.add_argument("--lora-rank", type=int, default=None, help="train rank-R LoRA updates; the base weights freeze")
    s.add_argument("--mask-prompt", action="store_true", default=None, help="instruct: no loss on prompt tokens")
    s.add_argument("--judge-url", default=None, help="instruct: OpenAI-compatible endpoint for an LLM judge")
    s.add_argument("--judge-model", default=None, help="instruct: the judge's model name")
    s.add_argument("--quiet", action="store_true")


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {"epochs": args.epochs, "trainable": args.trainable, "max_length": args.max_length,
            "eval_interval": args.eval_interval, "lora_rank": args.lora_rank, "mask_prompt": args.mask_prompt,
            "judge_url": args.judge_url, "judge_model": args.judge_model}


def _check_data(path: Path, flag: str = "--data") -> None:
    if not path.exists():
        raise FileNotFoundError(2, f"{flag}: no such file", str(path))
    if path.is_dir():
        raise IsADirectoryError(21, f"{flag}: is a folder, expected a data file", str(path))


def _max_length(cfg: FinetuneConfig, block_size: int) -> int:
    if cfg.max_length is not None and cfg.max_length > block_size:
        raise ValueError(f"--max-length: {cfg.max_length} is above the model's context window ({block_size})")
    return cfg.max_length or block_size


def _base_model(args, task: str):
    from ..model.model_source import load_model

    model, tok, _ = load_model(args)
    if tok.eot_token is None:
        raise ValueError(f"finetune {task}: the {tok.name} tokenizer has no end-of-text token to pad (and, for "
                         "instruct, to stop) with; start from a model with the GPT-2 tokenizer")
    return model, tok


def _trainable(model, cfg: FinetuneConfig, task: str, head=None) -> int:
    from ..model.classifier import set_trainable
    from ..model.lora import add_lora

    n = set_trainable(model, cfg.trainable_for(task))
    if cfg.lora_rank is not None:
        add_lora(model, cfg.lora_rank, cfg.lora_alpha)
        for p in (head.parameters() if head is not None else ()):  # a new task head always trains
            p.requires_grad_(True)
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return n


def write_json(path: Path, data: Any) -> Path:
    from ..fsutil import atomic_write_text

    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False))


def _finish(model, out: Path, save) -> None:
    from ..model.lora import merge_lora

    merge_lora(model)  # OUT/model holds plain weights: loadable without LoRA
    save(out / "model")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from .train_setup import make_optimizer
    from .train_steps import close_session, open_session, run_steps

    _check_data(args.data)
    cfg, keys = load_finetune_config(args.config, args.set, _flags(args))
    for flag, f in (("finetune.val_data", cfg.val_data), ("finetune.test_data", cfg.test_data)):
        if f is not None:
            _check_data(Path(f), flag)
    t0 = train_config(keys, 1)  # every [train] key checked before any work; the length comes from the data
    s = open_session(t0, args.out, args.quiet)
    base, tok = _base_model(args, args.task)
    max_length = _max_length(cfg, base.config.block_size)
    if args.task == "classify":
        job = _classify_job(s, cfg, keys, t0, args.data, base, tok, max_length)
    else:
        job = _instruct_job(s, cfg, keys, t0, args.data, base, tok, max_length)
    model, task, t, meta, finish = job
    s.log(f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable parameters "
          f"({cfg.trainable_for(args.task)}{f', LoRA rank {cfg.lora_rank}' if cfg.lora_rank else ''}); "
          f"{t.max_iters} steps = {cfg.epochs} epochs")
    optimizer = make_optimizer(model, t, s.device)
    result = run_steps(s, task, model, optimizer, t, meta, resume=args.resume)
    if result.get("stopped_by") is None and s.rank == 0:
        result.update(finish())
    close_session(s)
    return result


def _steps(t0, s, count: int, epochs: int) -> int:
    from ..data.epoch_sampling import EpochOrder

    return EpochOrder(count, t0.seed, t0.batch_size, s.world, t0.grad_accum).steps_for(epochs)


def _classify_job(s, cfg, keys, t0, data, base, tok, max_length):
    from ..model.classifier import GPTClassifier, save_classifier
    from .finetune_classify import ClassifyTask, final_metrics, load_splits

    splits, labels, report = load_splits(cfg, data, tok, max_length)
    if report["truncated"]:
        s.warn(f"{report['truncated']} texts were cut to --max-length {max_length} tokens")
    model = GPTClassifier(base, labels)
    _trainable(model, cfg, "classify", head=model.score)
    model = model.to(s.device)
    t = train_config(keys, _steps(t0, s, len(splits["train"]), cfg.epochs))
    model.backend = t.backend
    meta = {"tokenizer": tok.to_dict(), **model.task_config(), "finetune": as_dict(cfg),
            "data_report": report, "train": dataclasses.asdict(t)}

    def finish() -> dict[str, Any]:
        _finish(model, s.out, lambda p: save_classifier(model, p, {"tokenizer": tok.to_dict()}))
        metrics = {**final_metrics(model, splits, labels, t.batch_size, s.device), "data": report}
        write_json(s.out / "metrics.json", metrics)
        s.log(f"accuracy: train {metrics['train_accuracy']:.3f}  val {metrics['val_accuracy']:.3f}  test "
              f"{metrics['test_accuracy']:.3f} (majority class {metrics['majority_class_test_accuracy']:.3f})")
        return {"metrics": metrics}

    return model, ClassifyTask(splits, t, cfg, s.device, s.world, s.rank), t, meta, finish


def _instruct_job(s, cfg, keys, t0, data, base, tok, max_length):
    from ..model.weights import save_checkpoint
    from .finetune_instruct import InstructTask, encode_splits, respond, score, split_entries

    parts = split_entries(cfg, data)
    enc, report = encode_splits(parts, tok, max_length, cfg.template)
    for name in ("train", "val"):
        if report[f"{name}_truncated"] or report[f"{name}_dropped"]:
            s.warn(f"{name}: {report[f'{name}_truncated']} examples cut to --max-length {max_length} tokens, "
                   f"{report[f'{name}_dropped']} of them dropped (no response token left)")
    model = base
    _trainable(model, cfg, "instruct")
    model = model.to(s.device)
    t = train_config(keys, _steps(t0, s, len(enc["train"]), cfg.epochs))
    model.backend = t.backend
    meta = {"tokenizer": tok.to_dict(), "finetune": as_dict(cfg), "data_report": report,
            "train": dataclasses.asdict(t)}

    def finish() -> dict[str, Any]:
        _finish(model, s.out, lambda p: save_checkpoint(model, p, {"tokenizer": tok.to_dict()}))
        test = parts["test"][: cfg.test_limit] if cfg.test_limit else parts["test"]
        responses = respond(model, tok, test, cfg, t.batch_size)
        metrics = {**score(responses, cfg), "data": report}
        write_json(s.out / "responses.json", responses)
        write_json(s.out / "metrics.json", metrics)
        judged = f"  judge {metrics['judge_mean_score']}" if "judge_mean_score" in metrics else ""
        s.log(f"test: exact match {metrics['test_exact_match']:.3f}  ROUGE-L F1 {metrics['test_rouge_l_f1']:.3f}"
              f"{judged} ({len(responses)} responses in {s.out / 'responses.json'})")
        return {"metrics": metrics}

    return model, InstructTask(enc, t, cfg, tok.eot_token, s.device, s.world, s.rank), t, meta, finish


def main(args: argparse.Namespace) -> int:
    result = run(args)
    if result.get("stopped_by"):
        print(f"stopped by {result['stopped_by']}: checkpoint saved at step {result['step']}; continue with "
              "--resume", file=sys.stderr)
    return 0
