"""Persist ``tritongpt-bench/1`` results: JSON files (raw samples kept), a CSV history, one PNG per sweep.

Layout under ``bench/results/`` (created on demand)::

    kernels-nvidia-h100-80gb-hbm3-20261122-060102.json   one file per run, never overwritten (-1, -2 on a clash)
    kernels-nvidia-h100-80gb-hbm3-20261122-060102-<sweep>.png
    history.csv                                         one row per benchmark record, across runs

The CSV history has a fixed column order (``HISTORY_COLUMNS``). When an existing history's header differs
(the columns changed between versions), it is *rotated*: renamed to ``history-<stamp>.csv`` and a fresh
file is started, with a warning. Rows are never rewritten into columns they were not written for, and a
results folder keeps accepting runs without manual work.

Every write is atomic (temporary file + ``os.replace``/``os.link``): a crash never leaves a half file.
The history is read-modify-write, so one writer at a time (a benchmark run) is assumed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import statistics
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tritongpt.engine.fsutil import atomic_path, atomic_write_text, fsync_dir, temp_file
from tritongpt.engine.gpu_peaks import lookup

from .timing import quantile

SCHEMA = "tritongpt-bench/1"
METRICS = {"tflops": "TFLOP/s", "gbs": "GB/s"}
DEFAULT_DIR = Path("bench/results")
HISTORY_NAME = "history.csv"

HISTORY_COLUMNS = (
    "created", "commit", "dirty", "gpu", "suite", "sweep", "kernel", "direction", "provider", "x_name", "x",
    "name", "median_s", "q20_s", "q80_s", "tflops", "gbs", "peak_fraction", "speedup_best", "accurate",
    "throttled", "torch", "triton", "n_samples",
)


class ResultError(ValueError):
    """A result that does not follow the schema; the message names the file and the field."""


# ---------------------------------------------------------------------------------------------------------------
# validation and loading


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# A timed sample outside this range (seconds) is a unit mistake or a damaged file: 1e308 would make
# the median ratio overflow to inf and a subnormal one would make it 0.
MIN_SAMPLE_S, MAX_SAMPLE_S = 1e-12, 1e6


def plausible_sample(x: Any) -> bool:
    """A positive finite time in seconds within ``[MIN_SAMPLE_S, MAX_SAMPLE_S]``."""
    return _is_number(x) and math.isfinite(x) and MIN_SAMPLE_S <= x <= MAX_SAMPLE_S


def parse_created(text: Any) -> datetime:
    """``"2026-11-22T06:01:02Z"`` -> an aware UTC datetime (a naive time is taken as UTC)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected an ISO-8601 time string, got {text!r}")
    s = text.strip()
    if s.endswith(("Z", "z")):  # fromisoformat() only takes "Z" from Python 3.11 on
        s = s[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(s)
    except ValueError as e:
        raise ValueError(f"expected an ISO-8601 time like 2026-11-22T06:01:02Z, got {text!r}") from e
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def validate_result(data: Any, source: str | Path = "result", *, require_meta: bool = False) -> dict[str, Any]:
    """Check the parts of the schema that consumers rely on; return ``data`` or raise :class:`ResultError`.

    Always: a JSON object with ``schema`` == ``tritongpt-bench/1``; ``benchmarks`` a list of records, each
    with a unique ``name`` and >= 2 ``samples`` in seconds within ``[MIN_SAMPLE_S, MAX_SAMPLE_S]`` (what
    ``bench compare`` needs); the optional ``environment``/``sweeps``/``skipped`` well formed.
    ``require_meta`` (writing a file) also requires ``suite`` and ``created``, which name the file.
    """
    def fail(msg: str) -> ResultError:
        return ResultError(f"{source}: {msg}")

    if not isinstance(data, dict):
        raise fail(f"expected a JSON object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise fail(f"expected a {SCHEMA!r} result (got schema {data.get('schema')!r})")
    suite = data.get("suite")
    if suite is not None or require_meta:
        if not isinstance(suite, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", suite):
            raise fail(f"'suite' must be a lowercase name such as 'kernels' (got {suite!r})")
    created = data.get("created")
    if created is not None or require_meta:
        try:
            parse_created(created)
        except ValueError as e:
            raise fail(f"'created': {e}") from None
    env = data.get("environment", {})
    if not isinstance(env, dict):
        raise fail("'environment' must be an object")
    for key in ("gpu", "torch", "triton", "commit"):
        if env.get(key) is not None and not isinstance(env[key], str):
            raise fail(f"environment.{key} must be a string or null (got {env[key]!r})")
    sweeps = data.get("sweeps") or []
    if not isinstance(sweeps, list):
        raise fail("'sweeps' must be a list")
    for i, s in enumerate(sweeps):
        if not isinstance(s, dict) or not isinstance(s.get("sweep"), str):
            raise fail(f"sweeps[{i}] needs a 'sweep' name")
        if s.get("metric") not in METRICS:
            raise fail(f"sweeps[{i}] ({s['sweep']}): 'metric' must be one of {sorted(METRICS)} "
                       f"(got {s.get('metric')!r})")
    benchmarks = data.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise fail("'benchmarks' must be a list of records")
    seen: set[str] = set()
    for i, b in enumerate(benchmarks):
        if not isinstance(b, dict) or not isinstance(b.get("name"), str) or not b["name"]:
            raise fail(f"benchmarks[{i}] needs a 'name'")
        _check_samples(b.get("samples"), f"benchmarks[{i}] ({b['name']})", fail)
        if b["name"] in seen:  # compare.py keys by name: a duplicate would silently hide one record
            raise fail(f"benchmarks[{i}]: duplicate name {b['name']!r}")
        seen.add(b["name"])
        for key in ("x", "median_s", "q20_s", "q80_s", "tflops", "gbs", "peak_fraction"):
            if b.get(key) is not None and not _is_number(b[key]):
                raise fail(f"benchmarks[{i}] ({b['name']}): {key!r} must be a number or null (got {b[key]!r})")
        if b.get("speedup") is not None and not (
                isinstance(b["speedup"], dict) and all(_is_number(v) for v in b["speedup"].values())):
            raise fail(f"benchmarks[{i}] ({b['name']}): 'speedup' must map provider -> number")
    skipped = data.get("skipped") or []
    if not isinstance(skipped, list) or not all(isinstance(s, dict) and "name" in s for s in skipped):
        raise fail("'skipped' must be a list of {name, reason}")
    return data


def _check_samples(samples: Any, where: str, fail) -> None:
    need = f"needs >= 2 positive finite samples (seconds, each in [{MIN_SAMPLE_S:g}, {MAX_SAMPLE_S:g}])"
    if not isinstance(samples, list) or len(samples) < 2:
        raise fail(f"{where} {need}; got {samples!r:.60}")
    bad = next((j for j, x in enumerate(samples) if not plausible_sample(x)), None)
    if bad is not None:
        raise fail(f"{where} {need}; samples[{bad}] is {samples[bad]!r}")


def read_json_file(path: str | Path, kind: str = "result") -> Any:
    """Parse a JSON ``kind`` file ("result", "baseline"); any failure is a :class:`ResultError` naming the
    file and the reason."""
    path = Path(path)
    expected = f"expected a JSON {kind} file"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultError(f"{path}: no such file ({expected})") from None
    except IsADirectoryError:
        raise ResultError(f"{path}: is a folder ({expected})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e}; {expected})") from None
    if not text.strip():
        raise ResultError(f"{path}: empty file ({expected})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultError(f"{path}: not a readable JSON {kind} file: truncated or damaged at line {e.lineno} "
                          f"column {e.colno} ({e.msg})") from None


def load_result(path: str | Path) -> dict[str, Any]:
    return validate_result(read_json_file(path), Path(path))


# ---------------------------------------------------------------------------------------------------------------
# output paths: checked before a run, so that minutes of benchmarking are not lost to a typo


def check_output_file(path: str | Path, option: str) -> Path:
    """Raise ``ValueError`` naming ``option`` unless ``path`` can be written as a file: it is not a folder,
    no file stands where one of its folders should be, and that folder takes writes. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a folder; expected a file name")
    _check_folder(path.parent, option, path)
    return path


def check_output_dir(path: str | Path, option: str) -> Path:
    """Like :func:`check_output_file`, for a folder that is created on demand."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: is a file; expected a folder")
    _check_folder(path, option, path)
    return path


def _check_folder(folder: Path, option: str, target: Path) -> None:
    base = folder
    while not base.exists() and base != base.parent:
        base = base.parent  # the folders below ``base`` are made at write time
    if not base.is_dir():
        raise ValueError(f"{option} {target}: {base} is a file, not a folder")
    try:  # a real write: permission bits say nothing for root or a read-only mount
        temp_file(base, ".tritongpt-write-check-").unlink()
    except OSError as e:
        raise ValueError(f"{option} {target}: cannot write in {base} ({e.strerror or e})") from None


# ---------------------------------------------------------------------------------------------------------------
# names


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def device_slug(result: dict[str, Any]) -> str:
    gpu = (result.get("environment") or {}).get("gpu")
    return slug(gpu) if gpu else "cpu"


def result_filename(result: dict[str, Any]) -> str:
    """``<suite>-<gpu slug or cpu>-<YYYYmmdd-HHMMSS>.json``, the time from ``created`` (UTC)."""
    validate_result(result, "result", require_meta=True)
    stamp = parse_created(result["created"]).strftime("%Y%m%d-%H%M%S")
    return f"{result['suite']}-{device_slug(result)}-{stamp}.json"


def default_prefix(result: dict[str, Any]) -> str:
    """The result file's stem, or ``<suite>-<device>`` when the result has no ``created`` time to name it by."""
    try:
        return Path(result_filename(result)).stem
    except ResultError:
        return f"{slug(str(result.get('suite') or 'result'))}-{device_slug(result)}"


def plot_path(out_dir: str | Path, prefix: str, sweep: str) -> Path:
    """Where ``plot_sweeps`` puts a sweep's PNG (the report links the same name)."""
    return Path(out_dir) / f"{prefix}-{slug(sweep)}.png"


# ---------------------------------------------------------------------------------------------------------------
# JSON


def _link_no_clobber(tmp: Path, dest: Path) -> bool:
    """Publish ``tmp`` as ``dest`` unless ``dest`` exists; False when it does."""
    try:
        os.link(tmp, dest)  # atomic and fails if dest exists: no window between the check and the write
        return True
    except FileExistsError:
        return False
    except OSError:  # filesystems without hard links: check, then rename (a tiny race, single writer assumed)
        if dest.exists():
            return False
        os.replace(tmp, dest)
        return True


def _publish_new(tmp: Path, first: Path) -> Path:
    """Move ``tmp`` to ``first``, or ``<stem>-1<suffix>``, ``-2``, ... whichever does not exist yet."""
    for i in range(10_000):
        dest = first if i == 0 else first.with_name(f"{first.stem}-{i}{first.suffix}")
        if _link_no_clobber(tmp, dest):
            fsync_dir(dest.parent)
            return dest
    raise FileExistsError(f"{first}: too many files with this name")


def write_results(result: dict[str, Any], out_dir: str | Path = DEFAULT_DIR) -> Path:
    """Validate and write ``result`` as a new JSON file in ``out_dir``; never overwrites. Returns the path."""
    name = result_filename(result)  # validates, suite and created included
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1) + "\n"
    tmp = temp_file(out, f".{name}.")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return _publish_new(tmp, out / name)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# CSV history


def summary_stats(record: dict[str, Any]) -> tuple[float, float, float]:
    """(median, q20, q80) in seconds: the record's own values, else computed from its samples."""
    s = record["samples"]
    med = record.get("median_s")
    q20, q80 = record.get("q20_s"), record.get("q80_s")
    return (med if med is not None else statistics.median(s), q20 if q20 is not None else quantile(s, 0.2),
            q80 if q80 is not None else quantile(s, 0.8))


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # shortest round-tripping form
    return str(v)


def history_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """One CSV row (column -> text) per benchmark record."""
    env = result.get("environment") or {}
    common = {"created": result.get("created"), "commit": env.get("commit"), "dirty": env.get("dirty"),
              "gpu": env.get("gpu") or "cpu", "suite": result.get("suite"), "throttled": env.get("throttled"),
              "torch": env.get("torch"), "triton": env.get("triton")}
    rows = []
    for b in result.get("benchmarks", []):
        med, q20, q80 = summary_stats(b)
        speedups = [v for v in (b.get("speedup") or {}).values() if _is_number(v)]
        row = dict(common, **{k: b.get(k) for k in ("sweep", "kernel", "direction", "provider", "x_name", "x",
                                                     "name", "tflops", "gbs", "peak_fraction", "accurate")})
        row.update(median_s=med, q20_s=q20, q80_s=q80, speedup_best=max(speedups) if speedups else None,
                   n_samples=len(b["samples"]))
        rows.append({c: _cell(row.get(c)) for c in HISTORY_COLUMNS})
    return rows


def _free_name(path: Path, stamp: str) -> Path:
    dest = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
    i = 1
    while dest.exists():
        dest = path.with_name(f"{path.stem}-{stamp}-{i}{path.suffix}")
        i += 1
    return dest


def append_history(result: dict[str, Any], csv_path: str | Path = DEFAULT_DIR / HISTORY_NAME) -> Path:
    """Append one row per benchmark record to the CSV history (header written once); returns its path.

    A history whose header is not ``HISTORY_COLUMNS`` is rotated to ``<stem>-<YYYYmmdd-HHMMSS>.csv`` (kept
    intact) with a ``UserWarning``, and a new history is started.
    """
    validate_result(result, "result")
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if old.strip():
        header = next(csv.reader(io.StringIO(old)), [])
        if tuple(header) != HISTORY_COLUMNS:
            rotated = _free_name(path, datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
            os.replace(path, rotated)
            fsync_dir(path.parent)
            warnings.warn(f"{path}: its columns differ from this version's; moved it to {rotated} and started "
                          f"a new history", UserWarning, stacklevel=2)
            old = ""
    else:
        old = ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    if not old:
        w.writeheader()
    elif not old.endswith("\n"):
        buf.write("\n")
    w.writerows(history_rows(result))
    atomic_write_text(path, old + buf.getvalue())
    return path


# ---------------------------------------------------------------------------------------------------------------
# plots


def sweep_specs(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The result's sweeps, plus any sweep that records name but ``sweeps`` lacks (metric from the records)."""
    specs = [dict(s) for s in result.get("sweeps") or []]
    known = {s["sweep"] for s in specs}
    for b in result.get("benchmarks", []):
        name = b.get("sweep")
        if isinstance(name, str) and name not in known:
            known.add(name)
            same = [r for r in result["benchmarks"] if r.get("sweep") == name]
            metric = "tflops" if any(r.get("tflops") is not None for r in same) else "gbs"
            specs.append({"sweep": name, "kernel": b.get("kernel"), "title": name, "x_name": b.get("x_name"),
                          "metric": metric})
    return specs


def sweep_series(result: dict[str, Any], spec: dict[str, Any]) -> dict[str, list[tuple[int | float, float]]]:
    """provider -> [(x, metric value), ...] sorted by x; records with no x or no metric are left out."""
    out: dict[str, list[tuple[int | float, float]]] = {}
    for b in result.get("benchmarks", []):
        if b.get("sweep") != spec["sweep"]:
            continue
        x, y = b.get("x"), b.get(spec["metric"])
        if not _is_number(x) or not _is_number(y) or not math.isfinite(y) or x <= 0:
            continue
        out.setdefault(str(b.get("provider", "?")), []).append((x, float(y)))
    return {p: sorted(v) for p, v in out.items()}


def provider_order(providers: Iterable[str]) -> list[str]:
    """Ours ("triton") first, the baselines in the order seen."""
    ps = list(dict.fromkeys(providers))
    return sorted(ps, key=lambda p: p != "triton")


def _sweep_dtype(result: dict[str, Any], spec: dict[str, Any]) -> str | None:
    if spec.get("dtype"):
        return str(spec["dtype"])
    for b in result.get("benchmarks", []):
        if b.get("sweep") == spec["sweep"] and (b.get("params") or {}).get("dtype"):
            return str(b["params"]["dtype"])
    return None


def _peak(result: dict[str, Any], spec: dict[str, Any]) -> tuple[float, str] | None:
    """The roofline to draw: the device's bandwidth, or its bf16/fp16 tensor-core peak (never for fp32)."""
    peak = lookup((result.get("environment") or {}).get("gpu"))
    metric = spec["metric"]
    if peak is None:
        return None
    if metric == "tflops":
        dtype = (_sweep_dtype(result, spec) or "").removeprefix("torch.")
        if dtype and dtype not in ("bf16", "bfloat16", "fp16", "float16", "half"):
            return None
        return peak.bf16_tflops, f"{peak.name} peak {peak.bf16_tflops:g} TFLOP/s (bf16 dense)"
    return peak.bandwidth_gbs, f"{peak.name} peak {peak.bandwidth_gbs:g} GB/s"


def plot_sweeps(result: dict[str, Any], out_dir: str | Path, prefix: str | None = None) -> list[Path]:
    """One PNG per sweep with plottable records: metric vs size (log2 x), one line per provider.

    ``prefix`` names the files (default: the result file's stem, see :func:`result_filename`).
    """
    # Figure + the Agg canvas directly: no pyplot global state, no display, no backend switching.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    validate_result(result, "result")
    if prefix is None:
        prefix = default_prefix(result)
    gpu = (result.get("environment") or {}).get("gpu") or "CPU"
    paths = []
    for spec in sweep_specs(result):
        series = sweep_series(result, spec)
        if not series:
            continue
        metric = spec["metric"]
        fig = Figure(figsize=(7.5, 4.5), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        markers = "os^Dvx*P<>"
        for i, p in enumerate(provider_order(series)):
            xs, ys = zip(*series[p], strict=True)
            ax.plot(xs, ys, marker=markers[i % len(markers)], ms=5, lw=2.2 if p == "triton" else 1.3, label=p)
        peak = _peak(result, spec)
        if peak is not None:
            ax.axhline(peak[0], ls="--", color="gray", lw=1, label=peak[1])
        ax.set_xscale("log", base=2)
        xs_all = sorted({x for v in series.values() for x, _ in v})
        ax.xaxis.set_major_locator(FixedLocator(xs_all))  # the measured sizes, written out in full
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{x:g}" for x in xs_all], rotation=45 if len(xs_all) > 8 else 0)
        ax.set_xlabel(spec.get("x_name") or "x")
        ax.set_ylabel(METRICS[metric])
        ax.set_ylim(bottom=0)
        ax.set_title(f"{spec.get('title') or spec['sweep']} ({gpu})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        dest = plot_path(out_dir, prefix, spec["sweep"])
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, format="png")
        paths.append(dest)
    return paths


# ---------------------------------------------------------------------------------------------------------------


def save(result: dict[str, Any], out_dir: str | Path = DEFAULT_DIR) -> dict[str, Any]:
    """Write the JSON, append the history and draw the plots in ``out_dir``.

    Returns ``{"json": Path, "history": Path, "plots": [Path, ...]}``.
    """
    out = Path(out_dir)
    path = write_results(result, out)
    return {"json": path, "history": append_history(result, out / HISTORY_NAME),
            "plots": plot_sweeps(result, out, prefix=path.stem)}


# ---------------------------------------------------------------------------------------------------------------
# building a result (the suites)

def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def result_document(suite: str, environment: dict[str, Any]) -> dict[str, Any]:
    """An empty ``tritongpt-bench/1`` result for ``suite``; fill ``benchmarks`` with :func:`add_record`."""
    return {"schema": SCHEMA, "suite": suite, "created": utc_now(), "environment": environment,
            "benchmarks": [], "skipped": []}


def add_record(doc: dict[str, Any], name: str, samples: list[float], **fields: Any) -> None:
    """A record with its raw samples (seconds, wall clock around device syncs). One that ``bench compare``
    could not test (< 2 samples, or a non-positive derived estimate) is listed under ``skipped``."""
    samples = [float(x) for x in samples]
    if len(samples) < 2 or not all(plausible_sample(x) for x in samples):
        why = f"{len(samples)} sample(s)" if len(samples) < 2 else "a sample out of range"
        doc["skipped"].append({"name": name, "reason": f"{why}: a comparison needs >= 2 positive samples "
                               "(raise --repeats / --steps)"})
        return
    doc["benchmarks"].append({"name": name, **fields, "samples": samples, "timer": "wall",
                              "median_s": statistics.median(samples), "q20_s": quantile(samples, 0.2, method="nearest"),
                              "q80_s": quantile(samples, 0.8, method="nearest")})
