"""Environment report: versions and the device (NVIDIA details through nvidia-ml-py)."""

from __future__ import annotations

import importlib.metadata as md
import platform
from typing import Any

import torch


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "not installed"


def git_commit() -> str | None:
    from .environment import git_state

    return git_state()[0]


def _nvml(index: int) -> dict[str, Any]:
    """Clocks, power, temperature, clock-event reasons via NVML; empty if NVML is unavailable."""
    from .environment import nvml_for_device

    snap = nvml_for_device(index) or {}
    snap.pop("name", None)  # the device name comes from torch
    return snap


def environment() -> dict[str, Any]:
    """Versions and device facts as a JSON-able dict."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "tiktoken": _version("tiktoken"),
        "tritongpt": _version("tritongpt"),
        "git_commit": git_commit(),
        "cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        p = torch.cuda.get_device_properties(i)
        env["device"] = {
            "type": "cuda",
            "name": p.name,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "compute_capability": f"{p.major}.{p.minor}",
            "sm_count": p.multi_processor_count,
            **_nvml(i),
        }
    else:
        from tritongpt.kernels.interpreter import interpreter_enabled

        env["device"] = {
            "type": "cpu",
            "name": platform.processor() or platform.machine(),
            "cores": torch.get_num_threads(),
            # Without a GPU the Triton kernels run on the interpreter (tests set TRITON_INTERPRET=1).
            "kernels": "Triton interpreter" + ("" if interpreter_enabled() else " (enable: TRITON_INTERPRET=1)"),
        }
    return env


def format_environment(env: dict[str, Any]) -> str:
    lines = [f"{k:>10}: {env[k]}" for k in ("python", "torch", "triton", "tiktoken", "tritongpt", "git_commit")]
    dev = env["device"]
    if dev["type"] == "cuda":
        lines.append(f"{'device':>10}: CUDA {dev['name']}, {dev['memory_gib']} GiB, "
                     f"compute capability {dev['compute_capability']}, {dev['sm_count']} SMs")
        if "sm_clock_mhz" in dev:
            lines.append(f"{'clocks':>10}: SM {dev['sm_clock_mhz']}/{dev.get('sm_clock_max_mhz')} MHz, "
                         f"memory {dev.get('mem_clock_mhz')}/{dev.get('mem_clock_max_mhz')} MHz, "
                         f"driver {dev.get('driver')}")
        if "power_w" in dev:
            limit = f"/{dev['power_limit_w']:.0f}" if "power_limit_w" in dev else ""
            temp = f", {dev['temperature_c']} C" if "temperature_c" in dev else ""
            lines.append(f"{'power':>10}: {dev['power_w']:.0f}{limit} W{temp}")
        if "clock_event_reason_names" in dev:
            lines.append(f"{'clk events':>10}: {', '.join(dev['clock_event_reason_names']) or 'none'}")
    else:
        lines.append(f"{'device':>10}: CPU ({dev['name']}, {dev['cores']} threads), {dev['kernels']}")
    return "\n".join(lines)
