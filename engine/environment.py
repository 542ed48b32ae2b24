"""The environment a run happened in (``tritongpt info``; a benchmark suite's, captured before and after it,
schema ``tritongpt-bench/1``).

NVML (``nvidia-ml-py``) gives the GPU's clocks, power, temperature and clock-event reasons; a run whose
clocks were held down by power or heat is marked ``throttled``. The reasons NVML reports are instantaneous,
and the "after" snapshot is taken once the GPU has gone quiet, so the cumulative power/thermal violation
counters are read as well: their growth over the run catches throttling that had ended by the snapshot.
Dense GEMM and attention sweeps on a 700 W H100 or a 4090 touch the power cap for moments as a matter of
course, so growth counts as throttling only as a share of the run: power-capped > 10% of the wall time, or
thermally slowed > 1% (``THROTTLE_SHARE``); the shares are kept either way (``throttle_share``).
Software versions and the git commit (with a dirty flag) identify what ran.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

# (name, pynvml constant suffix, bit value when the constant is missing)
_REASONS = (
    ("gpu_idle", "GpuIdle", 0x1),
    ("applications_clocks_setting", "ApplicationsClocksSetting", 0x2),
    ("sw_power_cap", "SwPowerCap", 0x4),
    ("hw_slowdown", "HwSlowdown", 0x8),
    ("sync_boost", "SyncBoost", 0x10),
    ("sw_thermal_slowdown", "SwThermalSlowdown", 0x20),
    ("hw_thermal_slowdown", "HwThermalSlowdown", 0x40),
    ("hw_power_brake_slowdown", "HwPowerBrakeSlowdown", 0x80),
    ("display_clocks_setting", "DisplayClockSetting", 0x100),
)
# Clocks held down by power or heat. Idle, application clocks and sync boost are choices, not throttling.
THROTTLING = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                        "hw_power_brake_slowdown"})
# nvmlDeviceGetViolationStatus policies: cumulative ns the clocks spent below their target for this cause.
_VIOLATIONS = (("power", "NVML_PERF_POLICY_POWER", 0), ("thermal", "NVML_PERF_POLICY_THERMAL", 1))


def reason_names(mask: int, pynvml: Any = None) -> list[str]:
    """Names of the clock-event reason bits set in ``mask``."""
    out = []
    for name, suffix, fallback in _REASONS:
        bit = getattr(pynvml, f"nvmlClocksEventReason{suffix}", None) or \
            getattr(pynvml, f"nvmlClocksThrottleReason{suffix}", None) or fallback
        if mask & bit:
            out.append(name)
    return out


def _str(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)  # pynvml < 11.5 returns bytes


def _handle(pynvml: Any, index: int, uuid: str | None) -> Any:
    """The NVML handle of the GPU with ``uuid``. On a MIG slice CUDA reports the MIG instance's UUID, which
    NVML names ``MIG-...``, not ``GPU-...``; its handle refuses clocks, power and throttle reasons, so the
    physical GPU holding the slice is read instead."""
    if not uuid:
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    try:
        return pynvml.nvmlDeviceGetHandleByUUID(uuid)
    except pynvml.NVMLError:
        if not uuid.startswith("GPU-"):
            raise
    h = pynvml.nvmlDeviceGetHandleByUUID("MIG-" + uuid[4:])
    try:
        return pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(h)
    except (pynvml.NVMLError, AttributeError):
        return h


def nvml_snapshot(index: int = 0, uuid: str | None = None) -> dict[str, Any] | None:
    """The schema's SNAPSHOT for GPU ``uuid`` (else NVML ``index``); None without NVML. A field NVML
    refuses is left out."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no NVML here
        return None
    try:
        try:
            h = _handle(pynvml, index, uuid)
        except pynvml.NVMLError:
            if not uuid:
                return None
            h = pynvml.nvmlDeviceGetHandleByIndex(index)
        snap: dict[str, Any] = {}

        def field(key: str, fn: Any) -> None:
            try:
                snap[key] = fn()
            except (pynvml.NVMLError, AttributeError):  # not supported here, or an older pynvml
                pass

        sm, mem = getattr(pynvml, "NVML_CLOCK_SM", 1), getattr(pynvml, "NVML_CLOCK_MEM", 2)
        field("name", lambda: _str(pynvml.nvmlDeviceGetName(h)))
        field("driver", lambda: _str(pynvml.nvmlSystemGetDriverVersion()))
        field("sm_clock_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(h, sm))
        field("sm_clock_max_mhz", lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, sm))
        field("mem_clock_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(h, mem))
        field("mem_clock_max_mhz", lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, mem))
        field("power_w", lambda: pynvml.nvmlDeviceGetPowerUsage(h) / 1000)  # mW
        field("power_limit_w", lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000)
        field("temperature_c", lambda: pynvml.nvmlDeviceGetTemperature(h, getattr(pynvml, "NVML_TEMPERATURE_GPU", 0)))
        field("pstate", lambda: int(pynvml.nvmlDeviceGetPerformanceState(h)))
        if snap.get("pstate", 32) < 32:
            snap["pstate"] = f"P{snap['pstate']}"
        else:
            snap.pop("pstate", None)  # 32 = NVML_PSTATE_UNKNOWN
        reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            getattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)  # the name before NVML 12.4
        if reasons is not None:
            field("clock_event_reasons", lambda: int(reasons(h)))
            if "clock_event_reasons" in snap:
                snap["clock_event_reason_names"] = reason_names(snap["clock_event_reasons"], pynvml)
        violations: dict[str, int] = {}
        for key, const, fallback in _VIOLATIONS:
            try:
                violations[key] = int(pynvml.nvmlDeviceGetViolationStatus(h, getattr(pynvml, const, fallback))
                                      .violationTime)
            except (pynvml.NVMLError, AttributeError):
                pass
        if violations:
            snap["violation_ns"] = violations
        return snap
    except pynvml.NVMLError:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # nothing to release, or NVML already gone: the snapshot stands
            pass


def nvml_for_device(device: torch.device | str | int | None = None) -> dict[str, Any] | None:
    """NVML snapshot of a CUDA device, found by UUID: torch's index counts only the devices
    CUDA_VISIBLE_DEVICES shows, NVML's counts all of them."""
    if not torch.cuda.is_available():
        return None
    if isinstance(device, int):
        i = device
    else:
        d = torch.device("cuda" if device is None else device)
        i = d.index if d.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
    uuid = str(uuid) if uuid is not None else None
    if uuid and not uuid.startswith(("GPU-", "MIG-")):
        uuid = f"GPU-{uuid}"
    return nvml_snapshot(i, uuid)


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(root: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(short commit, uncommitted changes) of ``root``, by default the source checkout holding this file.
    An installed copy has no pyproject.toml beside its packages: it gets (None, None) rather than the
    commit of whatever repository the environment happens to live in."""
    if root is None:
        root = Path(__file__).resolve().parent.parent
        if not (root / "pyproject.toml").is_file():
            return None, None
    commit = _git(Path(root), "rev-parse", "--short", "HEAD")
    if not commit or not commit.strip():
        return None, None
    # Untracked files are left out: result files written into the checkout would mark every later run dirty.
    status = _git(Path(root), "status", "--porcelain", "--untracked-files=no", "--", ".")
    return commit.strip(), (bool(status.strip()) if status is not None else None)


def software(root: str | Path | None = None) -> dict[str, Any]:
    commit, dirty = git_state(root)
    return {"torch": torch.__version__, "triton": _version("triton"), "cuda": torch.version.cuda,
            "python": platform.python_version(), "commit": commit, "dirty": dirty}


def cpu_model() -> str:
    """The CPU's marketing name where Linux tells it, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


THROTTLE_SHARE = {"power": 0.10, "thermal": 0.01}  # of the run's wall time, see the module docstring


class EnvironmentRecorder:
    """Snapshots around a suite: ``with EnvironmentRecorder(dev) as rec: ...; rec.environment()``."""

    def __init__(self, device: torch.device | str | None = None, root: str | Path | None = None) -> None:
        self.device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        self.root = root
        self.before: dict[str, Any] | None = None
        self.after: dict[str, Any] | None = None
        self._software: dict[str, Any] | None = None
        self._t0: float | None = None
        self._t1: float | None = None

    def _snapshot(self) -> dict[str, Any] | None:
        return nvml_for_device(self.device) if self.device.type == "cuda" else None

    def start(self) -> EnvironmentRecorder:
        self._software = software(self.root)
        self.before = self._snapshot()
        self._t0 = time.monotonic()
        return self

    def stop(self) -> None:
        self._t1 = time.monotonic()
        self.after = self._snapshot()

    def __enter__(self) -> EnvironmentRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def environment(self) -> dict[str, Any]:
        """The schema's ``environment`` object (usable before ``stop``: ``after`` is then None)."""
        cuda = self.device.type == "cuda"
        snaps = [s for s in (self.before, self.after) if s]
        known = [s for s in snaps if "clock_event_reasons" in s]
        reasons = sorted({n for s in known for n in s.get("clock_event_reason_names", []) if n in THROTTLING})
        violated = _violation_ms(self.before, self.after)
        run_ms = ((self._t1 or time.monotonic()) - self._t0) * 1e3 if self._t0 is not None else None
        shares = {k: v / run_ms for k, v in violated.items()} if violated and run_ms else None
        throttled = None if not known and violated is None else \
            bool(reasons) or any(v > THROTTLE_SHARE.get(k, 0.0) for k, v in (shares or {}).items())
        env: dict[str, Any] = {
            "gpu": torch.cuda.get_device_name(self.device) if cuda else None,
            "device": self.device.type,
            **(self._software if self._software is not None else software(self.root)),
            "driver": next((s["driver"] for s in snaps if "driver" in s), None),
            "nvml": {"before": self.before, "after": self.after} if snaps else None,
            "throttled": throttled,
            "throttle_reasons": reasons,
        }
        if violated is not None:
            env["throttle_ms"] = violated  # clocks held down by power / heat during the run
            if shares is not None:
                env["throttle_share"] = {k: round(v, 4) for k, v in shares.items()}
                env["run_s"] = round(run_ms / 1e3, 3)
        if not cuda:
            env["cpu"] = {"model": cpu_model(), "machine": platform.machine(), "threads": torch.get_num_threads()}
        return env


def capture(device: torch.device | str | None = None, root: str | Path | None = None) -> EnvironmentRecorder:
    return EnvironmentRecorder(device, root)


def _violation_ms(before: dict | None, after: dict | None) -> dict[str, float] | None:
    b, a = (before or {}).get("violation_ns"), (after or {}).get("violation_ns")
    if not b or not a:
        return None
    common = [k for k in a if k in b]
    return {k: max(0, a[k] - b[k]) / 1e6 for k in common} or None


def format_environment_line(env: dict[str, Any]) -> str:
    """One line: the device, its state at the end of the run, versions, commit."""
    sw = f"torch {env.get('torch')} | triton {env.get('triton')}"
    if env.get("device") == "cuda":
        nvml = env.get("nvml") or {}
        s = nvml.get("after") or nvml.get("before") or {}
        parts = [env.get("gpu") or s.get("name") or "CUDA GPU"]
        if env.get("driver"):
            parts.append(f"driver {env['driver']}")
        if "sm_clock_mhz" in s:
            parts.append(f"SM {s['sm_clock_mhz']}/{s.get('sm_clock_max_mhz', '?')} MHz")
        if "power_w" in s:
            limit = f"/{s['power_limit_w']:.0f}" if "power_limit_w" in s else ""
            parts.append(f"{s['power_w']:.0f}{limit} W")
        if "temperature_c" in s:
            parts.append(f"{s['temperature_c']} C")
        parts.append(sw + (f" | CUDA {env['cuda']}" if env.get("cuda") else ""))
    else:
        cpu = env.get("cpu") or {}
        parts = [f"CPU ({cpu.get('model') or cpu.get('machine') or '?'}, {cpu.get('threads', '?')} threads)", sw]
    if env.get("commit"):
        parts.append(f"commit {env['commit']}" + (" (dirty)" if env.get("dirty") else ""))
    if env.get("throttled"):
        parts.append("THROTTLED")
    return " | ".join(parts)


def throttle_warning(env: dict[str, Any]) -> str | None:
    """A warning line when the run throttled, else None."""
    if not env.get("throttled"):
        return None
    why = ", ".join(env.get("throttle_reasons") or [])
    ms = env.get("throttle_ms") or {}
    held = ", ".join(f"{k} {v:.0f} ms" for k, v in ms.items() if v > 0)
    detail = "; ".join(x for x in (why, f"clocks held down: {held}" if held else "") if x)
    return f"warning: the GPU throttled during this run ({detail}); its timings are not comparable"
