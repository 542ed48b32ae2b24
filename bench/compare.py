"""``tritongpt bench compare BASE.json NEW.json [--threshold 5%]``: regressions that are real.

Result files (``tritongpt-bench/1``) hold an ``environment`` (gpu, torch, triton, commit, ...) and
``benchmarks``: ``{"name": ..., "samples": [seconds, ...]}`` with every raw sample kept. Per benchmark
present in both: the ratio of medians (new / base) and a one-sided Mann-Whitney U test (scipy) of
"new is slower". A regression is significant (p < alpha, default 0.01) AND beyond the threshold; an
improvement likewise in the other direction. Exit 1 on any regression; a table is printed either way,
with a warning when the two files come from different GPUs or software versions. Exit 2 (nothing judged)
on a malformed file, threshold or alpha, or when no benchmark is in both files.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import SCHEMA  # noqa: F401  (re-exported: the schema name callers compare against)

_ENV_KEYS = ("gpu", "device", "torch", "triton", "cuda", "driver")


@dataclass
class Comparison:
    name: str
    base_median: float
    new_median: float
    ratio: float  # new / base: > 1 is slower
    p_slower: float
    p_faster: float
    verdict: str  # "regression", "improvement", "same"


def parse_threshold(text: str | float) -> float:
    """``5%`` or ``0.05`` -> 0.05. A bare number is a fraction in [0, 1): ``5`` would mean a 500% slowdown,
    which lets every real regression pass, so it is refused with a hint."""
    s = str(text).strip()
    percent = s.endswith("%")
    try:
        value = float(s[:-1]) / 100 if percent else float(s)
    except ValueError:
        raise ValueError(f"--threshold: expected a percentage like 5% or a fraction like 0.05, got {text!r}") from None
    if not percent and 1 <= value < 100:
        raise ValueError(f"--threshold: a bare number is a fraction in [0, 1) (0.05 = 5%), got {text!r}: "
                         f"did you mean {s}%?")
    if not 0 <= value < 1:  # also NaN
        raise ValueError(f"--threshold: expected 0% <= threshold < 100% (a fraction in [0, 1)), got {text!r}")
    return value


def check_alpha(alpha: float) -> float:
    """The U test's significance level: a probability strictly between 0 and 1 (0 or NaN never flags
    anything, 1 flags noise)."""
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"--alpha: expected a significance level in (0, 1) such as 0.01, got {alpha!r}")
    return float(alpha)


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a result file (``bench/results.py`` owns the schema checks)."""
    from .results import load_result

    return load_result(path)


def compare(base: dict[str, Any], new: dict[str, Any], threshold: float = 0.05, alpha: float = 0.01
            ) -> tuple[list[Comparison], list[str]]:
    """Per-benchmark comparisons and warnings (environment differences, missing benchmarks).

    Raises ``ValueError`` for a malformed result, threshold or alpha, and when no benchmark is in both
    results: a comparison of nothing must not read as "no regression"."""
    try:
        from scipy.stats import mannwhitneyu
    except ImportError as e:
        from tritongpt.engine.errors import missing_extra

        raise missing_extra(e, "bench", "bench compare (its Mann-Whitney U test)") from None

    from .results import validate_result

    validate_result(base, "base")
    validate_result(new, "new")
    check_alpha(alpha)
    threshold = parse_threshold(threshold)
    warnings = []
    be, ne = base.get("environment", {}), new.get("environment", {})
    for k in _ENV_KEYS:
        if be.get(k) != ne.get(k):
            warnings.append(f"environment differs: {k} {be.get(k)!r} vs {ne.get(k)!r}")
    for label, env in (("base", be), ("new", ne)):
        if env.get("throttled"):
            reasons = ", ".join(env.get("throttle_reasons") or []) or "see environment"
            warnings.append(f"the {label} run throttled ({reasons}): its times are not the GPU's best")
    b = {x["name"]: x for x in base.get("benchmarks", [])}
    n = {x["name"]: x for x in new.get("benchmarks", [])}
    for name in sorted(set(b) ^ set(n)):
        warnings.append(f"{name}: only in {'the base' if name in b else 'the new'} file")
    if not set(b) & set(n):
        raise ValueError(f"no benchmark is in both files (base: {_names(b)}; new: {_names(n)}): nothing to compare")
    out = []
    for name in [x for x in b if x in n]:
        bs, ns = _comparable_samples(b[name], n[name], warnings)
        bm, nm = statistics.median(bs), statistics.median(ns)
        ratio = nm / bm
        p_slower = float(mannwhitneyu(ns, bs, alternative="greater").pvalue)
        p_faster = float(mannwhitneyu(ns, bs, alternative="less").pvalue)
        if p_slower < alpha and ratio > 1 + threshold:
            verdict = "regression"
        elif p_faster < alpha and ratio < 1 - threshold:
            verdict = "improvement"
        else:
            verdict = "same"
        out.append(Comparison(name, bm, nm, ratio, p_slower, p_faster, verdict))
    return out, warnings


def _names(records: dict[str, Any]) -> str:
    if not records:
        return "no benchmarks"
    first = sorted(records)[:2]
    return f"{len(records)} benchmark(s) such as " + ", ".join(map(repr, first))


def _flushed(rec: dict[str, Any]) -> list[float] | None:
    return rec["samples"] if rec.get("timer") == "do_bench" else rec.get("do_bench_samples")


def _comparable_samples(b: dict[str, Any], n: dict[str, Any], warnings: list[str]) -> tuple[list, list]:
    """Like for like: ``bench kernels`` picks the CUDA-graph timer per run for kernels near 20 us, and a
    graph-timed record also keeps its do_bench samples, so two runs timed differently compare on those."""
    if b.get("timer") == n.get("timer"):
        return b["samples"], n["samples"]
    bd, nd = _flushed(b), _flushed(n)
    if bd and nd and len(bd) >= 2 and len(nd) >= 2:
        warnings.append(f"{b['name']}: timed with {b.get('timer')} vs {n.get('timer')}: compared on the do_bench "
                        "samples of both")
        return bd, nd
    warnings.append(f"{b['name']}: timed with {b.get('timer')} vs {n.get('timer')}: the times may not be comparable")
    return b["samples"], n["samples"]


def format_table(rows: list[Comparison]) -> str:
    lines = [f"{'benchmark':<48} {'base':>10} {'new':>10} {'new/base':>9} {'p(slower)':>10} {'verdict':>12}"]
    for r in rows:
        lines.append(f"{r.name:<48} {r.base_median * 1e3:>8.3f}ms {r.new_median * 1e3:>8.3f}ms {r.ratio:>9.3f} "
                     f"{r.p_slower:>10.2g} {r.verdict:>12}")
    return "\n".join(lines)


def main(base_path: str | Path, new_path: str | Path, threshold: str | float = "5%", alpha: float = 0.01) -> int:
    import sys

    try:
        t = parse_threshold(threshold)
        check_alpha(alpha)
        if Path(base_path).resolve() == Path(new_path).resolve():
            raise ValueError(f"BASE and NEW are the same file ({base_path}): a run compared with itself checks "
                             "nothing; pass the baseline run and the new run")
        rows, warnings = compare(load_results(base_path), load_results(new_path), t, alpha)
    except ValueError as e:
        from tritongpt.engine.errors import report_error

        return report_error(e)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(format_table(rows))
    bad = [r for r in rows if r.verdict == "regression"]
    print(f"{len(bad)} regression(s) beyond {t:.1%} at p < {alpha} across {len(rows)} benchmark(s)")
    return 1 if bad else 0
