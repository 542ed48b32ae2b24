"""``tritongpt bench report [FILES...]``: a markdown summary of result files, with the plots.

With no files, the newest result of each suite in the results folder. Per file: the environment (clocks,
power and temperature before/after, a bold warning when the GPU throttled), per sweep a table of time,
throughput and fraction of peak per provider with Triton's speedups, accuracy failures and skipped
combinations, and the sweep's plot. A "Goals" section checks the issue's targets against the records that
exist and says "not measured" otherwise: nothing is estimated or carried over from elsewhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tritongpt.engine.gpu_peaks import lookup

from .results import (
    DEFAULT_DIR,
    METRICS,
    ResultError,
    check_output_file,
    default_prefix,
    load_result,
    parse_created,
    plot_path,
    plot_sweeps,
    provider_order,
    summary_stats,
    sweep_specs,
)

SUITE_ORDER = ("kernels", "generate", "train")
FA2_TFLOPS = 335.0  # FlashAttention-2's forward, bf16 D=128 causal long sequences on an H100 (the issue's figure)
LN_FRACTION = 0.80
GELU_LINEAR_SLACK = 0.10
LCE_MEMORY_FRACTION = 0.25  # linear_cross_entropy's peak memory against the plain head + loss
LCE_TIME_SLACK = 0.10


# ---------------------------------------------------------------------------------------------------------------
# formatting


def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.3f} ms"
    return f"{s:.3f} s"


def fmt_num(v: Any, spec: str = ".1f", unit: str = "") -> str:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return "—"
    return f"{v:{spec}}{unit}"


def esc(text: Any) -> str:
    """Safe in a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return out


def _rel(path: Path, rel_to: Path) -> str:
    return Path(os.path.relpath(path, rel_to)).as_posix()


# ---------------------------------------------------------------------------------------------------------------
# environment


def _snap(env: dict[str, Any], when: str) -> dict[str, Any]:
    return ((env.get("nvml") or {}).get(when)) or {}


def _before_after(env: dict[str, Any], fmt) -> str | None:
    b, a = fmt(_snap(env, "before")), fmt(_snap(env, "after"))
    if b is None and a is None:
        return None
    return f"{b or '?'} → {a or '?'}"


def _clock(key: str):
    def f(s: dict[str, Any]) -> str | None:
        cur, top = s.get(f"{key}_mhz"), s.get(f"{key}_max_mhz")
        if cur is None:
            return None
        return f"{cur:g} / {top:g} MHz" if top is not None else f"{cur:g} MHz"
    return f


def _power(s: dict[str, Any]) -> str | None:
    p, lim = s.get("power_w"), s.get("power_limit_w")
    if p is None:
        return None
    return f"{p:.0f} / {lim:.0f} W" if lim is not None else f"{p:.0f} W"


def _temp(s: dict[str, Any]) -> str | None:
    t = s.get("temperature_c")
    return None if t is None else f"{t:g} °C"


def _pstate(s: dict[str, Any]) -> str | None:
    p = s.get("pstate")
    return None if p is None else str(p)


def throttle_line(env: dict[str, Any]) -> str:
    t = env.get("throttled")
    if t is None:
        return "unknown (no NVML readings)"
    if not t:
        return "no"
    reasons = ", ".join(env.get("throttle_reasons") or []) or "unspecified"
    return f"**WARNING: the GPU throttled during this run ({reasons}); its timings are pessimistic.**"


def environment_lines(result: dict[str, Any]) -> list[str]:
    env = result.get("environment") or {}
    commit = env.get("commit") or "unknown"
    if env.get("dirty"):
        commit += " (uncommitted changes)"
    rows: list[tuple[str, Any]] = [
        ("GPU", env.get("gpu") or f"none ({env.get('device') or 'cpu'})"),
        ("driver", env.get("driver")), ("torch", env.get("torch")), ("triton", env.get("triton")),
        ("CUDA", env.get("cuda")), ("python", env.get("python")), ("commit", commit),
        ("SM clock (before → after)", _before_after(env, _clock("sm_clock"))),
        ("memory clock", _before_after(env, _clock("mem_clock"))),
        ("power", _before_after(env, _power)), ("temperature", _before_after(env, _temp)),
        ("pstate", _before_after(env, _pstate)), ("throttled", throttle_line(env)),
    ]
    lines = []
    if env.get("throttled"):
        lines += [throttle_line(env), ""]
    return lines + table(("", ""), [(k, v) for k, v in rows if v is not None])


# ---------------------------------------------------------------------------------------------------------------
# per suite


def _speedup(triton: dict[str, Any] | None, base: dict[str, Any] | None, name: str) -> float | None:
    if triton is None:
        return None
    s = (triton.get("speedup") or {}).get(name)
    if s is not None:
        return s
    if base is None:
        return None
    return summary_stats(base)[0] / summary_stats(triton)[0]


def sweep_lines(result: dict[str, Any], spec: dict[str, Any], plot: Path | None, rel_to: Path) -> list[str]:
    recs = [b for b in result.get("benchmarks", []) if b.get("sweep") == spec["sweep"]]
    title = spec.get("title") or spec["sweep"]
    metric = spec["metric"]
    lines = [f"### {title}", "", f"`{spec['sweep']}` · kernel `{spec.get('kernel') or '?'}` · "
             f"{METRICS[metric]}; cells are median time · {METRICS[metric]} · fraction of peak", ""]
    if plot is not None:
        lines += [f"![{title}]({_rel(plot, rel_to)})", ""]
    if not recs:
        return lines + ["No records.", ""]
    providers = provider_order(str(b.get("provider", "?")) for b in recs)
    by = {(str(b.get("provider", "?")), b.get("x")): b for b in recs}
    xs = sorted({b.get("x") for b in recs}, key=lambda x: (x is None, x if isinstance(x, (int, float)) else 0))
    baselines = [p for p in providers if p != "triton"] if "triton" in providers else []
    header = [spec.get("x_name") or "x", *providers, *(f"triton vs {p}" for p in baselines)]
    rows = []
    for x in xs:
        row: list[str] = [fmt_num(x, "g")]
        for p in providers:
            b = by.get((p, x))
            if b is None:
                row.append("—")
                continue
            frac = b.get("peak_fraction")
            row.append(f"{fmt_time(summary_stats(b)[0])} · {fmt_num(b.get(metric))} · "
                       f"{fmt_num(frac, '.0%') if frac is not None else '—'}")
        t = by.get(("triton", x))
        row += [fmt_num(_speedup(t, by.get((p, x)), p), ".2f", "x") for p in baselines]
        rows.append(row)
    return lines + table(header, rows) + [""]


def accuracy_lines(result: dict[str, Any]) -> list[str]:
    bad = [b for b in result.get("benchmarks", []) if b.get("accurate") is False]
    if not bad:
        return []
    # The kernels suite compares max_err (max|out - ref| / max|ref|) with the tolerance; max_abs_err is context.
    rows = [(b["name"], fmt_num(b.get("max_err"), ".3g"), fmt_num(b.get("max_abs_err"), ".3g"),
             fmt_num(b.get("tolerance"), ".3g")) for b in bad]
    header = ("benchmark", "error (relative to max abs ref)", "max abs error", "tolerance")
    return ["### Accuracy failures", ""] + table(header, rows) + [""]


def skipped_lines(result: dict[str, Any]) -> list[str]:
    skipped = result.get("skipped") or []
    if not skipped:
        return []
    return ["### Skipped", ""] + [f"- `{s['name']}`: {s.get('reason') or 'no reason given'}" for s in skipped] + [""]


def records_lines(records: list[dict[str, Any]]) -> list[str]:
    """generate/train suites, and kernels records outside any sweep: the timing summary per record."""
    rows = []
    for b in records:
        med, q20, q80 = summary_stats(b)
        rows.append((b["name"], fmt_time(med), f"{fmt_time(q20)} / {fmt_time(q80)}", len(b["samples"])))
    return table(("benchmark", "median", "q20 / q80", "n"), rows) + [""]


# ---------------------------------------------------------------------------------------------------------------
# goals


def _param(b: dict[str, Any], key: str) -> Any:
    """A shape parameter: from ``params``, or the size axis when that is the parameter."""
    p = b.get("params") or {}
    if key in p:
        return p[key]
    return b.get("x") if b.get("x_name") == key else None


def _is_bf16(b: dict[str, Any]) -> bool:
    return str(_param(b, "dtype") or "").removeprefix("torch.") in ("bf16", "bfloat16")


def _is_causal(b: dict[str, Any]) -> bool:
    c = (b.get("params") or {}).get("causal")
    if c is not None:
        return c is True
    return "causal" in str(b.get("sweep") or "").split("-")  # sweep ids spell it, e.g. attention-fwd-causal-...


def _gpu(result: dict[str, Any]) -> str | None:
    return (result.get("environment") or {}).get("gpu")


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def goal_attention(result: dict[str, Any]) -> tuple[str, str] | None:
    recs = [b for b in result.get("benchmarks", []) if b.get("kernel") == "attention" and b.get("provider") == "triton"
            and b.get("direction") == "fwd" and _is_bf16(b) and _param(b, "D") == 128 and _is_causal(b)
            and _num(_param(b, "T")) and _param(b, "T") >= 4096 and _num(b.get("tflops"))]
    if not recs:
        return None
    worst = min(recs, key=lambda b: b["tflops"])
    ts = sorted({_param(b, "T") for b in recs})
    measured = (f"min {worst['tflops']:.0f} TFLOP/s at T={_param(worst, 'T')} over T={', '.join(map(str, ts))} "
                f"({len(recs)} records)")
    if "H100" not in (_gpu(result) or ""):
        return measured, "not measured on an H100 (the target is H100-specific)"
    return measured, "met" if worst["tflops"] > FA2_TFLOPS else "**NOT met**"


def goal_layer_norm(result: dict[str, Any]) -> tuple[str, str] | None:
    recs = [b for b in result.get("benchmarks", []) if b.get("kernel") == "layer_norm" and b.get("provider") == "triton"
            and b.get("direction") == "fwd" and _num(_param(b, "N")) and _param(b, "N") >= 1024
            and _num(b.get("gbs"))]
    if not recs:
        return None
    peak = lookup(_gpu(result))
    worst = min(recs, key=lambda b: b["gbs"])
    if peak is None:
        return (f"min {worst['gbs']:.0f} GB/s at N={_param(worst, 'N')}",
                "not measured (no peak bandwidth known for this device)")
    frac = worst["gbs"] / peak.bandwidth_gbs
    return (f"min {worst['gbs']:.0f} GB/s = {frac:.0%} of {peak.bandwidth_gbs:g} GB/s at N={_param(worst, 'N')} "
            f"({len(recs)} records, N >= 1024)", "met" if frac >= LN_FRACTION else "**NOT met**")


def goal_gelu_linear(result: dict[str, Any]) -> tuple[str, str] | None:
    recs = [b for b in result.get("benchmarks", []) if b.get("kernel") == "gelu_linear"
            and b.get("direction", "fwd") == "fwd"]
    by = {(b.get("sweep"), b.get("x"), b.get("provider")): summary_stats(b)[0] for b in recs}
    vs_linear, vs_separate = [], []
    for (sweep, x, p), t in by.items():
        if p != "triton":
            continue
        if (sweep, x, "cublas") in by:
            vs_linear.append((t / by[(sweep, x, "cublas")], sweep, x))
        if (sweep, x, "cublas+gelu") in by:
            vs_separate.append((t / by[(sweep, x, "cublas+gelu")], sweep, x))
    if not vs_linear and not vs_separate:
        return None
    parts, verdicts = [], []
    if vs_linear:
        r = max(vs_linear)
        parts.append(f"worst triton / cuBLAS linear = {r[0]:.2f}x ({r[1]}, x={r[2]})")
        verdicts.append(r[0] <= 1 + GELU_LINEAR_SLACK)
    else:
        parts.append("no cuBLAS linear-alone baseline")
    if vs_separate:
        r = max(vs_separate)
        parts.append(f"worst triton / (cuBLAS + GELU) = {r[0]:.2f}x ({r[1]}, x={r[2]})")
        verdicts.append(r[0] < 1)
    else:
        parts.append("no linear + separate GELU baseline")
    if not all(verdicts):
        status = "**NOT met**"
    elif len(verdicts) < 2:
        status = "partly measured (one baseline missing)"
    else:
        status = "met"
    return "; ".join(parts), status


def _lce_pair(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None] | None:
    """linear_cross_entropy fwd+bwd at N=16384, C=768, bf16: (ours, F.linear + F.cross_entropy eager, compiled)."""
    by = {b.get("provider"): b for b in result.get("benchmarks", [])
          if b.get("kernel") == "linear_cross_entropy" and b.get("direction") == "fwd+bwd" and _is_bf16(b)
          and _param(b, "N") == 16384 and _param(b, "C") == 768}
    if "triton" not in by or "torch" not in by:
        return None
    return by["triton"], by["torch"], by.get("torch.compile")


def goal_lce_memory(result: dict[str, Any]) -> tuple[str, str] | None:
    pair = _lce_pair(result)
    if pair is None:
        return None
    ours, plain, _ = pair
    a, b = ours.get("peak_memory_bytes"), plain.get("peak_memory_bytes")
    if not (_num(a) and _num(b) and b > 0):
        return "no peak memory in the records", "not measured"
    frac = a / b
    return (f"{a / 2**20:,.0f} MiB vs {b / 2**20:,.0f} MiB = {frac:.2f}x (N=16384, C=768, V=50304, bf16, fwd+bwd)",
            "met" if frac <= LCE_MEMORY_FRACTION else "**NOT met**")


def goal_lce_time(result: dict[str, Any]) -> tuple[str, str] | None:
    pair = _lce_pair(result)
    if pair is None:
        return None
    ours, plain, compiled = pair
    ratio = summary_stats(ours)[0] / summary_stats(plain)[0]
    measured = f"triton / eager = {ratio:.2f}x"
    if compiled is not None:
        measured += f", triton / torch.compile = {summary_stats(ours)[0] / summary_stats(compiled)[0]:.2f}x"
    measured += " (N=16384, C=768, fwd+bwd)"
    if "H100" not in (_gpu(result) or ""):
        return measured, "not measured on an H100 (the target is H100-specific)"
    return measured, "met" if ratio <= 1 + LCE_TIME_SLACK else "**NOT met**"


GOALS = (
    ("Attention fwd bf16 D=128 causal T>=4k on an H100", f"> {FA2_TFLOPS:g} TFLOP/s (FlashAttention-2)",
     goal_attention),
    ("LayerNorm fwd, hidden >= 1024", f">= {LN_FRACTION:.0%} of HBM bandwidth", goal_layer_norm),
    ("gelu_linear fwd", f"<= {1 + GELU_LINEAR_SLACK:.2f}x cuBLAS linear alone, faster than linear + GELU",
     goal_gelu_linear),
    ("LM head + loss peak memory (linear_cross_entropy)", f"<= {LCE_MEMORY_FRACTION:.2f}x F.linear + F.cross_entropy",
     goal_lce_memory),
    ("LM head + loss time on an H100 (linear_cross_entropy)",
     f"<= {1 + LCE_TIME_SLACK:.2f}x F.linear + F.cross_entropy", goal_lce_time),
)


def goals_lines(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for goal, target, check in GOALS:
        hits = [(r, out) for r in results if (out := check(r)) is not None]
        if not hits:
            rows.append((goal, target, "—", "—", "not measured"))
        for r, (measured, status) in hits:
            rows.append((goal, target, _gpu(r) or "CPU", measured, status))
    return ["## Goals", ""] + table(("goal", "target", "device", "measured", "status"), rows) + [""]


# ---------------------------------------------------------------------------------------------------------------


def _prefix(result: dict[str, Any], source: Path | None) -> str:
    return source.stem if source is not None else default_prefix(result)


def render_report(results: list[dict[str, Any]], plot_dir: str | Path, rel_to: str | Path,
                  sources: Sequence[Path | None] | None = None) -> str:
    """The markdown report. Plots are linked when ``plot_dir`` holds them (see :func:`plot_sweeps`), with paths
    relative to ``rel_to`` (the report's folder). ``sources``: the files the results came from, if any."""
    plot_dir, rel_to = Path(plot_dir), Path(rel_to)
    srcs = list(sources) if sources is not None else [None] * len(results)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# tritongpt benchmark report", "", f"Generated {now} from {len(results)} result file(s).", ""]
    lines += goals_lines(results)
    for result, src in zip(results, srcs, strict=True):
        env = result.get("environment") or {}
        suite = result.get("suite") or "?"
        lines += [f"## {suite} — {env.get('gpu') or 'CPU'} — {result.get('created') or 'unknown time'}", ""]
        if src is not None:
            lines += [f"Source: `{_rel(src, rel_to)}`", ""]
        lines += environment_lines(result) + [""]
        specs = sweep_specs(result)
        prefix = _prefix(result, src)
        for spec in specs:
            plot = plot_path(plot_dir, prefix, spec["sweep"])
            lines += sweep_lines(result, spec, plot if plot.is_file() else None, rel_to)
        in_sweeps = {s["sweep"] for s in specs}
        rest = [b for b in result.get("benchmarks", []) if b.get("sweep") not in in_sweeps]
        if rest:
            lines += (["### Records", ""] if specs else []) + records_lines(rest)
        lines += accuracy_lines(result) + skipped_lines(result)
    return "\n".join(lines).rstrip() + "\n"


def _newest_per_suite(results_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    newest: dict[str, tuple[datetime, str, Path, dict[str, Any]]] = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = load_result(path)
        except ResultError as e:  # a stray file in the folder should not block the report of the others
            print(f"warning: skipping {e}", file=sys.stderr)
            continue
        suite = data.get("suite") or "?"
        created = data.get("created")
        key = (parse_created(created) if created else datetime.min.replace(tzinfo=UTC), path.name)
        if suite not in newest or key > newest[suite][:2]:
            newest[suite] = (*key, path, data)
    return [(v[2], v[3]) for v in newest.values()]


def _suite_key(item: tuple[Path, dict[str, Any]]) -> tuple[int, str, str]:
    suite = item[1].get("suite") or "?"
    rank = SUITE_ORDER.index(suite) if suite in SUITE_ORDER else len(SUITE_ORDER)
    return rank, suite, str(item[1].get("created") or "")


def _checked_out(out: Path, inputs: list[Path]) -> Path:
    """The report's path, once it is known to be writable and not one of the result files it reads."""
    check_output_file(out, "--out")
    if any(out.resolve() == p.resolve() for p in inputs):
        raise ValueError(f"--out {out}: is one of the result files being reported; write the report elsewhere")
    return out


def main(paths: Sequence[Path], results_dir: Path = DEFAULT_DIR, out: Path | None = None) -> int:
    """Write the report (default ``results_dir/REPORT.md``) and its plots beside it; 2 when nothing to report."""
    results_dir = Path(results_dir)
    if not paths and results_dir.exists() and not results_dir.is_dir():
        print(f"error: --results-dir {results_dir}: is a file; expected the folder the suites save to",
              file=sys.stderr)
        return 2
    try:
        if paths:
            items = [(Path(p), load_result(p)) for p in paths]
        elif results_dir.is_dir():
            items = _newest_per_suite(results_dir)
        else:
            items = []
    except ResultError as e:
        from tritongpt.engine.errors import report_error

        return report_error(e)
    if not items:
        print(f"error: nothing to report: no valid result files in {results_dir} (run a benchmark suite, or pass "
              f"result JSON files)", file=sys.stderr)
        return 2
    items.sort(key=_suite_key)
    out = _checked_out(Path(out) if out is not None else results_dir / "REPORT.md", [p for p, _ in items])
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    for path, result in items:
        plot_sweeps(result, folder, prefix=_prefix(result, path))
    from tritongpt.engine.fsutil import atomic_write_text

    text = render_report([r for _, r in items], folder, folder, sources=[p for p, _ in items])
    atomic_write_text(out, text)
    print(out)
    return 0
