"""``tritongpt inspect``: the compile-only and counted-traffic speed gate, as a command.

Exit status: 0 when every rule holds; 1 with one line per finding otherwise. When figures moved
against the baseline (either direction), the replacement baseline is written next to the JSON
output (or to ``--write-baseline``) and its path printed, so accepting an improvement is a copy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import inspect as ins


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--targets", default="sm_80,sm_89,sm_90a",
                   help="comma-separated targets (sm_80, sm_86, sm_89, sm_90a); default %(default)s")
    p.add_argument("--quick", action="store_true",
                   help="compile a representative subset (a few variants per kernel function), as CI runs; "
                        "with --check the rest must be covered by current baseline records")
    p.add_argument("--kernel", default=None, help="only variants whose name contains this text")
    p.add_argument("--json", dest="json_path", default=None, help="write all figures to this JSON file")
    p.add_argument("--check", nargs="?", const="", default=None, metavar="BASELINE",
                   help="gate against BASELINE (default: bench/baselines/triton-<version>.json)")
    p.add_argument("--write-baseline", nargs="?", const="", default=None, metavar="PATH",
                   help="write the figures as a baseline (default: the committed one for this Triton)")
    p.add_argument("--traffic", action="store_true",
                   help="also count the bytes each kernel moves (Triton interpreter) vs the minimum")
    p.add_argument("--jobs", type=int, default=None, help="parallel compile processes (default: cores)")
    p.add_argument("--no-cache", action="store_true", help="recompile even when cached")
    p.add_argument("--quiet", action="store_true", help="no table, findings only")


def _traffic_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'case':<52} {'moved':>10} {'minimum':>10} {'ratio':>6} {'GFLOP':>7} {'H100 us':>8} {'A100 us':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['case']:<52} {r['bytes_moved']:>10,} {r['min_bytes']:>10,} {r['ratio']:>6.3f} "
                     f"{r['flops'] / 1e9:>7.3f} {r['floor_us_h100']:>8.3f} {r['floor_us_a100']:>8.3f}")
    return "\n".join(lines)


def run_traffic() -> list[dict[str, Any]]:
    from tritongpt.kernels._interpreter import interpreter_enabled, patch_interpreter

    if not interpreter_enabled():
        raise SystemExit("--traffic needs the Triton interpreter: run with TRITON_INTERPRET=1")
    patch_interpreter()
    from .traffic_cases import cases, measure

    return [measure(c) for c in cases()]


def _load_baseline(arg: str) -> tuple[dict[str, Any] | None, Path]:
    path = Path(arg) if arg else ins.default_baseline_path()
    if not path.exists():
        return None, path
    return json.loads(path.read_text()), path


def main(args: argparse.Namespace) -> int:
    from tritongpt.engine.fsutil import atomic_write_text

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in ins.TARGETS:
            print(f"error: --targets: unknown target {t!r}; expected some of {sorted(ins.TARGETS)}", file=sys.stderr)
            return 2
    shipped = ins.all_variants()
    if args.kernel:
        shipped = [v for v in shipped if args.kernel in v.name]
    variants = ins.quick_subset(shipped) if args.quick else shipped
    t0 = time.time()
    records = ins.inspect(variants, targets, jobs=args.jobs, use_cache=not args.no_cache,
                          progress=not args.quiet and sys.stderr.isatty())
    compile_s = time.time() - t0
    traffic = run_traffic() if args.traffic else []
    if not args.quiet:
        print(ins.format_table(records))
        print(f"\n{len(records)} compiled kernels (Triton {ins.triton_version()}), {compile_s:.1f} s")
        if traffic:
            print("\nCounted memory traffic (Triton interpreter; floors = max(FLOPs/peak, min bytes/bandwidth))")
            print(_traffic_table(traffic))

    report = ins.make_baseline(records, traffic)
    report["targets"] = targets
    if args.json_path:
        atomic_write_text(args.json_path, json.dumps(report, indent=1, sort_keys=True))
    if args.write_baseline is not None:
        dest = Path(args.write_baseline) if args.write_baseline else ins.default_baseline_path()
        atomic_write_text(dest, json.dumps(ins.make_baseline(records, traffic), indent=1, sort_keys=True))
        print(f"baseline written: {dest}")

    if args.check is None:
        return 0
    findings = ins.check_absolute(records)
    findings += [ins.Finding(t["case"], "traffic", p) for t in traffic for p in t["problems"]]
    baseline, bpath = _load_baseline(args.check)
    relative: list[ins.Finding] = []
    if baseline is None:
        print(f"warning: no baseline at {bpath} (Triton {ins.triton_version()}): only the absolute rules "
              "(no spills, fits, tensor cores, traffic targets) were checked", file=sys.stderr)
    elif baseline.get("triton") != ins.triton_version():
        print(f"warning: baseline {bpath} is for Triton {baseline.get('triton')}, this is "
              f"{ins.triton_version()}: only the absolute rules were checked", file=sys.stderr)
    else:
        relative = ins.check_relative(records, baseline) + ins.check_traffic(traffic, baseline)
        if args.quick:  # the variants not compiled now must be covered by current baseline records
            relative += ins.baseline_coverage(shipped, baseline, targets)
        missing = [ins.record_key(r) for r in records if ins.record_key(r) not in baseline.get("records", {})]
        if missing:
            print(f"note: {len(missing)} compiled kernels have no baseline entry yet (new variants), e.g. "
                  f"{missing[0]}", file=sys.stderr)
    findings += relative
    for f in findings:
        print(f"FAIL {f}")
    if relative and baseline is not None:
        merged = dict(baseline)
        merged["records"] = {**baseline.get("records", {}), **{ins.record_key(r): r for r in records}}
        if traffic:
            merged["traffic"] = traffic
        out = Path(args.json_path).with_suffix(".baseline.json") if args.json_path else \
            Path(os.environ.get("TMPDIR", "/tmp")) / f"tritongpt-baseline-triton-{ins.triton_version()}.json"
        atomic_write_text(out, json.dumps(merged, indent=1, sort_keys=True))
        print(f"\nFigures moved against {bpath}. If the change is intended (improvements too), accept it:\n"
              f"  cp {out} {bpath}")
    if findings:
        print(f"\n{len(findings)} finding(s): the gate fails", file=sys.stderr)
        return 1
    print(f"gate passed: {len(records)} kernels" + (f", {len(traffic)} traffic cases" if traffic else "")
          + (f" against {bpath}" if baseline is not None and not relative else ""))
    return 0
