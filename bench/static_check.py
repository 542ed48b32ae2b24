"""``tritongpt inspect``: compile every kernel variant for real GPU targets, without a GPU.

For each shipped variant (``kernels.*.variants()``) and target it records registers, spills
(stack/local bytes, STL/LDL instructions), shared memory, theoretical occupancy, SASS instruction
count and tensor-core instructions. ``check`` turns that into a gate:

Absolute rules (any Triton version): no spills or local memory; shared memory within the
target's per-block limit; kernels that should use tensor cores (``expect_mma``) do; variants with
wgmma-sized tiles (``KernelVariant.wants_wgmma``: BLOCK_M >= 64, fp16/bf16) use warpgroup MMA on
sm_90a (HGMMA) and tcgen05 on sm_100a (UTC*MMA), not Ampere's mma.sync; TMA-path variants
(``expect_tma``) issue TMA loads (UTMALDG) there. Up to 255 registers is fine: 0 spills is the rule.
Relative rules against a committed baseline of the same Triton version, in either direction, so
that improvements are recorded too: registers moved by more than max(4, 5%); SASS instruction
count by more than 5%; resident warps per SM changed at all; counted memory traffic (see
``traffic.py``) by more than 1%.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing as mp
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .aot import ARCH, compile_kernel, occupancy

TARGETS = {"sm_80": 80, "sm_86": 86, "sm_89": 89, "sm_90a": 90, "sm_90": 90, "sm_100a": 100, "sm_100": 100}
DEFAULT_TARGETS = ("sm_80", "sm_89", "sm_90a", "sm_100a")
MODERN = (90, 100)  # targets with warpgroup/tcgen05 MMA and TMA
REG_MARGIN_ABS, REG_MARGIN_REL = 4, 0.05
SASS_MARGIN_REL = 0.05
TRAFFIC_MARGIN_REL = 0.01
BASELINE_DIR = Path(__file__).resolve().parent / "baselines"


def triton_version() -> str:
    import triton

    return triton.__version__


def all_variants() -> list:
    """Every kernel module's ``variants()``, in a stable order."""
    import importlib

    from tritongpt.kernels.compat import KERNEL_MODULES

    # By module path: the package exports the decode_attention *function* under the module's name.
    out = []
    for name in KERNEL_MODULES:
        out.extend(importlib.import_module(f"tritongpt.kernels.{name}").variants())
    return out


def quick_subset(variants: list, per_function: int = 3) -> list:
    """A small representative set for CI: per kernel function, up to ``per_function`` variants
    spread evenly over its list (the lists run from small to large blocks)."""
    by_fn: dict[str, list] = {}
    for v in variants:
        by_fn.setdefault(_fn_name(v), []).append(v)
    out = []
    for vs in by_fn.values():
        if len(vs) <= per_function:
            out.extend(vs)
            continue
        step = (len(vs) - 1) / (per_function - 1)
        out.extend(vs[round(i * step)] for i in range(per_function))
    return out


def _fn_name(v) -> str:
    fn = v.fn
    while not hasattr(fn, "src") and hasattr(fn, "fn"):
        fn = fn.fn
    return fn.__name__


def _python_function(obj: Any) -> Any:
    """The plain Python function under a JITFunction / InterpretedFunction / Autotuner / Heuristics."""
    import types

    seen = 0
    while not isinstance(obj, types.FunctionType) and hasattr(obj, "fn") and seen < 8:
        obj, seen = obj.fn, seen + 1
    return obj if isinstance(obj, types.FunctionType) else None


def jit_functions(fn: Any) -> list[Any]:
    """``fn``'s Python function and those of every @triton.jit helper it calls, transitively (found by
    name in each function's globals, as Triton's own dependency finder does), in a stable order."""
    import ast
    import inspect as pyinspect
    import textwrap

    found, todo = {}, [_python_function(fn)]
    while todo:
        func = todo.pop()
        if func is None or func in found.values():
            continue
        found[(func.__module__, func.__qualname__)] = func
        try:
            tree = ast.parse(textwrap.dedent(pyinspect.getsource(func)))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            obj = func.__globals__.get(node.id) if isinstance(node, ast.Name) else None
            if obj is not None and obj is not func and type(obj).__module__.startswith("triton.runtime"):
                todo.append(_python_function(obj))
    return [found[k] for k in sorted(found)]


def jit_source_files(fn: Any) -> list[str]:
    """The files that define ``fn`` and the @triton.jit helpers it uses."""
    import inspect as pyinspect

    return sorted({pyinspect.getsourcefile(f) for f in jit_functions(fn)} - {None})


def _source_key(fn) -> str:
    """Hash of the code a kernel compiles from: the source of the kernel and of every @triton.jit helper
    it uses, wherever they live, with each one's module and the plain values (numbers, strings, constexprs)
    they read from module globals. Edits elsewhere in a file (tables, launchers, docs) keep the key;
    moving a helper to another module changes it. The same for compiled and interpreter-decorated
    kernels, so a test process and a worker agree."""
    import ast
    import inspect as pyinspect
    import textwrap

    funcs = jit_functions(fn)
    if not funcs:
        return hashlib.sha256(repr(fn).encode()).hexdigest()
    h = hashlib.sha256()
    for func in funcs:
        src = textwrap.dedent(pyinspect.getsource(func))
        h.update(f"{func.__module__}:{func.__qualname__}\0{src}\0".encode())
        for node in ast.walk(ast.parse(src)):
            value = func.__globals__.get(node.id) if isinstance(node, ast.Name) else None
            if isinstance(value, (int, float, str)) or type(value).__name__ == "constexpr":
                h.update(f"{node.id}={value!r}\0".encode())
    return h.hexdigest()


def cache_dir() -> Path:
    from tritongpt.engine.assets import home

    return home() / "inspect-cache"


def _compiler_key() -> str:
    """Hash of aot.py: how a record is compiled and read (instruction counting included)."""
    from . import aot

    return hashlib.sha256(Path(aot.__file__).read_bytes()).hexdigest()


def _record_key(v, cc: int) -> str:
    blob = json.dumps([_source_key(v.fn), _compiler_key(), v.name, v.signature, v.constexprs,
                       v.num_warps, v.num_stages, v.tags.get("divisible_by_16"), cc, triton_version()],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


_WORKER_VARIANTS: dict[str, object] = {}


def _load_source(source: str) -> list:
    import importlib

    mod, _, fn = source.partition(":")
    return getattr(importlib.import_module(mod), fn)()


def _worker_init(source: str) -> None:
    # Runs in a fresh (spawned) process with TRITON_INTERPRET unset: kernels decorated under the
    # interpreter cannot be compiled, so the variants are rebuilt here from their module.
    _isolate_triton_cache()
    _WORKER_VARIANTS.update({v.name: v for v in _load_source(source)})


def _isolate_triton_cache() -> None:
    """Give this worker a private, throw-away Triton cache: every record comes from a compile of its own
    inputs in this process, never from a cubin another process (a test, a launch, another Triton build)
    stored under the same Triton key. The records themselves are cached by inspect."""
    import atexit
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="tritongpt-inspect-triton-")
    os.environ["TRITON_CACHE_DIR"] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)


def in_arg_order(v: Any) -> dict[str, str]:
    """The signature with the constexprs in place, in the kernel's argument order. Triton 3.3 reads the
    signature's types by position (3.4+ by name): any other order gave arguments the wrong types there
    ("'constexpr' has no attribute 'to_ir'"). Done here, not in aot.py, whose source keys every record."""
    from .aot import unwrap_jit

    names = list(unwrap_jit(v.fn).arg_names)
    sig = {**v.signature, **{k: "constexpr" for k in v.constexprs}}
    return {k: sig[k] for k in sorted(sig, key=lambda k: names.index(k) if k in names else len(names))}


def _compile_task(name: str, cc: int) -> dict[str, Any]:
    v = _WORKER_VARIANTS[name]
    s = compile_kernel(v.fn, in_arg_order(v), v.constexprs, cc=cc, num_warps=v.num_warps, num_stages=v.num_stages,
                       divisible_by_16=v.tags.get("divisible_by_16"))
    occ = occupancy(cc, s.registers, s.shared_bytes, v.num_warps)
    return {
        "variant": v.name, "function": _fn_name(v), "target": ARCH[cc]["name"], "cc": cc,
        "num_warps": v.num_warps, "num_stages": v.num_stages,
        "constexprs": {k: (v2 if isinstance(v2, int | float | bool | str) else str(v2))
                       for k, v2 in v.constexprs.items()},
        "registers": s.registers, "stack_bytes": s.stack_bytes, "local_bytes": s.local_bytes,
        "spill_instructions": s.spill_instructions, "shared_bytes": s.shared_bytes,
        "smem_limit": ARCH[cc]["smem_per_block"], "fits": s.fits,
        "sass_instructions": s.sass_instructions, "mma_instructions": s.mma_instructions,
        "wgmma_instructions": s.wgmma_instructions, "tma_instructions": s.tma_instructions,
        "tma_loads": s.tma_loads, "mma_family": s.family, **_expectations(v),
        "source": _source_key(v.fn)[:16], **occ,
    }


def _expectations(v: Any) -> dict[str, bool]:
    # Read from the variant on every run (also for cached records): the flags are policy, not compile output.
    return {"expect_mma": bool(v.expect_mma), "expect_wgmma": bool(v.wants_wgmma), "expect_tma": bool(v.expect_tma)}


def inspect(variants: list, targets: Iterable[str], *, jobs: int | None = None, use_cache: bool = True,
            progress: bool = True, source: str = "tritongpt.bench.static_check:all_variants") -> list[dict[str, Any]]:
    """Compile (or fetch from the disk cache) every variant for every target it ships for.

    ``source`` ("module:function") rebuilds the same variants, by name, in the worker processes.
    """
    ccs = []
    for t in targets:
        if t not in TARGETS:
            raise ValueError(f"targets: unknown target {t!r}; expected one of {sorted(TARGETS)}")
        ccs.append(TARGETS[t])
    cdir = cache_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[int, int], dict] = {}
    todo = []
    for i, v in enumerate(variants):
        for cc in ccs:
            if cc not in v.archs:
                continue
            f = cdir / f"{_record_key(v, cc)}.json"
            if use_cache and f.exists():
                try:
                    rec = json.loads(f.read_text())
                    # The cache key hashes the kernel's source, so the record is from the current
                    # source; set here because cache files written without this field stay valid.
                    rec["source"] = _source_key(v.fn)[:16]
                    rec.update(_expectations(v))
                    results[(i, cc)] = rec
                    continue
                except (OSError, json.JSONDecodeError):
                    pass
            todo.append((i, cc, f))
    if todo:
        from tqdm import tqdm

        from tritongpt.engine.fsutil import atomic_write_text

        jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
        bar = tqdm(total=len(todo), desc="compiling", unit="kernel", disable=not progress)
        saved = os.environ.pop("TRITON_INTERPRET", None)  # inherited by the spawned workers
        try:
            with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                     initargs=(source,)) as pool:
                futs = {pool.submit(_compile_task, variants[i].name, cc): (i, cc, f) for i, cc, f in todo}
                for fut in cf.as_completed(futs):
                    i, cc, f = futs[fut]
                    rec = fut.result()
                    results[(i, cc)] = rec
                    atomic_write_text(f, json.dumps(rec))
                    bar.update(1)
        finally:
            if saved is not None:
                os.environ["TRITON_INTERPRET"] = saved
            bar.close()
    return [results[k] for k in sorted(results)]


def format_table(records: list[dict[str, Any]]) -> str:
    cols = [("variant", 56), ("target", 7), ("registers", 4), ("spill", 5), ("shared_bytes", 7),
            ("warps_per_sm", 5), ("sass_instructions", 6), ("mma_instructions", 5), ("mma_family", 8),
            ("tma_instructions", 3)]
    head = ["kernel / config", "target", "regs", "spill", "smem", "warps/SM", "instrs", "mma", "family", "tma"]
    widths = [max(w, len(h)) for (_, w), h in zip(cols, head, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in records:
        spill = r["stack_bytes"] + r["local_bytes"]
        row = [r["variant"], r["target"], str(r["registers"]), str(spill) if spill else "-",
               f"{r['shared_bytes'] // 1024}K" if r["shared_bytes"] else "0",
               f"{r['warps_per_sm']}", str(r["sass_instructions"]), str(r["mma_instructions"]),
               r.get("mma_family", "?"), str(r.get("tma_instructions", "?"))]
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


@dataclass
class Finding:
    key: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: [{self.rule}] {self.message}"


def record_key(r: dict[str, Any]) -> str:
    return f"{r['variant']}@{r['target']}"


def check_absolute(records: list[dict[str, Any]]) -> list[Finding]:
    out = []
    for r in records:
        k = record_key(r)
        if r["stack_bytes"] or r["local_bytes"] or r["spill_instructions"]:
            out.append(Finding(k, "spill", f"spills: stack {r['stack_bytes']} B, local {r['local_bytes']} B, "
                                           f"{r['spill_instructions']} STL/LDL instructions"))
        if not r["fits"] or r["shared_bytes"] > r["smem_limit"]:
            out.append(Finding(k, "smem", f"shared memory {r['shared_bytes']} B exceeds the target's "
                                          f"{r['smem_limit']} B per block"))
        if r["expect_mma"] and r["mma_instructions"] == 0:
            out.append(Finding(k, "tensor-cores", "no HMMA/HGMMA/tcgen05 instructions: tensor cores lost"))
        out += _modern_findings(r, k)
    return out


def _modern_findings(r: dict[str, Any], k: str) -> list[Finding]:
    """sm_90a / sm_100a: wgmma-sized variants use the target's MMA family, TMA variants use TMA."""
    if r.get("cc") not in MODERN:
        return []
    out = []
    family = "HGMMA (wgmma)" if r["cc"] == 90 else "tcgen05 (UTC*MMA)"
    if r.get("expect_wgmma") and not r.get("wgmma_instructions"):
        out.append(Finding(k, "wgmma", f"no {family} instructions ({r.get('mma_family', '?')} only): "
                                       "this tile runs on the previous generation's tensor-core path"))
    if r.get("expect_tma") and not r.get("tma_loads"):
        out.append(Finding(k, "tma", "no UTMALDG instructions: the TMA path compiled to plain loads"))
    return out


def check_relative(records: list[dict[str, Any]], baseline: dict[str, Any]) -> list[Finding]:
    base = baseline.get("records", {})
    out = []
    for r in records:
        k = record_key(r)
        b = base.get(k)
        if b is None:
            continue
        dr = r["registers"] - b["registers"]
        if abs(dr) > max(REG_MARGIN_ABS, REG_MARGIN_REL * b["registers"]):
            out.append(Finding(k, "registers", f"{b['registers']} -> {r['registers']} ({dr:+d})"))
        if b["sass_instructions"]:
            rel = r["sass_instructions"] / b["sass_instructions"] - 1
            if abs(rel) > SASS_MARGIN_REL:
                out.append(Finding(k, "instructions", f"{b['sass_instructions']} -> {r['sass_instructions']} "
                                                      f"({rel:+.1%})"))
        if r["warps_per_sm"] != b["warps_per_sm"]:
            out.append(Finding(k, "occupancy", f"{b['warps_per_sm']} -> {r['warps_per_sm']} warps/SM"))
    return out


def check_traffic(traffic: list[dict[str, Any]], baseline: dict[str, Any]) -> list[Finding]:
    base = {t["case"]: t for t in baseline.get("traffic", [])}
    out = []
    for t in traffic:
        b = base.get(t["case"])
        if b is None or not b["bytes_moved"]:
            continue
        rel = t["bytes_moved"] / b["bytes_moved"] - 1
        if abs(rel) > TRAFFIC_MARGIN_REL:
            out.append(Finding(t["case"], "traffic", f"{b['bytes_moved']} -> {t['bytes_moved']} bytes ({rel:+.1%})"))
    return out


def make_baseline(records: list[dict[str, Any]], traffic: list[dict[str, Any]] | None,
                  scope: str = "all") -> dict[str, Any]:
    """``scope`` "quick": the baseline holds the quick subset only (the oldest supported Triton's, whose
    full set is not compiled in CI); the gate then compares those records and skips the coverage rule."""
    return {
        "triton": triton_version(),
        "scope": scope,
        "records": {record_key(r): r for r in records},
        "traffic": traffic or [],
    }


# What the relative rules and baseline_coverage read from each baseline record.
BASELINE_RECORD_NUMBERS = ("registers", "sass_instructions", "warps_per_sm", "stack_bytes", "local_bytes",
                           "spill_instructions", "shared_bytes", "smem_limit", "mma_instructions", "num_warps",
                           "num_stages")


def validate_baseline(data: Any, source: str | Path) -> dict[str, Any]:
    """Return ``data`` when it has the shape the gate reads, else raise ``ValueError`` naming ``source`` and
    the field: a damaged baseline must fail loudly, not crash mid-check or compare against nothing."""
    def fail(msg: str) -> ValueError:
        return ValueError(f"{source}: {msg} (expected a baseline written by `tritongpt inspect --write-baseline`)")

    if not isinstance(data, dict):
        raise fail(f"expected a JSON object, got {type(data).__name__}")
    if not isinstance(data.get("triton"), str):
        raise fail(f"'triton' must be the Triton version string (got {data.get('triton')!r})")
    if data.get("scope", "all") not in ("all", "quick"):
        raise fail(f"'scope' must be \"all\" or \"quick\" (got {data.get('scope')!r})")
    records = data.get("records")
    if not isinstance(records, dict):
        raise fail("'records' must be an object of variant@target -> record")
    for key, r in records.items():
        bad = [k for k in BASELINE_RECORD_NUMBERS if not isinstance(r, dict) or not _is_count(r.get(k))]
        if bad:
            raise fail(f"records[{key!r}]: {', '.join(bad)} must be non-negative numbers")
    traffic = data.get("traffic", [])
    if not isinstance(traffic, list) or not all(
            isinstance(t, dict) and isinstance(t.get("case"), str) and _is_count(t.get("bytes_moved"))
            for t in traffic):
        raise fail("'traffic' must be a list of {case, bytes_moved, ...}")
    return data


def _is_count(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0


def default_baseline_path(version: str | None = None) -> Path:
    return BASELINE_DIR / f"triton-{version or triton_version()}.json"


def check_pairs(pairs: list, source: str, *, jobs: int = 2) -> list[Finding]:
    """Compile (variant, cc) pairs in clean worker processes and apply the absolute rules.
    Used by the kernel tests: works from a process running the interpreter."""
    import dataclasses

    narrowed = [dataclasses.replace(v, archs=(cc,)) for v, cc in pairs]
    records = inspect(narrowed, list(DEFAULT_TARGETS), jobs=jobs, progress=False, source=source)
    if len(records) != len(pairs):
        raise RuntimeError(f"compiled {len(records)} of {len(pairs)} (variant, target) pairs")
    return check_absolute(records)


def baseline_coverage(variants: list, baseline: dict[str, Any], targets: Iterable[str]) -> list[Finding]:
    """Every shipped (variant, target) has a baseline record compiled from the current kernel
    source with the same config, and that record passes the absolute rules. Lets CI prove the
    whole shipped set without recompiling it: a stale or missing record is a finding."""
    out = []
    records = baseline.get("records", {})
    ccs = {TARGETS[t] for t in targets}
    for v in variants:
        src = _source_key(v.fn)[:16]
        for cc in sorted(ccs & set(v.archs)):
            key = f"{v.name}@{ARCH[cc]['name']}"
            r = records.get(key)
            if r is None:
                out.append(Finding(key, "baseline", "no baseline record (run `make baseline`)"))
            elif r.get("source") != src or (r["num_warps"], r["num_stages"]) != (v.num_warps, v.num_stages):
                out.append(Finding(key, "baseline", "record is from another kernel source or config "
                                                    "(run `make baseline`)"))
    shipped = {f"{v.name}@{ARCH[cc]['name']}" for v in variants for cc in ccs & set(v.archs)}
    out += [f for f in check_absolute([records[k] for k in shipped if k in records])]
    return out
