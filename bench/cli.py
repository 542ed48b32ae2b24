"""``tritongpt bench ...``: the benchmark suites, one subcommand each, and ``all``: every GPU suite in one go."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _int_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not out or any(x < 1 for x in out):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One subcommand per suite, each with its own ``_add_<suite>(subparsers)``."""
    sub = p.add_subparsers(dest="suite", metavar="SUITE", required=True)
    for add in (_add_generate, _add_kernels, _add_compare, _add_report, _add_train, _add_serve, _add_all):
        add(sub)


def _add_generate(sub: Any) -> None:
    g = sub.add_parser("generate", help="TTFT, inter-token latency, tokens/s, bandwidth use vs the floor, "
                       "launches per step; Hugging Face side by side")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--preset", default="gpt2", help="model preset with random weights (default gpt2)")
    src.add_argument("--checkpoint", type=Path, help="tritongpt checkpoint folder")
    src.add_argument("--hf-dir", type=Path, help="Hugging Face GPT-2 folder")
    g.add_argument("--batch", type=_int_list, default=[1, 8, 32], help="comma-separated batch sizes (1,8,32)")
    g.add_argument("--prompt-len", type=int, default=32)
    g.add_argument("--new-tokens", type=int, default=64)
    g.add_argument("--repeats", type=int, default=3)
    g.add_argument("--device", default=None)
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="default: bfloat16 on CUDA, float32 on CPU")
    g.add_argument("--backend", choices=["auto", "torch", "triton"], default="auto")
    g.add_argument("--no-hf", action="store_true", help="skip the Hugging Face comparison")
    g.add_argument("--compile", action="store_true", help="also time the decode step under torch.compile")
    g.add_argument("--json", type=Path, default=None, help="write the report here")
    g.set_defaults(bench_func=_generate)


def _add_kernels(sub: Any) -> None:
    k = sub.add_parser("kernels", help="kernel sweeps vs PyTorch baselines on a GPU: latency, TFLOP/s, GB/s, "
                       "fraction of peak, speedups, accuracy; results JSON + CSV history + plots")
    k.add_argument("--kernels", default="attention,layer_norm,gelu_linear,linear,decode_attention,linear_cross_entropy",
                   help="comma-separated subset (default: all six)")
    k.add_argument("--quick", action="store_true", help="headline subset: bf16, two sizes per sweep (CI gates)")
    k.add_argument("--dtypes", default="bfloat16,float16", help="comma-separated: bfloat16, float16")
    k.add_argument("--timer", choices=["auto", "do_bench", "cuda_graph"], default="auto",
                   help="auto: do_bench with L2 flush, CUDA-graph timer for forward kernels under 20 us")
    k.add_argument("--rep-ms", type=float, default=100, help="timed milliseconds per measurement (do_bench rep)")
    k.add_argument("--out-dir", type=Path, default=Path("bench/results"), help="results folder (bench/results)")
    k.add_argument("--no-save", action="store_true", help="print only; write no result files")
    k.add_argument("--report", action="store_true", help="also write the markdown report with plots")
    k.add_argument("--list", action="store_true", help="list the sweeps with FLOPs, minimum bytes and roofline "
                   "floors on H100/A100; runs nothing, needs no GPU")
    k.set_defaults(bench_func=_kernels)


def _add_compare(sub: Any) -> None:
    c = sub.add_parser("compare", help="compare two result files: median ratio + Mann-Whitney U; exit 1 on a "
                       "significant regression beyond the threshold")
    c.add_argument("base", type=Path, help="baseline result JSON (tritongpt-bench/1)")
    c.add_argument("new", type=Path, help="new result JSON")
    c.add_argument("--threshold", default="5%", help="smallest slowdown that counts: 5%% or the fraction 0.05 "
                   "(a bare number is a fraction below 1)")
    c.add_argument("--alpha", type=float, default=0.01, help="significance level of the U test, in (0, 1)")
    c.set_defaults(bench_func=_compare)


def _add_report(sub: Any) -> None:
    r = sub.add_parser("report", help="markdown summary of result files: environment, per-sweep tables and plots, "
                       "the issue's goals")
    r.add_argument("files", nargs="*", type=Path,
                   help="result JSON files (default: the newest of each suite in --results-dir)")
    r.add_argument("--results-dir", type=Path, default=Path("bench/results"),
                   help="where suites save results (default bench/results)")
    r.add_argument("--out", type=Path, default=None,
                   help="markdown file to write (default RESULTS_DIR/REPORT.md); the plots go beside it")
    r.set_defaults(bench_func=_report)


def _add_train(sub: Any) -> None:
    t = sub.add_parser("train", help="training tokens/s, step breakdown, MFU and memory per backend (synthetic "
                       "batches)")
    t.add_argument("--preset", default=None, help="model preset (default: gpt2 on a GPU, cpu-demo on a CPU)")
    t.add_argument("--batch", type=int, default=None, help="rows per step (default 16 on a GPU, 4 on a CPU)")
    t.add_argument("--block-size", type=int, default=None, help="sequence length (default: the preset's)")
    t.add_argument("--steps", type=int, default=10)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--backends", default="triton,torch,torch+compile",
                   help="comma-separated: triton, torch, torch+compile, triton+compile")
    t.add_argument("--loss", choices=("fused", "plain", "both"), default="both",
                   help="the triton backend's LM head + loss: fused (linear_cross_entropy, what training runs), "
                   "plain (logits + F.cross_entropy, row triton/plain-loss) or both (default); the torch backends "
                   "always run the plain one")
    t.add_argument("--max-batch", action="store_true",
                   help="also find each row's largest batch that fits (doubling from --batch, then bisecting): on "
                   "a GPU without running out of memory (and within --memory-limit if given), on a CPU within "
                   "--memory-limit")
    t.add_argument("--memory-limit", default=None,
                   help="memory budget for --max-batch, e.g. 20GiB, 512MiB or bytes (required on a CPU)")
    t.add_argument("--batch-cap", type=int, default=1024, help="largest batch --max-batch tries (default 1024)")
    t.add_argument("--interpreter", action="store_true",
                   help="on a CPU, run the triton backend on the Triton interpreter instead of skipping it: its "
                   "times mean nothing, its memory figures are exact")
    t.add_argument("--json", type=Path, default=None, help="write the report here")
    t.set_defaults(bench_func=_train)


def _add_serve(sub: Any) -> None:
    v = sub.add_parser("serve", help="the OpenAI server under N concurrent streaming clients vs one request at a "
                       "time: tokens/s, TTFT and ITL p50/p99")
    from tritongpt.engine.generation.serving.cli import add_engine_arguments
    from tritongpt.engine.model.model_source import add_model_arguments

    add_model_arguments(v)
    add_engine_arguments(v)
    v.add_argument("--clients", type=int, default=16, help="concurrent streaming clients (default 16)")
    v.add_argument("--requests", type=int, default=None, help="requests in all (default: 2 per client)")
    v.add_argument("--prompt-len", type=int, default=32)
    v.add_argument("--max-tokens", type=int, default=64)
    v.add_argument("--json", type=Path, default=None, help="write the result file here")
    v.set_defaults(bench_func=_serve)


def _add_all(sub: Any) -> None:
    a = sub.add_parser(
        "all", help="on a GPU: the kernel sweeps, then bench train, then bench generate; every result file, "
        "the plots and one REPORT.md in --out",
        description="On a CUDA GPU, in sequence: `bench kernels` (every sweep and provider, accuracy checked), "
        "`bench train` (gpt2, batch 16, backends triton, torch, torch+compile) and `bench generate` (gpt2 bf16, "
        "batch 1,8,32, vs Hugging Face), each with its own defaults. Writes each suite's result JSON, one PNG "
        "per kernel sweep, rows in history.csv and REPORT.md (over this run's files only) into --out, and "
        "prints their paths. Exit 1 when a stage failed or our kernel failed an accuracy check. Without a "
        "GPU it exits 2 before running or writing anything; --dry-run lists the plan on any machine.")
    a.add_argument("--out", type=Path, default=Path("bench/results"),
                   help="results folder, created if missing (default bench/results)")
    a.add_argument("--quick", action="store_true", help="the kernels' headline subset (bf16, two sizes per sweep), "
                   "5 training steps with backends triton,torch, generation at batch 1,8 with 32 new tokens")
    a.add_argument("--dry-run", action="store_true",
                   help="print the stages, their settings and the files they would write; runs nothing")
    a.set_defaults(bench_func=_all)


def _device(text: str | None):
    """``--device``: cpu, cuda or cuda:N, and a CUDA device must exist (checked before any model loads)."""
    import torch

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {text!r}: expected cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {text}: no CUDA device is available here (use --device cpu)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _kernels(args: argparse.Namespace) -> int:
    from . import kernels as kb
    from .results import check_output_dir

    kernels = tuple(k.strip() for k in args.kernels.split(",") if k.strip())
    dtypes = tuple(d.strip() for d in args.dtypes.split(",") if d.strip())
    if not kernels:  # zero sweeps would run nothing and pass
        raise ValueError(f"--kernels: no kernel given (got {args.kernels!r}); expected some of attention, "
                         "layer_norm, gelu_linear, linear, decode_attention, linear_cross_entropy")
    if not dtypes or any(d not in ("bfloat16", "float16") for d in dtypes):
        raise ValueError(f"--dtypes: expected some of bfloat16,float16, got {args.dtypes!r}")
    if not 0 < args.rep_ms < float("inf"):  # also NaN
        raise ValueError(f"--rep-ms: expected a positive finite number of milliseconds, got {args.rep_ms}")
    if not args.no_save and not args.list:
        check_output_dir(args.out_dir, "--out-dir")
    return kb.main(kernels, quick=args.quick, dtypes=dtypes, timer=args.timer, rep_ms=args.rep_ms,
                   out_dir=None if args.no_save else args.out_dir, report=args.report, list_only=args.list)


def _all(args: argparse.Namespace) -> int:
    from .results import check_output_dir
    from .suite import main as suite_main

    check_output_dir(args.out, "--out")  # on any machine, before the GPU check: a typo is reported as such
    return suite_main(args.out, quick=args.quick, dry_run=args.dry_run)


def _generate(args: argparse.Namespace) -> int:
    import torch

    from tritongpt.engine.model import GPT

    from . import generate as gb
    from .results import check_output_file

    if args.prompt_len < 1 or args.new_tokens < 2 or args.repeats < 1:
        print("error: --prompt-len >= 1, --new-tokens >= 2 and --repeats >= 1 are required", file=sys.stderr)
        return 2
    if args.json:
        check_output_file(args.json, "--json")
    device = _device(args.device)
    folder = args.checkpoint or args.hf_dir
    model = GPT.from_pretrained(folder) if folder else GPT.from_preset(args.preset)
    if args.prompt_len + args.new_tokens > model.config.block_size:
        print(f"error: --prompt-len + --new-tokens exceeds the context window ({model.config.block_size})",
              file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = model.to(device=device, dtype=dtype).eval()
    model.backend = args.backend
    print(f"{model.num_parameters():,} params, {str(dtype)[6:]}, backend={model.backend}, prompt {args.prompt_len}, "
          f"{args.new_tokens} new tokens, greedy")
    report = gb.run(model, batches=args.batch, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                    repeats=args.repeats, hf=not args.no_hf, compile=args.compile)
    if args.json:
        print(f"wrote {gb.write_json(report, args.json)}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .compare import main as compare_main

    return compare_main(args.base, args.new, args.threshold, args.alpha)


def _report(args: argparse.Namespace) -> int:
    from .report import main as report_main

    return report_main(args.files, args.results_dir, args.out)


def _train(args: argparse.Namespace) -> int:
    from . import train as tb
    from .memory import parse_size
    from .results import check_output_file

    backends = _train_arguments(args)
    if args.json:
        check_output_file(args.json, "--json")
    limit = parse_size(args.memory_limit, "--memory-limit") if args.memory_limit is not None else None
    losses = tb.LOSSES if args.loss == "both" else (args.loss,)
    report = tb.run(args.preset, args.batch, args.block_size, args.steps, args.warmup, backends, losses=losses,
                    max_batch=args.max_batch, memory_limit=limit, batch_cap=args.batch_cap,
                    interpreter=args.interpreter)
    if args.json:
        from .generate import write_json

        print(f"wrote {write_json(report, args.json)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from tritongpt.engine.generation.serving.cli import build

    from . import serve as sb
    from .results import check_output_file

    requests = args.requests if args.requests is not None else 2 * args.clients
    for name, value, least in (("--clients", args.clients, 1), ("--requests", requests, 1),
                               ("--prompt-len", args.prompt_len, 1), ("--max-tokens", args.max_tokens, 2)):
        if value < least:
            raise ValueError(f"{name}: expected an integer >= {least}, got {value}")
    if args.json:
        check_output_file(args.json, "--json")
    try:
        served = build(args)
    except ImportError as e:
        from tritongpt.engine.errors import missing_extra

        raise missing_extra(e, "serve", "bench serve") from None
    if args.prompt_len + args.max_tokens > served.model.config.block_size:
        raise ValueError(f"--prompt-len + --max-tokens: {args.prompt_len + args.max_tokens} exceeds the context "
                         f"window ({served.model.config.block_size})")
    report = sb.run(served, requests=requests, clients=args.clients, prompt_len=args.prompt_len,
                    max_tokens=args.max_tokens)
    if args.json:
        from .generate import write_json

        print(f"wrote {write_json(report, args.json)}")
    return 0


TRAIN_BACKENDS = ("triton", "torch", "torch+compile", "triton+compile")


def _train_arguments(args: argparse.Namespace) -> list[str]:
    """The checks of ``bench train`` that need no model: each raises ``ValueError`` naming the argument."""
    import torch

    from tritongpt.engine.model.config import GPTConfig

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in TRAIN_BACKENDS]
    if bad or not backends:
        raise ValueError(f"--backends: expected some of {', '.join(TRAIN_BACKENDS)}, got {args.backends!r}")
    cpu = not torch.cuda.is_available()
    if cpu and not args.interpreter and all(b.startswith("triton") for b in backends):
        raise ValueError(f"--backends {args.backends}: the triton backend runs only on a GPU, so nothing would be "
                         "measured here; add torch (or --interpreter for its memory figures)")
    for name, value, least in (("--steps", args.steps, 1), ("--warmup", args.warmup, 0),
                               ("--batch", args.batch, 1), ("--block-size", args.block_size, 1),
                               ("--batch-cap", args.batch_cap, args.batch or 1)):
        if value is not None and value < least:
            raise ValueError(f"{name}: expected an integer >= {least}, got {value}")
    if args.memory_limit is not None:
        from .memory import parse_size

        parse_size(args.memory_limit, "--memory-limit")
    if args.max_batch and cpu and args.memory_limit is None:
        raise ValueError("--max-batch: on a CPU it needs --memory-limit SIZE (nothing runs out of memory there "
                         "before the machine does)")
    if args.preset is not None:
        try:  # an unknown name fails here, not after the first backend ran
            GPTConfig.from_preset(args.preset)
        except ValueError as e:
            raise ValueError(f"--preset: {e}") from None
    return backends


def main(args: argparse.Namespace) -> int:
    return int(args.bench_func(args) or 0)
