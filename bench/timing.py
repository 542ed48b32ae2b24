"""GPU timers for the kernel suites: every raw sample kept, warm-up timed apart.

``time_gpu(fn)`` picks the timer by the kernel's length:

- ``do_bench`` (``triton.testing.do_bench``, ``return_mode="all"``): CUDA events around each call,
  the L2 cache flushed before each call, so a kernel is timed reading from HBM as it would in a model.
- ``cuda_graph``: for kernels under ~20 us, where the CPU launch cost (~5 us) and event resolution
  blur do_bench, ``n`` calls are captured in one CUDA graph and each replay gives one sample
  (replay time / n). The L2 is not flushed between the calls of a replay (a flush would cost more
  than the kernel): these samples are L2-warm, and the record says so (``l2: "warm"``).

The first call (Triton compile, autotune, torch.compile) is timed on its own with a wall clock and
reported as ``warmup_s``; it never enters the samples.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

GRAPH_BELOW_S = 20e-6  # kernels faster than this are timed with the CUDA-graph timer


@dataclass
class Timing:
    samples: list[float]  # seconds, every timed run
    timer: str  # "do_bench" | "cuda_graph" | "wall"
    l2: str  # "flushed" | "warm"
    warmup_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples)

    def quantile(self, q: float) -> float:
        return quantile(self.samples, q)


def quantile(xs: list[float], q: float, *, method: str = "linear") -> float:
    """The ``q`` quantile (0..1) of ``xs``, at rank ``q * (n - 1)`` of the sorted samples.

    ``method="linear"`` interpolates between the two ranks around it (the definition numpy and Triton use):
    the kernel suites' ``q20_s``/``q80_s`` and ``bench serve``'s percentiles. ``method="nearest"`` takes the
    sample at the rank rounded half up, so the figure is always one measured sample: the wall-clock records
    (``add_record``: generate, train, serve) and ``bench generate``'s ITL p50/p90 are defined that way in
    every result file, and comparing files across versions needs the definition to stay fixed.
    """
    if not xs:
        raise ValueError("quantile of no samples")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q: expected 0..1, got {q}")
    if method not in ("linear", "nearest"):
        raise ValueError(f"method: expected linear or nearest, got {method!r}")
    s = sorted(xs)
    pos = q * (len(s) - 1)
    if method == "nearest":
        return s[min(len(s) - 1, int(pos + 0.5))]
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def sync(device: torch.device | None = None) -> None:
    """Wait for the work queued on ``device`` (None: the current CUDA device), so that a
    host clock read next includes it. A CPU device has nothing queued: its ops return when done."""
    import torch

    if device is None:
        torch.cuda.synchronize()
    elif device.type == "cuda":
        torch.cuda.synchronize(device)


def _warmup(fn: Callable[[], Any]) -> float:
    """Wall time of the first call: compile + autotune + one run."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def _events_loop(fn: Callable[[], Any], rep_ms: float, flush: bool) -> list[float]:
    """What do_bench does, for Tritons whose do_bench cannot return every sample."""
    import torch

    cache = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda") if flush else None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        fn()
    end.record()
    sync()
    estimate = max(start.elapsed_time(end) / 5, 1e-3)
    n = max(3, int(rep_ms / estimate))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        if cache is not None:
            cache.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    sync()
    return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends, strict=True)]


def do_bench_samples(fn: Callable[[], Any], warmup_ms: float = 25, rep_ms: float = 100,
                     grad_to_none: list | None = None) -> list[float]:
    """Every per-call time (seconds) from triton.testing.do_bench with its L2 flush."""
    import triton.testing

    try:
        ms = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, grad_to_none=grad_to_none,
                                     return_mode="all")
    except (AssertionError, TypeError, ValueError):  # Tritons without return_mode="all"
        return _events_loop(fn, rep_ms, flush=True)
    return [float(t) * 1e-3 for t in ms]


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Python's GC off during a capture: a collected Triton kernel object unloads its module, which
    invalidates the capture in progress (Triton's own do_bench_cudagraph guards against the same)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def cuda_graph_samples(fn: Callable[[], Any], rep_ms: float = 20, replays: int = 30) -> tuple[list[float], int]:
    """Samples of one call's time (seconds) from replays of a graph of ``n`` unrolled calls."""
    import torch

    caller = torch.cuda.current_stream()
    stream = torch.cuda.Stream()
    stream.wait_stream(caller)
    try:
        with torch.cuda.stream(stream):
            for _ in range(3):  # allocator and lazy init outside the capture
                fn()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(10):
                fn()
            end.record()
            stream.synchronize()
            estimate_ms = max(start.elapsed_time(end) / 10, 1e-4)
            n = int(min(max(rep_ms / estimate_ms, 10), 2000))
            graph = torch.cuda.CUDAGraph()
            with no_gc(), torch.cuda.graph(graph, stream=stream):
                for _ in range(n):
                    fn()
            graph.replay()
            stream.synchronize()
            out = []
            for _ in range(replays):
                start.record()
                graph.replay()
                end.record()
                stream.synchronize()
                out.append(start.elapsed_time(end) * 1e-3 / n)
    finally:  # a capture that fails falls back to do_bench: the caller's stream must still wait for this one
        caller.wait_stream(stream)
    return out, n


def time_gpu(fn: Callable[[], Any], *, timer: str = "auto", warmup_ms: float = 25, rep_ms: float = 100,
             grad_to_none: list | None = None) -> Timing:
    """Time ``fn`` on the current CUDA device. ``timer``: "auto" (graph below 20 us), "do_bench",
    "cuda_graph". A function that cannot be captured (host syncs, allocations that the graph pool
    refuses) falls back to do_bench, and the Timing says so."""
    if timer not in ("auto", "do_bench", "cuda_graph"):
        raise ValueError(f"timer: expected auto, do_bench or cuda_graph, got {timer!r}")
    warm = _warmup(fn)
    samples = do_bench_samples(fn, warmup_ms, rep_ms, grad_to_none)
    extra: dict[str, Any] = {}
    use_graph = timer == "cuda_graph" or (timer == "auto" and statistics.median(samples) < GRAPH_BELOW_S)
    if use_graph and grad_to_none is None:
        try:
            graph_samples, n = cuda_graph_samples(fn, rep_ms=min(rep_ms, 20))
        except RuntimeError as e:  # not capturable: keep the do_bench samples
            extra["graph_error"] = str(e).splitlines()[0][:200]
        else:  # the do_bench samples stay: compare falls back on them when another run used do_bench
            extra.update(graph_calls=n, do_bench_median_s=statistics.median(samples), do_bench_samples=samples)
            return Timing(graph_samples, "cuda_graph", "warm", warm, extra)
    return Timing(samples, "do_bench", "flushed", warm, extra)


def time_wall(fn: Callable[[], Any], *, repeats: int = 10, sync: Callable[[], None] | None = None) -> Timing:
    """Wall-clock timer (CPU runs and tests): warm-up call, then ``repeats`` timed calls."""
    if repeats < 2:
        raise ValueError(f"repeats: expected >= 2 (a sample distribution), got {repeats}")
    sync = sync or (lambda: None)
    t0 = time.perf_counter()
    fn()
    sync()
    warm = time.perf_counter() - t0
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return Timing(out, "wall", "warm", warm)
