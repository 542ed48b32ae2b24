"""Environment capture: NVML snapshots through a fake ``pynvml``, throttling, CPU labels, git state."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from tritongpt.engine import envinfo
from tritongpt.engine import environment as envmod


class FakeNVMLError(Exception):
    pass


def fake_pynvml(reasons=(0x1, 0x1), refuse=(), old_api=False, violations=None, init_fails=False):
    """A pynvml stand-in: ``reasons`` are returned by successive reason queries (before, after),
    ``violations`` likewise as {"power": ns, "thermal": ns}; functions named in ``refuse`` raise."""
    m = types.ModuleType("pynvml")
    m.NVMLError = FakeNVMLError
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0
    m.NVML_PERF_POLICY_POWER, m.NVML_PERF_POLICY_THERMAL = 0, 1
    m.calls = {"init": 0, "shutdown": 0, "uuid": [], "reasons": 0, "violations": 0}
    reasons, violations = list(reasons), list(violations or [])

    def init():
        m.calls["init"] += 1
        if init_fails:
            raise FakeNVMLError("NVML Shared Library Not Found")

    def shutdown():
        m.calls["shutdown"] += 1

    def by_uuid(uuid):
        m.calls["uuid"].append(uuid)
        return "h0"

    def current_reasons(h):
        i = m.calls["reasons"]
        m.calls["reasons"] += 1
        return reasons[min(i, len(reasons) - 1)]

    def violation(h, policy):
        i = m.calls["violations"] // 2
        m.calls["violations"] += 1
        return types.SimpleNamespace(violationTime=violations[i]["power" if policy == 0 else "thermal"])

    fns = {
        "nvmlInit": init, "nvmlShutdown": shutdown,
        "nvmlDeviceGetHandleByUUID": by_uuid, "nvmlDeviceGetHandleByIndex": lambda i: f"h{i}",
        "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3",  # older pynvml returns bytes
        "nvmlSystemGetDriverVersion": lambda: "550.54.15",
        "nvmlDeviceGetClockInfo": lambda h, t: {1: 1755, 2: 2619}[t],
        "nvmlDeviceGetMaxClockInfo": lambda h, t: {1: 1980, 2: 2619}[t],
        "nvmlDeviceGetPowerUsage": lambda h: 350_500,
        "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700_000,
        "nvmlDeviceGetTemperature": lambda h, s: 45,
        "nvmlDeviceGetPerformanceState": lambda h: 0,
        "nvmlDeviceGetCurrentClocksThrottleReasons" if old_api else "nvmlDeviceGetCurrentClocksEventReasons":
            current_reasons,
    }
    if violations:
        fns["nvmlDeviceGetViolationStatus"] = violation

    def refused(*a):
        raise FakeNVMLError("Not Supported")

    for name, fn in fns.items():
        setattr(m, name, refused if name in refuse else fn)
    return m


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch sees one CUDA device (no GPU needed); returns a function installing a fake pynvml."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda d: types.SimpleNamespace(uuid="8f4e5a2c-0000-1111-2222-333344445555"))

    def install(**kw):
        fake = fake_pynvml(**kw)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    return install


def record() -> dict:
    with envmod.EnvironmentRecorder("cuda") as rec:
        pass
    return rec.environment()


def test_snapshot_reads_every_field(fake_cuda):
    fake = fake_cuda(reasons=[0x1])
    snap = envmod.nvml_for_device("cuda")
    assert snap == {
        "name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "sm_clock_mhz": 1755, "sm_clock_max_mhz": 1980,
        "mem_clock_mhz": 2619, "mem_clock_max_mhz": 2619, "power_w": 350.5, "power_limit_w": 700.0,
        "temperature_c": 45, "pstate": "P0", "clock_event_reasons": 1, "clock_event_reason_names": ["gpu_idle"],
    }
    # Found by UUID (CUDA_VISIBLE_DEVICES renumbers torch's devices, not NVML's), and NVML released.
    assert fake.calls["uuid"] == ["GPU-8f4e5a2c-0000-1111-2222-333344445555"]
    assert fake.calls["init"] == fake.calls["shutdown"] == 1


def test_a_refused_field_is_left_out(fake_cuda):
    fake_cuda(refuse={"nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPerformanceState"})
    env = record()
    snap = env["nvml"]["after"]
    assert "power_limit_w" not in snap and "pstate" not in snap
    assert snap["power_w"] == 350.5 and env["driver"] == "550.54.15"
    assert "| 350 W |" in envmod.format_environment_line(env)


def test_hw_slowdown_after_the_run_marks_it_throttled(fake_cuda):
    fake_cuda(reasons=[0x1, 0x8 | 0x10])  # before: idle; after: hardware slowdown (+ sync boost)
    env = record()
    assert env["nvml"]["before"]["clock_event_reason_names"] == ["gpu_idle"]
    assert env["nvml"]["after"]["clock_event_reason_names"] == ["hw_slowdown", "sync_boost"]
    assert env["throttled"] is True and env["throttle_reasons"] == ["hw_slowdown"]
    assert "hw_slowdown" in envmod.throttle_warning(env)
    line = envmod.format_environment_line(env)
    assert line.startswith("NVIDIA H100 80GB HBM3 | driver 550.54.15 | SM 1755/1980 MHz | 350/700 W | 45 C")
    assert line.endswith("THROTTLED")


@pytest.mark.parametrize("mask", [0x1, 0x1 | 0x2 | 0x10, 0x0])
def test_idle_app_clocks_and_sync_boost_are_not_throttling(fake_cuda, mask):
    fake_cuda(reasons=[mask, mask])
    env = record()
    assert env["throttled"] is False and env["throttle_reasons"] == []
    assert envmod.throttle_warning(env) is None
    assert "THROTTLED" not in envmod.format_environment_line(env)


def test_old_throttle_reasons_api(fake_cuda, monkeypatch):
    fake = fake_cuda(reasons=[0x4, 0x20 | 0x40], old_api=True)
    fake.nvmlClocksThrottleReasonSwPowerCap = 0x4  # old constant names only
    env = record()
    assert not hasattr(fake, "nvmlDeviceGetCurrentClocksEventReasons")
    assert env["throttle_reasons"] == ["hw_thermal_slowdown", "sw_power_cap", "sw_thermal_slowdown"]


def test_power_cap_between_the_snapshots_counts(fake_cuda):
    # Both snapshots idle, but the cumulative power-violation counter grew by 250 ms during the run.
    fake_cuda(reasons=[0x1, 0x1], violations=[{"power": 10**9, "thermal": 0}, {"power": 1_250_000_000, "thermal": 0}])
    env = record()
    assert env["throttled"] is True and env["throttle_reasons"] == []
    assert env["throttle_ms"] == {"power": 250.0, "thermal": 0.0}
    assert "power 250 ms" in envmod.throttle_warning(env)


def test_unchanged_violation_counters_do_not_count(fake_cuda):
    fake_cuda(reasons=[0x1, 0x1], violations=[{"power": 5, "thermal": 7}] * 2)
    env = record()
    assert env["throttled"] is False and env["throttle_ms"] == {"power": 0.0, "thermal": 0.0}


def test_nvml_init_failure_or_missing_pynvml(fake_cuda, monkeypatch):
    fake = fake_cuda(init_fails=True)
    assert envmod.nvml_snapshot() is None and fake.calls["shutdown"] == 0
    env = record()
    assert env["nvml"] is None and env["throttled"] is None and env["driver"] is None
    assert env["gpu"] == "NVIDIA H100 80GB HBM3" and env["device"] == "cuda"
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import raises ImportError
    assert envmod.nvml_snapshot() is None
    assert envmod.format_environment_line(record()).startswith("NVIDIA H100 80GB HBM3 | torch ")


def test_cpu_runs_are_labelled_cpu(fake_cuda):
    fake = fake_cuda(reasons=[0x8])
    with envmod.capture("cpu") as rec:
        pass
    env = rec.environment()
    assert fake.calls["init"] == 0  # a CPU run says nothing about the GPU beside it
    assert env["device"] == "cpu" and env["gpu"] is None and env["nvml"] is None and env["throttled"] is None
    assert env["cpu"]["threads"] == torch.get_num_threads() and env["cpu"]["model"]
    for key in ("torch", "triton", "cuda", "python", "commit", "dirty", "driver", "throttle_reasons"):
        assert key in env
    assert envmod.format_environment_line(env).startswith(f"CPU ({env['cpu']['model']}, ")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com",
                           "-c", "commit.gpgsign=false", *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_software_commit_and_dirty(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "one")
    sw = envmod.software(repo)
    assert sw["commit"] == _git(repo, "rev-parse", "--short", "HEAD").strip() and sw["dirty"] is False
    (repo / "results.json").write_text("{}")  # untracked output: not a code change
    assert envmod.software(repo)["dirty"] is False
    (repo / "a.py").write_text("x = 2\n")
    assert envmod.software(repo)["dirty"] is True
    plain = tmp_path / "plain"
    plain.mkdir()
    assert envmod.git_state(plain) == (None, None)
    assert sw["torch"] == torch.__version__ and sw["python"].count(".") == 2


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_an_installed_copy_inside_some_repository_reports_no_commit(tmp_path):
    # e.g. site-packages of a venv that lives in an unrelated checkout: that checkout's commit is not ours.
    repo = tmp_path / "other"
    site = repo / ".venv" / "site-packages" / "tritongpt" / "bench"
    site.mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "README").write_text("x\n")
    _git(repo, "add", "README")
    _git(repo, "commit", "-q", "-m", "one")
    shutil.copy(envmod.__file__, site / "environment.py")
    spec = importlib.util.spec_from_file_location("installed_environment", site / "environment.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.git_state() == (None, None)
    assert mod.git_state(repo)[0] is not None  # an explicit root is taken at its word


def test_info_reuses_the_snapshot(fake_cuda):
    fake_cuda(refuse={"nvmlDeviceGetEnforcedPowerLimit"})
    dev = envinfo._nvml(0)
    assert "name" not in dev and dev["driver"] == "550.54.15" and dev["clock_event_reason_names"] == ["gpu_idle"]
    env = {"python": "3", "torch": "2", "triton": "3", "tiktoken": "0", "tritongpt": "0", "git_commit": None,
           "device": {"type": "cuda", "name": "H100", "memory_gib": 80.0, "compute_capability": "9.0",
                      "sm_count": 132, **dev}}
    text = envinfo.format_environment(env)
    assert "SM 1755/1980 MHz" in text and "350 W, 45 C" in text and "gpu_idle" in text


def test_a_mig_slice_is_found_by_its_mig_uuid_and_read_on_its_gpu(fake_cuda):
    # CUDA reports a MIG instance's own UUID, which NVML knows as "MIG-...": "GPU-..." misses, and the old
    # index fallback then read NVML's GPU <torch index>, whichever physical GPU that is.
    fake = fake_cuda(reasons=[0x1])

    def by_uuid(uuid):
        fake.calls["uuid"].append(uuid)
        if not uuid.startswith("MIG-"):
            raise FakeNVMLError("Not Found")
        return "mig-handle"

    fake.nvmlDeviceGetHandleByUUID = by_uuid
    fake.nvmlDeviceGetHandleByIndex = lambda i: pytest.fail("looked up by index")
    fake.nvmlDeviceGetDeviceHandleFromMigDeviceHandle = lambda h: {"mig-handle": "gpu-handle"}[h]
    fake.nvmlDeviceGetName = lambda h: {"gpu-handle": "NVIDIA A100-SXM4-80GB"}[h]
    snap = envmod.nvml_for_device("cuda")
    assert fake.calls["uuid"] == ["GPU-8f4e5a2c-0000-1111-2222-333344445555",
                                  "MIG-8f4e5a2c-0000-1111-2222-333344445555"]
    assert snap["name"] == "NVIDIA A100-SXM4-80GB" and snap["sm_clock_mhz"] == 1755


def test_violation_growth_counts_as_a_share_of_the_run(fake_cuda, monkeypatch):
    # A 100 s run: 5 s power-capped (5%, routine for dense GEMMs at the power limit) is not throttling,
    # 2 s of thermal slowdown (2%) is.
    clock = iter([1000.0, 1100.0])
    monkeypatch.setattr(envmod.time, "monotonic", lambda: next(clock))
    fake_cuda(reasons=[0x1, 0x1], violations=[{"power": 0, "thermal": 0}, {"power": 5 * 10**9, "thermal": 0}])
    env = record()
    assert env["throttled"] is False and env["throttle_share"] == {"power": 0.05, "thermal": 0.0}
    assert env["run_s"] == 100.0
    clock = iter([1000.0, 1100.0])
    fake_cuda(reasons=[0x1, 0x1], violations=[{"power": 0, "thermal": 0}, {"power": 0, "thermal": 2 * 10**9}])
    env = record()
    assert env["throttled"] is True and env["throttle_share"]["thermal"] == pytest.approx(0.02)
