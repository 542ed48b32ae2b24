"""pytest-benchmark set up for GPU kernels (``pytest bench/ --benchmark-only``; see README, "GPU CI").

- The timer synchronises the GPU (``tritongpt.bench.pytest_gpu.synced_perf_counter``) unless
  ``--benchmark-timer`` was given.
- ``machine_info["gpu"]`` names the GPU, driver and versions, so a saved run says where it ran and
  ``--benchmark-compare`` warns when base and head ran on different GPUs.
- A saved run also carries ``environment``: the GPU's NVML state before and after, ``throttled`` included.
- Without CUDA every benchmark here is skipped, with a pointer to what works on a CPU.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch

from tritongpt.bench import pytest_gpu

TIMER = "tritongpt.bench.pytest_gpu.synced_perf_counter"
NO_GPU = "kernel benchmarks need a CUDA GPU; on CPU use `tritongpt inspect` (compile-only) — see README"
HERE = Path(__file__).resolve().parent
_RECORDER = pytest.StashKey[Any]()
_ENV = pytest.StashKey[dict]()


def _timer_given(config: pytest.Config) -> bool:
    """Whether the user chose a timer: on the command line, in PYTEST_ADDOPTS or in the ini addopts.
    The option's value alone cannot tell an explicit ``--benchmark-timer=time.perf_counter`` from the default."""
    args = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    try:
        args += list(config.getini("addopts"))
    except ValueError:
        pass
    return any(str(a) == "--benchmark-timer" or str(a).startswith("--benchmark-timer=") for a in args)


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's (trylast) configure builds its session from the options
def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "benchmark_timer") and not _timer_given(config):
        config.option.benchmark_timer = TIMER


def _gpu_index() -> int:
    return torch.cuda.current_device() if torch.cuda.is_available() else 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NO_GPU)
    for item in items:  # this hook sees the whole session: only this folder's benchmarks are ours to skip
        if HERE in Path(item.path).resolve().parents and "benchmark" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    info = pytest_gpu.machine_info(_gpu_index())
    info.pop("nvml", None)  # clocks, power, temperature: in ``environment``, not in what compare checks
    machine_info["gpu"] = info
    # The CPU's current clock changes between two runs on one machine; left in, compare would always warn.
    cpu = machine_info.get("cpu")
    if isinstance(cpu, dict):
        for key in ("hz_actual", "hz_actual_friendly"):
            cpu.pop(key, None)


def pytest_sessionstart(session: pytest.Session) -> None:
    if not torch.cuda.is_available():
        return
    from tritongpt.engine.environment import EnvironmentRecorder

    session.config.stash[_RECORDER] = EnvironmentRecorder(torch.device("cuda", _gpu_index())).start()


def _environment(config: pytest.Config) -> dict | None:
    """The run's environment, the "after" snapshot taken on the first call (the benchmarks are over by then)."""
    if _ENV not in config.stash:
        recorder = config.stash.get(_RECORDER, None)
        if recorder is None:
            return None
        recorder.stop()
        config.stash[_ENV] = recorder.environment()
    return config.stash[_ENV]


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict[str, Any]) -> None:
    env = _environment(config)
    if env is not None:
        output_json["environment"] = env


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    env = _environment(config)
    if not env:
        return
    from tritongpt.engine.environment import throttle_warning

    warning = throttle_warning(env)
    if warning:
        terminalreporter.write_line(warning, red=True, bold=True)
