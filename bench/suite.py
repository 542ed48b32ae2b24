"""``tritongpt bench all``: the kernel, training and generation benchmarks on one GPU, one report.

In sequence, each stage as its own subcommand runs it, with that subcommand's defaults:

1. ``kernels``: every kernel sweep (``bench kernels``), all providers, accuracy checked in the same run;
2. ``train``: GPT-2 training tokens/s, step breakdown and MFU per backend (``bench train``);
3. ``generate``: GPT-2 (random weights, bf16) generation latency and bandwidth use, next to Hugging
   Face transformers when it is installed (``bench generate``).

Every result file goes into ``--out`` under the usual names (``<suite>-<gpu>-<UTC time>.json``, never
overwritten), with one PNG per kernel sweep, rows appended to ``history.csv`` and one ``REPORT.md``
over exactly this run's files (the goals, a table and plot per sweep, the train and generate records).
The environment each result records names the GPU. ``--quick`` runs the headline kernel subset and
shorter train / generate runs (minutes instead of the better part of an hour).

A stage that raises is reported and the next one still runs: a lent GPU's time is not spent twice
on what already worked. Exit 0 when every stage ran and our kernels passed their accuracy checks, else 1.
Without a GPU: exit 2 before anything runs or is written; ``--dry-run`` prints the plan anywhere.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

Log = Callable[[str], None]
REPORT_NAME = "REPORT.md"

NO_GPU = ("error: tritongpt bench all runs the kernel, training and generation benchmarks on a CUDA GPU, and this "
          "machine has none (torch.cuda.is_available() is False): nothing was run or written "
          "(--dry-run lists the plan; bench train and bench generate also run on a CPU alone)")

# The subcommands' defaults on a GPU; --quick: the kernels' headline subset, shorter train and generate runs.
# bench train's triton rows run the fused and the plain LM-head loss; the full run also finds each row's largest
# batch (the GPU's memory is the limit).
TRAIN = {False: {"preset": "gpt2", "batch": 16, "steps": 10, "warmup": 3,
                 "backends": ("triton", "torch", "torch+compile"), "max_batch": True},
         True: {"preset": "gpt2", "batch": 16, "steps": 5, "warmup": 2, "backends": ("triton", "torch"),
                "max_batch": False}}
GENERATE = {False: {"preset": "gpt2", "batches": (1, 8, 32), "prompt_len": 32, "new_tokens": 64, "repeats": 3},
            True: {"preset": "gpt2", "batches": (1, 8), "prompt_len": 32, "new_tokens": 32, "repeats": 2}}


@dataclass(frozen=True)
class Stage:
    name: str
    what: str  # one line: what it measures, with which settings
    argv: tuple[str, ...]  # the same run as its own subcommand
    files: tuple[str, ...]  # what it writes into --out (names with <placeholders>)
    run: Callable[[Path, Log], tuple[list[Path], bool]]  # -> (result files, passed)


def _stamp(suite: str, gpu: str) -> str:
    return f"{suite}-{gpu}-<UTC time>"


def kernels_stage(out: Path, quick: bool, gpu: str) -> Stage:
    from .kernel_cases import default_sweeps

    sweeps = default_sweeps(quick=quick)
    points = sum(len(s.points) for s in sweeps)
    runs = sum(len(s.points) * len(s.providers) for s in sweeps)
    stem = _stamp("kernels", gpu)

    def run(out_dir: Path, log: Log) -> tuple[list[Path], bool]:
        from tritongpt.engine.gpu_peaks import lookup

        from . import kernels as kb

        device = torch.device("cuda", torch.cuda.current_device())
        _, failures, paths = kb.run_suite(sweeps, device=device, timer=kb.gpu_timer(), out_dir=out_dir,
                                          peak=lookup(torch.cuda.get_device_name(device)), log=log)
        return [paths["json"]], not failures

    return Stage("kernels", f"{len(sweeps)} sweeps, {points} points, {runs} measurements "
                 "(`tritongpt bench kernels --list" + (" --quick" if quick else "") + "` lists them)",
                 ("bench", "kernels", "--out-dir", str(out), *(("--quick",) if quick else ())),
                 (f"{out / stem}.json", f"{out / stem}-<sweep>.png (one per sweep: {len(sweeps)})"), run)


def train_stage(out: Path, quick: bool, gpu: str) -> Stage:
    s = TRAIN[quick]
    stem = out / f"{_stamp('train', gpu)}.json"

    def run(out_dir: Path, log: Log) -> tuple[list[Path], bool]:
        from . import train as tb

        doc = tb.run(s["preset"], s["batch"], None, s["steps"], s["warmup"], list(s["backends"]), progress=log,
                     max_batch=s["max_batch"])
        return [_save(doc, out_dir, log)], True

    return Stage("train", f"preset {s['preset']}, batch {s['batch']}, {s['steps']} steps after {s['warmup']} "
                 f"warm-up, backends {', '.join(s['backends'])} (triton: fused and plain LM-head loss)"
                 + (", peak memory and the largest batch that fits per row" if s["max_batch"] else ", peak memory"),
                 ("bench", "train", "--preset", s["preset"], "--batch", str(s["batch"]), "--steps", str(s["steps"]),
                  "--warmup", str(s["warmup"]), "--backends", ",".join(s["backends"]),
                  *(("--max-batch",) if s["max_batch"] else ()), "--json", str(stem)),
                 (str(stem),), run)


def generate_stage(out: Path, quick: bool, gpu: str) -> Stage:
    s = GENERATE[quick]
    stem = out / f"{_stamp('generate', gpu)}.json"

    def run(out_dir: Path, log: Log) -> tuple[list[Path], bool]:
        from tritongpt.engine.model import GPT

        from . import generate as gb

        model = GPT.from_preset(s["preset"]).to(device="cuda", dtype=torch.bfloat16).eval()
        model.backend = "auto"
        doc = gb.run(model, batches=list(s["batches"]), prompt_len=s["prompt_len"], new_tokens=s["new_tokens"],
                     repeats=s["repeats"], progress=log)
        del model
        return [_save(doc, out_dir, log)], True

    return Stage("generate", f"preset {s['preset']} (random weights), bfloat16, backend auto, batch "
                 f"{','.join(map(str, s['batches']))}, prompt {s['prompt_len']}, {s['new_tokens']} new tokens, "
                 f"{s['repeats']} repeats, greedy; Hugging Face beside it when installed",
                 ("bench", "generate", "--preset", s["preset"], "--dtype", "bfloat16", "--backend", "auto",
                  "--batch", ",".join(map(str, s["batches"])), "--prompt-len", str(s["prompt_len"]),
                  "--new-tokens", str(s["new_tokens"]), "--repeats", str(s["repeats"]), "--json", str(stem)),
                 (str(stem),), run)


def plan(out: Path, quick: bool) -> list[Stage]:
    from .results import slug

    gpu = slug(torch.cuda.get_device_name()) if torch.cuda.is_available() else "<gpu>"
    return [kernels_stage(out, quick, gpu), train_stage(out, quick, gpu), generate_stage(out, quick, gpu)]


def _save(doc: dict[str, Any], out_dir: Path, log: Log) -> Path:
    from . import results

    paths = results.save(doc, out_dir)
    log(f"wrote {paths['json']}")
    return paths["json"]


def format_plan(stages: list[Stage], out: Path) -> str:
    lines = ["tritongpt bench all: dry run, nothing is run or written. On a CUDA GPU it runs, in order:"]
    for i, st in enumerate(stages, 1):
        lines += [f"{i}. {st.name}: {st.what}", f"   same as: tritongpt {' '.join(st.argv)}",
                  *(f"   writes: {f}" for f in st.files)]
    lines += [f"every stage appends its records to {out / 'history.csv'}",
              f"then: {out / REPORT_NAME} (the goals, a table and plot per kernel sweep, the train and generate "
              "records; only this run's files)"]
    return "\n".join(lines)


def write_report(files: list[Path], out: Path) -> Path:
    """REPORT.md over exactly ``files`` (the plots the kernels stage drew are linked, not redrawn)."""
    from tritongpt.engine.fsutil import atomic_write_text

    from .report import SUITE_ORDER, render_report
    from .results import load_result

    items = sorted(((p, load_result(p)) for p in files), key=lambda it: SUITE_ORDER.index(it[1]["suite"]))
    text = render_report([r for _, r in items], out, out, sources=[p for p, _ in items])
    return atomic_write_text(out / REPORT_NAME, text)


def run_stages(stages: list[Stage], out: Path, log: Log = print) -> tuple[list[Path], list[str]]:
    """Each stage in turn; returns (result files written, what failed). A stage that raises does not stop
    the next: its traceback goes to stderr, one line names it at the end."""
    from .kernel_paths import reset_linear_path
    from .kernels import skip_reason

    files: list[Path] = []
    failed: list[str] = []
    for i, st in enumerate(stages, 1):
        log(f"== {i}/{len(stages)} {st.name}: {st.what}")
        try:
            written, passed = st.run(out, log)
            files += written
            if not passed:
                failed.append(f"{st.name}: our kernel failed an accuracy check or raised (FAILED lines above)")
        except Exception as e:  # the remaining stages still run; the traceback is kept on stderr
            traceback.print_exc()
            failed.append(f"{st.name}: {skip_reason(e)}")
        finally:
            reset_linear_path()  # no forced kernel path outlives the kernel sweeps
            torch.cuda.empty_cache()
    return files, failed


def main(out: Path, *, quick: bool = False, dry_run: bool = False, log: Log = print) -> int:
    """``bench all``; ``out`` is already checked to be a writable folder (or one that can be made)."""
    stages = plan(out, quick)
    if dry_run:
        log(format_plan(stages, out))
        return 0
    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    log(f"device: {torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))}), "
        f"results into {out}")
    files, failed = run_stages(stages, out, log)
    if files:
        report = write_report(files, out)
        log("wrote:\n" + "\n".join(f"  {p}" for p in [*files, report]) +
            f"\n  (with the kernel sweeps' plots beside them and rows in {out / 'history.csv'})")
    for f in failed:
        print(f"FAILED stage {f}", file=sys.stderr)
    return 1 if failed else 0
