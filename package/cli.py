"""The ``tritongpt`` command line: the one module above both layers, dispatching to the engine's commands
(``tritongpt.engine``) and the benchmarks' (``tritongpt.bench``). Nothing below imports it."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path


def _cmd_info(args: argparse.Namespace) -> int:
    from tritongpt.engine.envinfo import environment, format_environment

    env = environment()
    print(json.dumps(env, indent=2) if args.json else format_environment(env))
    return 0


def _cmd_assets(args: argparse.Namespace) -> int:
    from tritongpt.engine import assets

    want_all = not (args.gpt2 or args.shakespeare)
    try:
        if args.gpt2 or want_all:
            print(assets.fetch_gpt2_ranks(quiet=True))
        if args.shakespeare or want_all:
            print(assets.fetch_shakespeare(quiet=True))
    except assets.AssetError as e:
        from tritongpt.engine.errors import report_error

        return report_error(e, 1)
    return 0


DEMO_OUT = "out/demo"


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.finetune:
        from tritongpt.engine.train.finetune_demo import run_finetune_demo

        run_finetune_demo(args.out if args.out != DEMO_OUT else "out/finetune-demo")
        return 0
    from tritongpt.engine.train.demo import run_demo

    run_demo(out=args.out, data=args.data, config=args.config, iters=args.iters)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from tritongpt.engine.train.command import main as train_main

    return train_main(args)


def _cmd_presets(args: argparse.Namespace) -> int:
    from tritongpt.engine.model.config import GPTConfig, preset_names
    from tritongpt.engine.train.demo import count_preset

    for name in preset_names():
        cfg = GPTConfig.from_preset(name)
        print(f"{name:<12} {count_preset(name):>14,} params  layers={cfg.n_layer} heads={cfg.n_head} "
              f"width={cfg.n_embd} context={cfg.block_size} vocab={cfg.vocab_size}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from tritongpt.bench.inspect_cli import main as gate_main

    return gate_main(args)


# Subcommands whose module provides ``add_arguments(parser)`` and ``main(args) -> exit code``.
MODULE_COMMANDS = (
    ("prepare", "tokenize a corpus (shakespeare, text, .jsonl, .jsonl.zst) into shards",
     "tritongpt.engine.data.prepare"),
    ("finetune", "fine-tune a pretrained GPT: classify (a classification head) or instruct (Alpaca-style "
     "instructions), with metrics, plots and the fine-tuned model", "tritongpt.engine.train.finetune"),
    ("classify", "label texts with a classifier from `tritongpt finetune classify`",
     "tritongpt.engine.generation.classify_cli"),
    ("generate", "generate text with the KV cache (streaming, sampling, stop strings)",
     "tritongpt.engine.generation.generate_cli"),
    ("serve", "an OpenAI-compatible HTTP server: continuous batching over a paged KV cache, streaming, metrics",
     "tritongpt.engine.generation.serving.cli"),
    ("bench", "benchmark suites: kernels, train, generate, all (GPU), report, compare", "tritongpt.bench.cli"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tritongpt", description="Triton kernels under a minimal GPT-2 engine.",
                                epilog="Errors print one line; --debug (anywhere) or TRITONGPT_DEBUG=1 shows "
                                "the traceback.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("info", help="versions and device (GPU name, memory, capability, clocks)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_cmd_info)

    s = sub.add_parser("assets", help="fetch and verify the GPT-2 BPE ranks and the Shakespeare corpus")
    s.add_argument("--gpt2", action="store_true", help="only the GPT-2 BPE ranks")
    s.add_argument("--shakespeare", action="store_true", help="only the Shakespeare corpus")
    s.set_defaults(func=_cmd_assets)

    s = sub.add_parser("presets", help="list model presets with their parameter counts")
    s.set_defaults(func=_cmd_presets)

    s = sub.add_parser("inspect", help="compile every kernel for sm_80/sm_89/sm_90a without a GPU: registers, "
                       "spills, shared memory, occupancy, tensor cores; counted traffic; the CI speed gate")
    from tritongpt.bench.inspect_cli import add_arguments

    add_arguments(s)
    s.set_defaults(func=_cmd_inspect)

    s = sub.add_parser("train", help="train a GPT from a run config (DDP under torchrun), with exact resume")
    s.add_argument("--config", required=True, type=Path, help="run config TOML ([model], [data], [train])")
    s.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, metrics.jsonl, loss.png")
    s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=3e-4 (repeatable)")
    s.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    s.add_argument("--quiet", action="store_true", help="no progress bar or samples")
    s.set_defaults(func=_cmd_train)

    for name, help_text, module in MODULE_COMMANDS:
        mod = importlib.import_module(module)
        s = sub.add_parser(name, help=help_text)
        mod.add_arguments(s)
        s.set_defaults(func=mod.main)

    s = sub.add_parser("demo", help="the main job `make demo` runs: prepare Shakespeare, train, sample")
    s.add_argument("--out", default=DEMO_OUT, help="run folder (replaced on each demo run; the fine-tuning demo's "
                   "default is out/finetune-demo)")
    s.add_argument("--data", default="out/data/shakespeare-char", help="prepared data folder (reused)")
    s.add_argument("--config", default=None, help="run config name (default: shakespeare-char[-gpu])")
    s.add_argument("--iters", type=int, default=None, help="override train.max_iters")
    s.add_argument("--finetune", action="store_true", help="the fine-tuning demo instead: fixtures, two tiny "
                   "pretrained models, `finetune classify` and `finetune instruct` (about a minute on a CPU)")
    s.set_defaults(func=_cmd_demo)
    return p


def _use_interpreter_without_gpu() -> None:
    """No CUDA device: run the Triton kernels on the CPU interpreter (set before kernels import)."""
    import os

    import torch

    if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
        os.environ["TRITON_INTERPRET"] = "1"
    from tritongpt.kernels.interpreter import interpreter_enabled, patch_interpreter

    if interpreter_enabled():
        patch_interpreter()


def main(argv: list[str] | None = None) -> int:
    """Run one command. Errors become one ``error: ...`` line on stderr and exit code 2 (1 for an
    unexpected failure); ``--debug`` or ``TRITONGPT_DEBUG=1`` re-raises to show the traceback."""
    from tritongpt.engine.errors import DEBUG_ENV

    argv = sys.argv[1:] if argv is None else list(argv)
    if "--debug" not in argv:
        return _run_reporting_errors(argv)
    before = os.environ.get(DEBUG_ENV)
    os.environ[DEBUG_ENV] = "1"  # handlers that catch errors themselves read the variable
    try:
        return _run_reporting_errors([a for a in argv if a != "--debug"])
    finally:
        if before is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = before


def _run_reporting_errors(argv: list[str]) -> int:
    from tritongpt.engine.errors import debug_enabled, describe_error

    try:
        return _run(argv)
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug_enabled():
            raise
        # The project's own errors and the argument/file errors carry a message written for the user; any
        # other exception (a KeyError, TypeError, ... from a bug) gets the pointer to its traceback.
        expected = isinstance(e, (ValueError, OSError)) or type(e).__module__.startswith("tritongpt.")
        hint = "" if expected else " (TRITONGPT_DEBUG=1 shows the traceback)"
        print(f"error: {describe_error(e)}{hint}", file=sys.stderr)
        return 2 if expected else 1


def _run(argv: list[str]) -> int:
    # Triton 3.9 warns when this is unset; 1 keeps the behaviour every earlier Triton had.
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    if argv[:1] == ["inspect"] and "--traffic" in argv:
        # Traffic is counted on the interpreter even where a GPU exists (set before kernels import).
        os.environ["TRITON_INTERPRET"] = "1"
    _use_interpreter_without_gpu()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
