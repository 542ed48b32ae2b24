"""Environment report: versions and the device (NVIDIA details through nvidia-ml-py)."""

from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "not installed"


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _nvml(index: int) -> dict[str, Any]:
    """Clocks, power, temperature via NVML; empty if NVML is unavailable."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return {}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        info: dict[str, Any] = {"driver": pynvml.nvmlSystemGetDriverVersion()}
        for key, fn, arg in (
            ("sm_clock_mhz", pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
            ("sm_clock_max_mhz", pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
            ("mem_clock_mhz", pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
            ("mem_clock_max_mhz", pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM),
        ):
            try:
                info[key] = fn(h, arg)
            except pynvml.NVMLError:
                pass
        try:
            info["power_w"] = pynvml.nvmlDeviceGetPowerUsage(h) / 1000
            info["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000
            info["temperature_c"] = pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
        except pynvml.NVMLError:
            pass
        return info
    finally:
        pynvml.nvmlShutdown()


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
        from tritongpt.kernels._interpreter import interpreter_enabled

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
            lines.append(f"{'power':>10}: {dev['power_w']:.0f}/{dev['power_limit_w']:.0f} W, {dev['temperature_c']} C")
    else:
        lines.append(f"{'device':>10}: CPU ({dev['name']}, {dev['cores']} threads), {dev['kernels']}")
    return "\n".join(lines)
