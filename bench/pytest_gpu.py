"""Helpers of the pytest-benchmark suite (``pytest bench/ --benchmark-only``): the same kernel sweeps as
``tritongpt bench kernels``, timed by pytest-benchmark so that ``--benchmark-compare-fail`` can gate a GPU CI job.

pytest-benchmark times a round with a host clock around ``iterations`` calls. GPU work is asynchronous, so the
timer here synchronises the device before reading the clock: a round's time then covers the GPU work it queued.
The calls per round come from the roofline, not from a calibration, so that base and head of an A/B comparison
run exactly the same loop.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from tritongpt.engine.environment import nvml_for_device, software
from tritongpt.engine.gpu_peaks import H100, DevicePeak, roofline_seconds

from .kernel_cases import Sweep

ROUND_S = 1e-3  # target GPU time per round at the roofline: well above the ~10 us sync + clock cost
MAX_CALLS = 1000
FULL_ENV = "TRITONGPT_BENCH_FULL"  # =1: the full sweeps instead of the quick (CI) set

_sync: Callable[[], None] | None = None


def synced_perf_counter() -> float:
    """``torch.cuda.synchronize()`` (when CUDA is available), then ``time.perf_counter()``.

    Used as ``--benchmark-timer``: the start of a round waits for earlier work, the end for the round's own."""
    global _sync
    if _sync is None:  # resolved once: is_available() is not free, and the timer runs twice per round
        _sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    _sync()
    return time.perf_counter()


def calls_per_round(sweep: Sweep, point: dict[str, Any], peak: DevicePeak | None = None) -> int:
    """ceil(1 ms / the point's roofline floor on ``peak`` (H100 when unknown)), within [1, 1000].

    Deterministic by design: a calibrated count would differ between base and head, and so would the share of
    per-round overhead in their times."""
    peak = peak or H100
    floor = roofline_seconds(sweep.flops(point) or 0.0, sweep.nbytes(point) or 0.0, peak)
    if floor <= 0:
        return MAX_CALLS
    return max(1, min(MAX_CALLS, math.ceil(ROUND_S / floor)))


def _versions() -> dict[str, Any]:
    sw = software()
    return {k: sw.get(k) for k in ("torch", "triton", "cuda")}


def _nvml(index: int) -> dict[str, Any] | None:
    try:  # by UUID: NVML counts every GPU, torch only those CUDA_VISIBLE_DEVICES shows
        return nvml_for_device(torch.device("cuda", index))
    except Exception:  # a broken NVML must not stop the benchmarks; the record just lacks the snapshot
        return None


def machine_info(gpu_index: int = 0) -> dict[str, Any]:
    """The GPU a run used and the software that drove it; ``gpu`` is None without CUDA.

    ``nvml`` is the GPU's state now (clocks, power, temperature): it changes from run to run, so the conftest
    keeps it out of pytest-benchmark's ``machine_info`` (which its compare checks for equality)."""
    info: dict[str, Any] = {"gpu": None, "compute_capability": None, "memory_gib": None, "driver": None,
                            **_versions(), "nvml": None}
    if not torch.cuda.is_available():
        return info
    props = torch.cuda.get_device_properties(gpu_index)
    nvml = _nvml(gpu_index)
    info.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}",
                memory_gib=round(props.total_memory / 2**30, 1), driver=(nvml or {}).get("driver"), nvml=nvml)
    return info


def case_id(sweep: Sweep, point: dict[str, Any], provider: str) -> str:
    """The record name of ``tritongpt bench kernels``: ``<sweep>/<provider>/<x_name>=<x>``."""
    return f"{sweep.name}/{provider}/{sweep.x_name}={point['x']}"


def full_sweeps_requested() -> bool:
    return os.environ.get(FULL_ENV, "").strip().lower() in ("1", "true", "yes")


def case_params(quick: bool | None = None) -> list[tuple[str, Sweep, dict[str, Any], str]]:
    """(id, sweep, point, provider) for every provider at every point of ``default_sweeps``.

    ``quick`` None: the quick set unless ``TRITONGPT_BENCH_FULL=1``."""
    from .kernel_cases import default_sweeps

    if quick is None:
        quick = not full_sweeps_requested()
    out = []
    for sweep in default_sweeps(quick=quick):
        for point in sweep.points:
            for provider in sweep.providers:
                out.append((case_id(sweep, point, provider), sweep, point, provider))
    return out
