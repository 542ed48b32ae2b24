"""Peak memory of one call, on a GPU or a CPU, and the largest batch that fits a memory budget.

On CUDA the caching allocator counts every byte (``torch.cuda.max_memory_allocated``). A CPU has no such
counter, so the profiler's allocation events are replayed in order (``profile_memory=True``): they include
buffers allocated inside custom ops, which a ``TorchDispatchMode`` cannot see. Both give bytes allocated at
the call's peak on top of what was live when it started; ``resident_bytes`` counts what was live (weights,
gradients, optimizer state, the batch) so the two add up to the footprint that must fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

SIZE_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9}


def parse_size(text: str, name: str) -> int:
    """``512MiB``, ``20GiB``, ``1.5GB`` or a byte count: bytes; ValueError naming ``name`` otherwise."""
    s = str(text).strip().lower().replace(" ", "")
    num = s.rstrip("kmgib")
    unit = s[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in SIZE_UNITS or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}: expected a size such as 512MiB, 20GiB or a byte count, got {text!r}")
    return int(value * SIZE_UNITS[unit])


def cpu_allocations(fn: Callable[[], Any]) -> list[int]:
    """Every CPU allocation (+bytes) and free (-bytes) made while ``fn()`` runs, in order, custom ops' buffers
    included (the profiler's raw memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:  # the raw events: FunctionEvent lists fold allocations into the op that made them
        events = prof.profiler.kineto_results.events()
    except AttributeError as e:  # pragma: no cover - a torch without the kineto result object
        raise RuntimeError(f"this torch ({torch.__version__}) exposes no profiler memory events; CPU memory "
                           "figures need them") from e
    return [e.nbytes() for e in sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns())]


def _cpu_step_peak(fn: Callable[[], Any]) -> int:
    live = peak = 0
    for n in cpu_allocations(fn):
        live += n
        peak = max(peak, live)
    return peak


def step_peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Bytes allocated at the peak of ``fn()`` above what was allocated when it started."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return _cpu_step_peak(fn)


def resident_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (non-tensors skipped; views counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            st = t.untyped_storage()
            seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
    return sum(seen.values())


def largest_fitting(fits: Callable[[int], bool], start: int, cap: int) -> tuple[int, list[tuple[int, bool]]]:
    """The largest n in [1, cap] with ``fits(n)``, for a ``fits`` that is monotone (true up to some n, false
    past it): doubles from ``start`` until a failure or ``cap``, then bisects. Returns (n, the probes made);
    n = 0 when not even 1 fits."""
    probes: list[tuple[int, bool]] = []

    def probe(n: int) -> bool:
        ok = bool(fits(n))
        probes.append((n, ok))
        return ok

    start = max(1, min(start, cap))
    lo, hi = 0, cap + 1  # lo fits (0: trivially), hi does not (cap + 1: never probed)
    if probe(start):
        lo = start
        while lo < cap:
            n = min(2 * lo, cap)
            if not probe(n):
                hi = n
                break
            lo = n
    else:
        hi = start
    while hi - lo > 1 and lo < cap:
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return lo, probes
