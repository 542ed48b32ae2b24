"""The pytest-benchmark suite (``pytest bench/ --benchmark-only``) on a CPU: everything skipped with a pointer to
``tritongpt inspect``, the GPU-synchronising timer by default, a user's timer kept, deterministic calls per round,
machine info without a GPU, and test ids that are ``tritongpt bench kernels``'s record names."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tritongpt.bench import conftest as bench_conftest
from tritongpt.bench import kernel_cases as kc
from tritongpt.bench import kernels as kb
from tritongpt.bench import pytest_gpu as pg
from tritongpt.bench.timing import time_wall
from tritongpt.engine.gpu_peaks import A100, H100

ROOT = Path(__file__).resolve().parents[1]
HAS_CUDA = torch.cuda.is_available()


def _clean_env() -> dict[str, str]:
    """The environment of a user's run: under `make test` (xdist) the worker's variables would make
    pytest-benchmark disable itself (and --benchmark-only then refuse to start); TRITON_INTERPRET is the test
    harness's."""
    env = dict(os.environ)
    for key in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID", "PYTEST_ADDOPTS",
                "PYTEST_CURRENT_TEST", "TRITON_INTERPRET", pg.FULL_ENV):
        env.pop(key, None)
    return env


@pytest.mark.skipif(HAS_CUDA, reason="on a GPU this would run the benchmarks")
def test_cpu_run_skips_everything_and_uses_the_synced_timer(tmp_path: Path) -> None:
    # --benchmark-storage: pytest-benchmark creates its storage folder on every run; not in the checkout.
    proc = subprocess.run([sys.executable, "-m", "pytest", "bench/", "--benchmark-only", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "-rs", f"--benchmark-storage={tmp_path / 'store'}"], cwd=ROOT,
                          env=_clean_env(), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"timer={bench_conftest.TIMER}" in out  # pytest-benchmark's header names the timer it will use
    n = len(pg.case_params(quick=True))
    assert re.search(rf"\b{n} skipped\b", out), out
    assert not re.search(r"\b\d+ (passed|failed|error)", out), out
    assert "`tritongpt inspect`" in out and "need a CUDA GPU" in out


def _config(args: tuple[str, ...] = (), timer: str = "time.perf_counter", addopts: tuple[str, ...] = ()):
    return SimpleNamespace(invocation_params=SimpleNamespace(args=args), option=SimpleNamespace(benchmark_timer=timer),
                           getini=lambda name: list(addopts))


def test_timer_defaults_to_synced_and_a_users_timer_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    cfg = _config(("bench/", "--benchmark-only"))
    bench_conftest.pytest_configure(cfg)
    assert cfg.option.benchmark_timer == bench_conftest.TIMER == "tritongpt.bench.pytest_gpu.synced_perf_counter"
    # Given explicitly, even when it equals pytest-benchmark's default: kept.
    for args in (("--benchmark-timer", "time.perf_counter"), ("--benchmark-timer=time.perf_counter",)):
        cfg = _config(("bench/", *args))
        bench_conftest.pytest_configure(cfg)
        assert cfg.option.benchmark_timer == "time.perf_counter"
    cfg = _config(("bench/",), timer="time.process_time", addopts=("--benchmark-timer=time.process_time",))
    bench_conftest.pytest_configure(cfg)
    assert cfg.option.benchmark_timer == "time.process_time"
    monkeypatch.setenv("PYTEST_ADDOPTS", "-q --benchmark-timer time.process_time")
    cfg = _config(("bench/",), timer="time.process_time")
    bench_conftest.pytest_configure(cfg)
    assert cfg.option.benchmark_timer == "time.process_time"
    # pytest-benchmark not loaded (-p no:benchmark): no option to set, nothing happens.
    bare = SimpleNamespace(invocation_params=SimpleNamespace(args=()), option=SimpleNamespace(), getini=lambda n: [])
    bench_conftest.pytest_configure(bare)
    assert not hasattr(bare.option, "benchmark_timer")


def test_synced_perf_counter_is_a_clock() -> None:
    a = pg.synced_perf_counter()
    b = pg.synced_perf_counter()
    assert isinstance(a, float) and b >= a


def test_calls_per_round_deterministic_bounded_and_larger_for_smaller_points() -> None:
    strict = 0
    for sweep in kc.default_sweeps(quick=False):
        pts = sorted(sweep.points, key=lambda p: p["x"])
        calls = [pg.calls_per_round(sweep, p) for p in pts]
        assert calls == [pg.calls_per_round(sweep, p, H100) for p in pts]  # None means H100; same every call
        assert all(1 <= c <= pg.MAX_CALLS for c in calls), (sweep.name, calls)
        assert all(a >= b for a, b in pairwise(calls)), (sweep.name, calls)
        strict += sum(a > b for a, b in pairwise(calls))
        # A slower GPU has a later floor: never more calls per round.
        assert all(pg.calls_per_round(sweep, p, A100) <= c for p, c in zip(pts, calls, strict=True))
    assert strict > 0
    ln = kc.layer_norm_sweep("fwd", xs=(1024,))
    p = ln.points[0]
    floor = max(ln.nbytes(p) / (H100.bandwidth_gbs * 1e9), ln.flops(p) / (H100.bf16_tflops * 1e12))
    assert pg.calls_per_round(ln, p) == math.ceil(1e-3 / floor)
    assert pg.calls_per_round(ln, {**p, "M": 1, "N": 1}) == pg.MAX_CALLS  # tiny: clamped
    big = kc.attention_sweep("fwd", xs=(16384,), tokens=2**22)
    assert pg.calls_per_round(big, big.points[0]) == 1  # over 1 ms at the roofline: one call


@pytest.mark.skipif(HAS_CUDA, reason="CPU-only expectations")
def test_machine_info_on_cpu() -> None:
    info = pg.machine_info()
    assert set(info) == {"gpu", "compute_capability", "memory_gib", "driver", "torch", "triton", "cuda", "nvml"}
    assert info["gpu"] is None and info["nvml"] is None and info["compute_capability"] is None
    assert info["torch"] == torch.__version__ and "triton" in info and "cuda" in info
    # pytest-benchmark's machine_info gains "gpu" (no volatile NVML state) and loses the CPU's current clock.
    mi = {"node": "x", "cpu": {"brand_raw": "Xeon", "hz_actual": [1, 0], "hz_actual_friendly": "1 GHz"}}
    bench_conftest.pytest_benchmark_update_machine_info(config=None, machine_info=mi)
    assert mi["gpu"]["gpu"] is None and "nvml" not in mi["gpu"] and mi["gpu"]["torch"] == torch.__version__
    assert mi["cpu"] == {"brand_raw": "Xeon"}


def test_case_ids_unique_and_bench_kernels_record_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pg.FULL_ENV, raising=False)
    quick = pg.case_params()
    assert [c[0] for c in quick] == [c[0] for c in pg.case_params(quick=True)]
    monkeypatch.setenv(pg.FULL_ENV, "1")
    full = pg.case_params()
    assert len(full) > len(quick)
    for cases in (quick, full):
        ids = [c[0] for c in cases]
        assert len(ids) == len(set(ids))
        for cid, sweep, point, prov in cases:
            assert cid == f"{sweep.name}/{prov}/{sweep.x_name}={point['x']}" and prov in sweep.providers
            assert re.fullmatch(r"[\w.+-]+/[\w.+-]+/\w+=\d+", cid), cid
    assert "attention-fwd-causal-bfloat16-d128/triton/T=4096" in {c[0] for c in quick}

    # The names bench kernels gives its records, on a toy sweep run for real on the CPU.
    toy = kc.Sweep(name="toy-fwd-float32", kernel="toy", direction="fwd", title="toy", x_name="N", metric="gbs",
                   bound="memory", dtype="float32", points=[{"x": 8, "N": 8}],
                   setup=lambda p, dev: {"x": torch.randn(p["N"], device=dev)},
                   providers={"triton": lambda t: t["x"] * 2, "torch": lambda t: t["x"] + t["x"]},
                   reference=lambda t: t["x"] * 2, flops=lambda p: float(p["N"]), nbytes=lambda p: 8.0 * p["N"])
    point = toy.points[0]
    records, skipped, failures = kb.run_point(toy, point, torch.device("cpu"),
                                              lambda fn, s: time_wall(fn, repeats=2), None, log=lambda s: None)
    assert not skipped and not failures
    assert [r["name"] for r in records] == [pg.case_id(toy, point, prov) for prov in toy.providers]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_run_saves_graph_timed_cases_with_the_gpu_named(tmp_path: Path) -> None:
    import json

    ids = ["layer_norm-fwd-plain-bfloat16/triton/N=1024", "layer_norm-bwd-plain-bfloat16/torch/N=1024"]
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", *(f"bench/test_kernels_speed.py::test_kernel_speed[{i}]"
                                                               for i in ids),
                           "--benchmark-only", "-p", "no:cacheprovider", "-p", "no:xdist", f"--benchmark-json={out}",
                           f"--benchmark-storage={tmp_path / 'store'}"],
                          cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["machine_info"]["gpu"]["gpu"] == torch.cuda.get_device_name()
    assert "nvml" not in data["machine_info"]["gpu"]
    by = {b["params"]["case"]: b for b in data["benchmarks"]}
    assert set(by) == set(ids)
    assert by[ids[0]]["extra_info"]["timed"] == "cuda_graph" and by[ids[1]]["extra_info"]["timed"] == "direct"
    for b in by.values():
        assert b["options"]["timer"] == "synced_perf_counter" and b["stats"]["rounds"] == 20
        assert b["extra_info"]["gbs"] > 0 and b["stats"]["iterations"] == b["extra_info"]["calls_per_round"]
