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

from . import static_check as ins


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--targets", default=",".join(ins.DEFAULT_TARGETS),
                   help="comma-separated targets (sm_80, sm_86, sm_89, sm_90a, sm_100a); default %(default)s")
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
    from tritongpt.kernels.interpreter import interpreter_enabled, patch_interpreter

    if not interpreter_enabled():
        raise SystemExit("--traffic needs the Triton interpreter: run with TRITON_INTERPRET=1")
    patch_interpreter()
    from .traffic_cases import cases, measure

    return [measure(c) for c in cases()]


def parse_targets(text: str) -> list[str]:
    """``--targets``: at least one known target, duplicates dropped."""
    targets = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not targets:
        raise ValueError(f"--targets: no target given (got {text!r}); expected some of {sorted(ins.TARGETS)}")
    for t in targets:
        if t not in ins.TARGETS:
            raise ValueError(f"--targets: unknown target {t!r}; expected some of {sorted(ins.TARGETS)}")
    return targets


def select_variants(kernel: str | None) -> list:
    """The shipped variants whose name contains ``kernel`` (all without it); none is an error, since a gate
    over zero kernels would pass while checking nothing."""
    shipped = ins.all_variants()
    if not kernel:
        return shipped
    chosen = [v for v in shipped if kernel in v.name]
    if not chosen:
        names = sorted({v.name.split("[")[0] for v in shipped})
        raise ValueError(f"--kernel {kernel!r} matches no kernel variant; variant names start with one of "
                         f"{', '.join(names)}")
    return chosen


def load_baseline(arg: str) -> tuple[dict[str, Any] | None, Path]:
    """``--check [PATH]``: the baseline and its path. Only the default path may be missing (a Triton version
    with no committed baseline yet); a named file that is missing or damaged is an error."""
    from .results import read_json_file

    path = Path(arg) if arg else ins.default_baseline_path()
    if not arg and not path.exists():
        return None, path
    if arg and not path.exists():
        raise ValueError(f"--check {path}: no such baseline file (leave the path out to use the committed "
                         f"{ins.default_baseline_path()})")
    try:
        return ins.validate_baseline(read_json_file(path, "baseline"), path), path
    except ValueError as e:
        raise ValueError(f"--check {e}") from None


def _check_outputs(args: argparse.Namespace, baseline: dict[str, Any] | None, bpath: Path | None) -> None:
    """Before compiling: every output path can be written, and none overwrites the baseline being checked."""
    from .results import check_output_file

    outs = {}
    if args.json_path:
        outs["--json"] = check_output_file(args.json_path, "--json")
    if args.write_baseline is not None:
        dest = Path(args.write_baseline) if args.write_baseline else ins.default_baseline_path()
        outs["--write-baseline"] = check_output_file(dest, "--write-baseline")
    for option, path in outs.items():
        if baseline is not None and path.resolve() == bpath.resolve():
            raise ValueError(f"{option} {path}: is also the --check baseline, which would be overwritten or "
                             "compared with itself; write to another path")


def main(args: argparse.Namespace) -> int:
    targets = parse_targets(args.targets)
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs: expected a number of processes >= 1, got {args.jobs}")
    shipped = select_variants(args.kernel)
    baseline, bpath = load_baseline(args.check) if args.check is not None else (None, None)
    _check_outputs(args, baseline, bpath)
    records, traffic = _measure(args, shipped, targets)
    _write_figures(args, records, traffic, targets)
    if args.check is None:
        return 0
    return _gate(args, records, traffic, (baseline, bpath), shipped, targets)


def _measure(args: argparse.Namespace, shipped: list, targets: list[str]
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    variants = ins.quick_subset(shipped) if args.quick else shipped
    t0 = time.time()
    records = ins.inspect(variants, targets, jobs=args.jobs, use_cache=not args.no_cache,
                          progress=not args.quiet and sys.stderr.isatty())
    compile_s = time.time() - t0
    if not records:
        raise ValueError(f"nothing to inspect: no variant{f' matching --kernel {args.kernel!r}' if args.kernel else ''}"
                         f" ships for --targets {','.join(targets)}")
    traffic = run_traffic() if args.traffic else []
    if not args.quiet:
        print(ins.format_table(records))
        print(f"\n{len(records)} compiled kernels (Triton {ins.triton_version()}), {compile_s:.1f} s")
        if traffic:
            print("\nCounted memory traffic (Triton interpreter; floors = max(FLOPs/peak, min bytes/bandwidth))")
            print(_traffic_table(traffic))
    return records, traffic


def _write_figures(args: argparse.Namespace, records: list[dict[str, Any]], traffic: list[dict[str, Any]],
                   targets: list[str]) -> None:
    from tritongpt.engine.fsutil import atomic_write_text

    report = ins.make_baseline(records, traffic)
    report["targets"] = targets
    if args.json_path:
        atomic_write_text(args.json_path, json.dumps(report, indent=1, sort_keys=True))
    if args.write_baseline is not None:
        dest = Path(args.write_baseline) if args.write_baseline else ins.default_baseline_path()
        scope = "quick" if args.quick else "all"
        atomic_write_text(dest, json.dumps(ins.make_baseline(records, traffic, scope), indent=1, sort_keys=True))
        print(f"baseline written: {dest}")


def _relative_findings(args: argparse.Namespace, records: list[dict[str, Any]], traffic: list[dict[str, Any]],
                       baseline: dict[str, Any], bpath: Path, shipped: list, targets: list[str]) -> list:
    relative = ins.check_relative(records, baseline) + ins.check_traffic(traffic, baseline)
    if args.quick and baseline.get("scope", "all") == "all":  # the rest must be covered by current records
        relative += ins.baseline_coverage(shipped, baseline, targets)
    elif args.quick:
        print(f"note: {bpath} holds the quick subset only: the variants not compiled now are not checked",
              file=sys.stderr)
    missing = [ins.record_key(r) for r in records if ins.record_key(r) not in baseline["records"]]
    if len(missing) == len(records):  # nothing was compared: a wrong file must not read as a pass
        relative.append(ins.Finding(str(bpath), "baseline", f"no record for any of the {len(records)} compiled "
                                    "kernels, so no figure was compared (wrong baseline file or --targets?)"))
    elif missing:
        print(f"note: {len(missing)} compiled kernels have no baseline entry yet (new variants), e.g. "
              f"{missing[0]}", file=sys.stderr)
    return relative


def _gate(args: argparse.Namespace, records: list[dict[str, Any]], traffic: list[dict[str, Any]],
          checked: tuple[dict[str, Any] | None, Path], shipped: list, targets: list[str]) -> int:
    baseline, bpath = checked
    findings = ins.check_absolute(records)
    findings += [ins.Finding(t["case"], "traffic", p) for t in traffic for p in t["problems"]]
    relative: list[ins.Finding] = []
    if baseline is None:
        print(f"warning: no baseline at {bpath} (Triton {ins.triton_version()}): only the absolute rules "
              "(no spills, fits, tensor cores, traffic targets) were checked", file=sys.stderr)
    elif baseline["triton"] != ins.triton_version():
        print(f"warning: baseline {bpath} is for Triton {baseline['triton']}, this is "
              f"{ins.triton_version()}: only the absolute rules were checked", file=sys.stderr)
    else:
        relative = _relative_findings(args, records, traffic, baseline, bpath, shipped, targets)
    findings += relative
    for f in findings:
        print(f"FAIL {f}")
    if relative:
        _write_replacement(args, records, traffic, baseline, bpath)
    if findings:
        print(f"\n{len(findings)} finding(s): the gate fails", file=sys.stderr)
        return 1
    print(f"gate passed: {len(records)} kernels" + (f", {len(traffic)} traffic cases" if traffic else "")
          + (f" against {bpath}" if baseline is not None and baseline["triton"] == ins.triton_version() else ""))
    return 0


def _write_replacement(args: argparse.Namespace, records: list[dict[str, Any]], traffic: list[dict[str, Any]],
                       baseline: dict[str, Any], bpath: Path) -> None:
    """The baseline with this run's figures merged in, so accepting an intended change is one copy."""
    from tritongpt.engine.fsutil import atomic_write_text

    merged = dict(baseline)
    merged["records"] = {**baseline["records"], **{ins.record_key(r): r for r in records}}
    if traffic:
        merged["traffic"] = traffic
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"tritongpt-baseline-triton-{ins.triton_version()}.json"
    out = Path(args.json_path).with_suffix(".baseline.json") if args.json_path else scratch
    if out.resolve() == bpath.resolve():  # never replace the baseline this run was judged against
        out = scratch
    atomic_write_text(out, json.dumps(merged, indent=1, sort_keys=True))
    print(f"\nFigures moved against {bpath}. If the change is intended (improvements too), accept it:\n"
          f"  cp {out} {bpath}")
