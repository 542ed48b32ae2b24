"""``tritongpt bench kernels``: time every kernel sweep against its baselines, check accuracy in
the same run, capture the GPU's state around the suite, and store the results.

Per sweep point, every provider gets the same inputs; its output (forward) or its gradients
(backward, forward+backward: ``torch.autograd.grad`` with a fixed upstream gradient, so nothing
accumulates between runs) are compared with an fp32 reference. The error is the worst
``max|out - ref| / max|ref|`` over the outputs; the tolerance is twice the best baseline's error
at that point (the PyTorch-error rule the tests use), never below a floor for the dtype. A
provider that cannot run (SDPA backend unavailable, out of memory) is listed as skipped with the
reason; our kernel failing or missing its tolerance fails the run (exit 1). Our kernel with one code
path forced (``triton-pointer``, ``triton-tma``...; kernel_paths.py) is checked and reported the same
way, but only ``triton``, the path users get, fails the run; none of ours sets another's tolerance.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tritongpt.engine.gpu_peaks import DevicePeak

from . import metrics
from .kernel_cases import Sweep
from .timing import Timing, sync, time_gpu

OURS = "triton"
ERR_FLOOR = {"float16": 5e-3, "bfloat16": 3e-2, "float32": 1e-4}


def is_ours(provider: str) -> bool:
    """``triton`` or one of its forced-path variants (``triton-pointer``, ``triton-tma``, ...)."""
    return provider == OURS or provider.startswith(OURS + "-")


GPU_REQUIRED = (
    "tritongpt bench kernels: kernel timing needs a CUDA GPU, and this machine has none "
    "(torch.cuda.is_available() is False).\n"
    "Without a GPU:\n"
    "  tritongpt inspect            compile-only report for sm_80/sm_89/sm_90a: registers, spills, shared memory,\n"
    "                               occupancy, tensor-core instructions; --traffic adds counted memory traffic\n"
    "  tritongpt bench generate     generation latency/throughput (runs on CPU, labelled CPU)\n"
    "  tritongpt bench train        training tokens/s (runs on CPU, labelled CPU)\n"
    "  tritongpt bench kernels --list   the sweeps with FLOPs, minimum bytes and roofline floors on H100/A100\n"
    "  tritongpt bench all --dry-run    what the one-command GPU run (kernels, train, generate, report) does"
)

Timer = Callable[[Callable[[], Any], Sweep], Timing]


def gpu_timer(timer: str = "auto", rep_ms: float = 100) -> Timer:
    """do_bench (L2 flushed), or the CUDA-graph timer for short compute-bound forward kernels (see
    timing.py). Backward passes go through autograd, and memory-bound sweeps report HBM GB/s, which a
    graph's warm L2 would inflate (LayerNorm at 4096 x 2048 bf16 is 32 MB: it fits an H100's 50 MB L2):
    both always do_bench."""
    def run(fn: Callable[[], Any], sweep: Sweep) -> Timing:
        graph_ok = sweep.direction == "fwd" and sweep.bound == "compute"
        return time_gpu(fn, timer=timer if graph_ok else "do_bench", rep_ms=rep_ms)

    return run


def _as_tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def make_thunk(sweep: Sweep, fn: Callable, inputs: dict[str, torch.Tensor], douts: tuple | None) -> Callable[[], tuple]:
    """What is timed for this direction; it returns what is checked."""
    if sweep.direction == "fwd":
        return lambda: _as_tuple(fn(inputs))
    wrt = [inputs[n] for n in sweep.wrt]
    if sweep.direction == "bwd":
        outs = _as_tuple(fn(inputs))  # forward once, outside the timing
        return lambda: torch.autograd.grad(outs, wrt, douts[:len(outs)], retain_graph=True, allow_unused=True)
    return lambda: torch.autograd.grad(_as_tuple(fn(inputs)), wrt, douts, allow_unused=True)


def make_inputs(sweep: Sweep, p: dict[str, Any], device: torch.device, fp32: dict | None = None) -> dict:
    base = sweep.setup(p, device) if fp32 is None else fp32
    grad = sweep.direction != "fwd"
    out = {}
    for k, v in base.items():
        v = v.detach()
        if fp32 is not None and v.is_floating_point():
            v = v.float()
        out[k] = v.requires_grad_(grad and k in sweep.wrt)
    return out


def upstream_grads(sweep: Sweep, inputs: dict[str, torch.Tensor]) -> tuple | None:
    """The fixed upstream gradient of a backward pass (None forward), shaped like the reference's outputs."""
    if sweep.direction == "fwd":
        return None
    probe = _as_tuple(sweep.reference({k: v.detach() for k, v in inputs.items()}))
    return tuple(torch.randn_like(o) for o in probe)


def error(outs: tuple, ref: tuple) -> tuple[float, float]:
    """(worst max|out - ref| / max|ref|, worst max|out - ref|) over the outputs that exist."""
    rel = absolute = 0.0
    for o, r in zip(outs, ref, strict=True):
        if o is None or r is None:
            continue
        diff = (o.float() - r.float()).abs().max().item()
        if diff != diff:  # NaN
            return float("inf"), float("inf")
        rel = max(rel, diff / max(r.float().abs().max().item(), 1e-6))
        absolute = max(absolute, diff)
    return rel, absolute


def skip_reason(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f"{type(e).__name__}: {first[:200]}"


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_peak(device: torch.device) -> int:
    """Start a peak-memory window on a GPU; returns what is allocated now (the inputs)."""
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _peak_since(device: torch.device, before: int) -> int | None:
    """Bytes the first call (warm-up included) allocated at its peak on top of the inputs; None off-GPU."""
    return torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else None


def _do_bench_median(r: dict[str, Any]) -> float:
    """A record's L2-flushed do_bench median: its own median, or the one a CUDA-graph re-timing kept."""
    return (r.get("timer_note") or {}).get("do_bench_median_s", r["median_s"])


def point_speedups(ours: dict[str, Any], others: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Our speedup over each baseline at one point, like for like: the timer is picked per provider (a CUDA
    graph, L2 warm, below 20 us), so when ours and a baseline were timed differently both do_bench medians
    (L2 flushed, every provider has one) are compared instead of a warm time with a flushed one."""
    out: dict[str, float] = {}
    for name, r in others.items():
        same = r["timer"] == ours["timer"]
        o, b = (ours["median_s"], r["median_s"]) if same else (_do_bench_median(ours), _do_bench_median(r))
        out.update(metrics.speedups(o, {name: b}))
    return out


def _reference(sweep: Sweep, p: dict[str, Any], device: torch.device, base: dict, douts: tuple | None
               ) -> tuple | None:
    """The fp32 outputs (or gradients) every provider is checked against; None when they do not fit
    (fp32 copies of a 34 GB decode cache, say)."""
    try:
        ref_in = make_inputs(sweep, p, device, fp32=base)
        ref = make_thunk(sweep, sweep.reference, ref_in, tuple(d.float() for d in douts) if douts else None)()
        return tuple(r.detach() if r is not None else None for r in ref)
    except torch.cuda.OutOfMemoryError:
        _free(device)
        return None


def run_point(sweep: Sweep, p: dict[str, Any], device: torch.device, timer: Timer, peak: DevicePeak | None,
              log: Callable[[str], None] = print) -> tuple[list[dict], list[dict], list[str]]:
    """All providers at one point: (records, skipped, failures of our kernel)."""
    records, skipped, failures = [], [], []
    names = {prov: f"{sweep.name}/{prov}/{sweep.x_name}={p['x']}" for prov in sweep.providers}
    try:
        base = make_inputs(sweep, p, device)
        douts = upstream_grads(sweep, base)
    except torch.cuda.OutOfMemoryError as e:  # the point does not fit this GPU at all
        _free(device)
        return [], [{"name": n, "reason": f"inputs do not fit: {skip_reason(e)}"} for n in names.values()], []
    ref = _reference(sweep, p, device, base, douts)
    if ref is None:
        log(f"{sweep.name} {sweep.x_name}={p['x']}: the fp32 reference does not fit beside the inputs; "
            "timed without an accuracy check")
    errs: dict[str, tuple[float, float]] = {}
    for prov, fn in sweep.providers.items():
        name = names[prov]
        reason = sweep.skip(p, prov)
        if reason:
            skipped.append({"name": name, "reason": reason})
            continue
        try:
            thunk, first_s, peak_mem, err = _first_call(sweep, fn, device, (base, douts),
                                                        None if prov in sweep.unchecked else ref)
            if err is not None:
                errs[prov] = err
            timing = timer(thunk, sweep)
        except Exception as e:  # a provider that cannot run here is skipped, ours failing is a failure
            _free(device)
            skipped.append({"name": name, "reason": skip_reason(e)})
            if prov == OURS and not isinstance(e, torch.cuda.OutOfMemoryError):
                failures.append(f"{name}: {skip_reason(e)}")
            continue
        finally:
            sweep.reset()
        records.append(_record(sweep, p, name, prov, timing, first_s, peak_mem, err, peak))
    failures += _judge_point(sweep, records, errs)
    for r in records:
        log(format_record(r))
    return records, skipped, failures


def _first_call(sweep: Sweep, fn: Callable, device: torch.device, inputs: tuple[dict, tuple | None],
                ref: tuple | None) -> tuple[Callable[[], Any], float, int | None, tuple[float, float] | None]:
    """One provider's first call at one point: (the thunk to time, the call's seconds, its peak memory, its
    error against ``ref``; None without one)."""
    base, douts = inputs
    # The first call (compile, autotune; for a backward the forward too) is the warm-up the record
    # reports: the timer's own warm-up call comes after it and would only time a steady-state call.
    t0 = time.perf_counter()
    mem0 = _reset_peak(device)
    thunk = make_thunk(sweep, fn, base, douts)
    out = thunk()
    sync(device)
    first_s = time.perf_counter() - t0
    peak_mem = _peak_since(device, mem0)
    err = error(out, ref) if ref is not None else None
    del out
    return thunk, first_s, peak_mem, err


def _record(sweep: Sweep, p: dict[str, Any], name: str, prov: str, timing: Timing, first_s: float,
            peak_mem: int | None, err: tuple[float, float] | None, peak: DevicePeak | None) -> dict[str, Any]:
    """A provider's record at one point; tolerance, accuracy and speedups are filled in by ``_judge_point``."""
    med = timing.median_s
    flops, nbytes = sweep.flops(p), sweep.nbytes(p)
    return {
        "name": name, "sweep": sweep.name, "kernel": sweep.kernel, "direction": sweep.direction,
        "provider": prov, "params": {k: v for k, v in p.items() if k != "x"}, "x_name": sweep.x_name,
        # 5 significant digits: CUDA events resolve ~0.5 us, and a full suite keeps ~10^5 samples
        "x": p["x"], "samples": [float(f"{x:.5g}") for x in timing.samples],
        "timer": timing.timer, "l2": timing.l2,
        "warmup_s": first_s, "peak_memory_bytes": peak_mem, "median_s": med, "q20_s": timing.quantile(0.2),
        "q80_s": timing.quantile(0.8), "flops": flops, "bytes": nbytes,
        **metrics.derive(med, flops, nbytes, sweep.bound, peak, sweep.dtype), "bound": sweep.bound,
        "max_abs_err": err[1] if err is not None else None,
        "max_err": err[0] if err is not None else None, "tolerance": None, "accurate": None, "speedup": {},
        **({"do_bench_samples": [float(f"{x:.5g}") for x in timing.extra.pop("do_bench_samples")]}
           if "do_bench_samples" in timing.extra else {}),
        **({"timer_note": timing.extra} if timing.extra else {}),
    }


def _judge_point(sweep: Sweep, records: list[dict[str, Any]], errs: dict[str, tuple[float, float]]) -> list[str]:
    """Accuracy against the tolerance (twice the best baseline's error, never below the dtype's floor) and our
    speedups, written into ``records``; returns our kernel's accuracy failures."""
    failures = []
    baseline_errs = [e[0] for prov, e in errs.items() if not is_ours(prov)]
    tol = max(ERR_FLOOR.get(sweep.dtype, 1e-4), 2 * min(baseline_errs) if baseline_errs else 0.0)
    by_prov = {r["provider"]: r for r in records}
    for r in records:
        if r["max_err"] is not None:
            r["tolerance"], r["accurate"] = tol, r["max_err"] <= tol
            if r["provider"] == OURS and not r["accurate"]:
                failures.append(f"{r['name']}: error {r['max_err']:.3g} > tolerance {tol:.3g}")
    if OURS in by_prov:
        ours = by_prov[OURS]
        ours["speedup"] = point_speedups(ours, {k: v for k, v in by_prov.items() if k != OURS})
    for r in records:
        if r["max_err"] is not None and not math.isfinite(r["max_err"]):  # NaN/inf output: keep the JSON strict
            r.update(max_err=None, max_abs_err=None, nonfinite_output=True)
    return failures


def format_record(r: dict[str, Any]) -> str:
    metric = f"{r['tflops']:8.1f} TFLOP/s" if r["bound"] == "compute" and r["tflops"] else \
        f"{r['gbs'] or 0:8.1f} GB/s   "
    frac = f"{r['peak_fraction']:6.1%}" if r["peak_fraction"] is not None else "     -"
    acc = "-" if r["accurate"] is None else ("ok" if r["accurate"] else "FAIL")
    err = f"{r['max_err']:.1e}" if r["max_err"] is not None else "   -   "
    sp = " ".join(f"{k} {v:.2f}x" for k, v in r["speedup"].items())
    return (f"{r['sweep']:<38} {r['x_name']}={r['x']:<6} {r['provider']:<21} {r['median_s'] * 1e6:10.1f} us "
            f"{metric} {frac} err {err} {acc:<4} {sp}")


def run_sweeps(sweeps: list[Sweep], *, device: torch.device, timer: Timer, peak: DevicePeak | None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every point of every sweep; the ``sweeps``/``benchmarks``/``skipped`` part of a result."""
    out: dict[str, Any] = {"sweeps": [], "benchmarks": [], "skipped": [], "failures": []}
    for s in sweeps:
        out["sweeps"].append({"sweep": s.name, "kernel": s.kernel, "title": s.title, "x_name": s.x_name,
                              "metric": s.metric, "direction": s.direction, "dtype": s.dtype})
        for p in s.points:
            recs, skipped, failures = run_point(s, p, device, timer, peak, log)
            out["benchmarks"] += recs
            out["skipped"] += skipped
            out["failures"] += failures
            _free(device)
    return out


def run_suite(sweeps: list[Sweep], *, device: torch.device, timer: Timer, peak: DevicePeak | None,
              out_dir: str | Path | None = "bench/results", report: bool = False,
              log: Callable[[str], None] = print) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Environment capture around the sweeps, then the result file, history, plots (and report).
    Returns (result, failures of our kernels, written paths)."""
    from tritongpt.engine.environment import EnvironmentRecorder, format_environment_line, throttle_warning
    from tritongpt.kernels.tma import device_capability

    from .kernel_paths import describe
    from .results import result_document

    result = result_document("kernels", {})  # "created": when the suite started
    # Which TMA variant the triton-tma* providers time here (warp-specialized or not), for the reader.
    result["kernel_paths"] = describe(device_capability(device))
    with EnvironmentRecorder(device) as recorder:
        log(format_environment_line(recorder.environment()))
        log("kernel paths: " + ", ".join(f"{k} {v}" for k, v in result["kernel_paths"].items()))
        body = run_sweeps(sweeps, device=device, timer=timer, peak=peak, log=log)
    env = recorder.environment()
    failures = body.pop("failures")
    result.update(environment=env, **body)
    warning = throttle_warning(env)
    if warning:
        print(warning, file=sys.stderr)
    paths: dict[str, Any] = {}
    if out_dir:
        from . import results

        paths = results.save(result, out_dir)
        log(f"wrote {paths['json']}, {len(paths['plots'])} plot(s), history {paths['history']}")
        if report:
            from . import report as rep

            rep.main([paths["json"]], results_dir=paths["json"].parent, out=None)
            paths["report"] = paths["json"].parent / "REPORT.md"
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    return result, failures, paths


def list_sweeps(sweeps: list[Sweep]) -> str:
    """Every point of every sweep with its FLOPs, minimum bytes and roofline floor on the two reference
    GPUs: what a run will measure, and the times no kernel can beat. Needs no GPU."""
    from tritongpt.engine.gpu_peaks import A100, H100, roofline_seconds

    lines = [f"{'sweep':<40} {'point':<14} {'GFLOP':>9} {'MB':>9} {'floor H100 us':>14} {'floor A100 us':>14}"
             "  providers"]
    for s in sweeps:
        for p in s.points:
            f, b = s.flops(p) or 0.0, s.nbytes(p)
            lines.append(f"{s.name:<40} {s.x_name + '=' + str(p['x']):<14} {f / 1e9:>9.2f} {b / 1e6:>9.1f} "
                         f"{roofline_seconds(f, b, H100) * 1e6:>14.2f} {roofline_seconds(f, b, A100) * 1e6:>14.2f}"
                         f"  {', '.join(s.providers)}")
    lines.append(f"{len(sweeps)} sweeps, {sum(len(s.points) for s in sweeps)} points, "
                 f"{sum(len(s.points) * len(s.providers) for s in sweeps)} measurements")
    return "\n".join(lines)


def main(kernels: tuple[str, ...], *, quick: bool = False, dtypes: tuple[str, ...] = ("bfloat16", "float16"),
         timer: str = "auto", rep_ms: float = 100, out_dir: str | Path | None = "bench/results",
         report: bool = False, list_only: bool = False) -> int:
    from . import kernel_cases

    try:  # arguments first: a typo is reported as such on any machine
        sweeps = kernel_cases.default_sweeps(kernels, quick=quick, dtypes=dtypes)
    except ValueError as e:
        print(f"error: --kernels: {e}", file=sys.stderr)
        return 2
    if list_only:
        print(list_sweeps(sweeps))
        return 0
    if not torch.cuda.is_available():
        print(GPU_REQUIRED, file=sys.stderr)
        return 2
    from tritongpt.engine.gpu_peaks import lookup

    device = torch.device("cuda", torch.cuda.current_device())
    gpu = torch.cuda.get_device_name(device)
    peak = lookup(gpu)
    if peak is None:
        print(f"note: {gpu!r} is not in bench/devices.py: no fraction of peak is reported", file=sys.stderr)
    _, failures, _ = run_suite(sweeps, device=device, timer=gpu_timer(timer, rep_ms), peak=peak, out_dir=out_dir,
                               report=report)
    return 1 if failures else 0
