"""`tritongpt bench kernels`: metric formulas, the sweep runner on the CPU interpreter (records,
accuracy check, skips, speedups), and the CPU-only message."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from tritongpt.bench import kernel_cases as kc
from tritongpt.bench import kernels as kb
from tritongpt.bench import metrics
from tritongpt.bench.compare import load_results
from tritongpt.bench.timing import Timing, quantile, time_wall
from tritongpt.engine.gpu_peaks import lookup
from tritongpt.kernels.tma import descriptors_available

H100 = lookup("NVIDIA H100 80GB HBM3")


# ---- formulas ------------------------------------------------------------------------------------
def test_attention_flops_follow_the_flashattention_convention():
    B, H, T, D = 2, 16, 4096, 128
    full = metrics.attention_flops(B, H, T, D, causal=False)
    assert full == 4 * B * H * T * T * D
    assert metrics.attention_flops(B, H, T, D, causal=True) == full / 2
    assert metrics.attention_flops(B, H, T, D, causal=True, direction="bwd") == 2.5 * full / 2
    assert metrics.attention_flops(B, H, T, D, causal=False, direction="fwd+bwd") == 3.5 * full
    with pytest.raises(ValueError, match="direction"):
        metrics.attention_flops(B, H, T, D, False, direction="backward")
    with pytest.raises(ValueError, match="Tq == Tk"):
        metrics.attention_flops(B, H, T, D, True, Tk=2 * T)


def test_minimum_bytes():
    # attention forward: q, k, v read, o written (bf16) + the fp32 LSE
    assert metrics.attention_bytes(1, 2, 8, 4, "bfloat16") == 4 * 64 * 2 + 16 * 4
    # LayerNorm fwd without residual: x in, y out, weight + bias, fp32 mean/rstd
    M, N = 4096, 1024
    assert metrics.layer_norm_bytes(M, N, "bfloat16", False) == 2 * M * N * 2 + 2 * N * 2 + 8 * M
    # with the residual add: x and residual in, y and h out
    assert metrics.layer_norm_bytes(M, N, "float16", True) == 4 * M * N * 2 + 2 * N * 2 + 8 * M
    assert metrics.linear_flops(512, 3072, 768) == 2 * 512 * 3072 * 768
    assert metrics.linear_flops(512, 3072, 768, "fwd+bwd") == 3 * 2 * 512 * 3072 * 768
    assert metrics.decode_bytes(8, 32, 1000, 128, "bfloat16") == (2 * 8 * 32 * 1000 * 128 + 2 * 8 * 32 * 128) * 2
    with pytest.raises(ValueError, match="dtype"):
        metrics.decode_bytes(1, 1, 1, 1, "int8")


def test_derived_metrics_and_fraction_of_peak():
    d = metrics.derive(1e-3, flops=494.5e9, nbytes=None, bound="compute", peak=H100, dtype="bfloat16")
    assert d["tflops"] == pytest.approx(494.5) and d["peak_fraction"] == pytest.approx(0.5)
    m = metrics.derive(1e-3, flops=1e6, nbytes=2.68e9, bound="memory", peak=H100, dtype="bfloat16")
    assert m["gbs"] == pytest.approx(2680) and m["peak_fraction"] == pytest.approx(0.8)
    # fp32 compute has no tensor-core peak in the table; an unknown GPU has no peak at all
    assert metrics.derive(1e-3, 1e12, 1e9, "compute", H100, "float32")["peak_fraction"] is None
    assert metrics.derive(1e-3, 1e12, 1e9, "compute", None, "bfloat16")["peak_fraction"] is None
    assert metrics.speedups(1e-3, {"sdpa": 1.5e-3, "naive": 4e-3}) == {"sdpa": 1.5, "naive": 4.0}
    with pytest.raises(ValueError):
        metrics.derive(0.0, 1.0, 1.0, "compute", None)


def test_quantile_matches_numpy():
    xs = list(np.random.default_rng(0).exponential(size=37))
    for q in (0.0, 0.2, 0.5, 0.8, 1.0):
        assert quantile(xs, q) == pytest.approx(float(np.quantile(xs, q)))
    t = Timing([3.0, 1.0, 2.0], "wall", "warm", 0.5)
    assert t.median_s == 2.0
    with pytest.raises(ValueError):
        time_wall(lambda: None, repeats=1)


def test_nearest_quantile_is_a_measured_sample_rounded_half_up():
    """The wall-clock records' definition (q20_s/q80_s of ``add_record``, generate's ITL p50/p90): fixed, so
    result files written by any version compare."""
    xs = [0.3, 0.1, 0.2, 0.4]
    assert [quantile(xs, q, method="nearest") for q in (0.0, 0.2, 0.5, 0.8, 1.0)] == [0.1, 0.2, 0.3, 0.3, 0.4]
    assert quantile([0.3, 0.1, 0.2], 0.25, method="nearest") == 0.2  # rank 0.5 rounds up, not to even
    for bad in ({"xs": [], "q": 0.5}, {"xs": xs, "q": 1.5}, {"xs": xs, "q": 0.5, "method": "midpoint"}):
        with pytest.raises(ValueError):
            quantile(**bad)


def test_default_sweeps_cover_the_issue():
    sweeps = kc.default_sweeps()
    names = {s.name for s in sweeps}
    for direction in ("fwd", "bwd", "fwd+bwd"):
        for tag in ("causal", "full"):
            for d in (64, 128):
                for dt in ("bfloat16", "float16"):
                    assert f"attention-{direction}-{tag}-{dt}-d{d}" in names
    attn = next(s for s in sweeps if s.kernel == "attention")
    assert [p["T"] for p in attn.points] == [512, 1024, 2048, 4096, 8192, 16384]
    assert set(attn.providers) == {"triton", "triton-pointer", "triton-tma", "sdpa-flash", "sdpa-efficient",
                                   "sdpa-cudnn", "naive"}
    ln = [s for s in sweeps if s.kernel == "layer_norm"]
    assert {(s.direction, "residual" in s.name) for s in ln} == {("fwd", False), ("fwd", True), ("bwd", False),
                                                                   ("bwd", True)}
    assert max(p["N"] for p in ln[0].points) == 16384 and set(ln[0].providers) == {"triton", "torch", "torch.compile"}
    gl = next(s for s in sweeps if s.kernel == "gelu_linear")
    assert {"cublas", "cublas+gelu", "torch.compile"} <= set(gl.providers)
    dec = [s for s in sweeps if s.kernel == "decode_attention"]
    assert {s.points[0]["B"] for s in dec} == {1, 8, 64} and dec[0].points[-1]["ctx"] == 32768
    quick = kc.default_sweeps(quick=True)
    assert 0 < len(quick) < len(sweeps) and all(s.dtype == "bfloat16" for s in quick)
    for sw in (sweeps, quick):  # D=64 (every GPT-2 preset) beside D=128, decode attention too
        assert {(s.kernel, s.points[0]["D"]) for s in sw if "attention" in s.kernel} == {
            ("attention", 64), ("attention", 128), ("decode_attention", 64), ("decode_attention", 128)}
        gemm = next(s for s in sw if s.name == "gelu_linear-fwd-bfloat16-4096x4096")
        assert [(p["M"], p["K"], p["N"]) for p in gemm.points] == [(4096, 4096, 4096)] and "cublas" in gemm.providers
    with pytest.raises(ValueError, match="unknown"):
        kc.default_sweeps(("attn",))
    with pytest.raises(ValueError, match="providers"):
        kc.attention_sweep(providers=["flash3"])


# ---- the runner on CPU (interpreter), with a wall-clock timer -----------------------------------------
def _wall(fn, sweep):
    return time_wall(fn, repeats=3)


def _run(sweeps):
    return kb.run_sweeps(sweeps, device=torch.device("cpu"), timer=_wall, peak=None, log=lambda s: None)


def test_runner_records_schema_accuracy_and_speedups(tmp_path):
    sweeps = [
        kc.attention_sweep("fwd+bwd", True, 16, "float32", xs=(16, 24), tokens=32, width=32,
                           providers=["triton", "naive"]),
        kc.layer_norm_sweep("bwd", True, "float32", xs=(40,), rows=6, providers=["triton", "torch"]),
        kc.gelu_linear_sweep("fwd", 16, 24, "float32", xs=(5,), providers=["triton", "cublas", "cublas+gelu"]),
        kc.decode_sweep(2, 2, 16, "float32", xs=(20,)),
    ]
    out = _run(sweeps)
    assert out["failures"] == [] and out["skipped"] == []
    recs = out["benchmarks"]
    assert len(recs) == 4 + 2 + 3 + 2
    assert len({r["name"] for r in recs}) == len(recs)
    assert [s["sweep"] for s in out["sweeps"]] == [s.name for s in sweeps]
    for r in recs:
        assert len(r["samples"]) == 3 and all(x > 0 for x in r["samples"])
        assert r["q20_s"] <= r["median_s"] <= r["q80_s"] and r["warmup_s"] > 0
        assert r["timer"] == "wall" and r["peak_fraction"] is None
        assert r["name"] == f"{r['sweep']}/{r['provider']}/{r['x_name']}={r['x']}"
    attn = next(r for r in recs if r["provider"] == "triton" and r["kernel"] == "attention" and r["x"] == 24)
    assert attn["flops"] == 3.5 * 0.5 * 4 * 1 * 2 * 24 * 24 * 16  # B = 32 // 24 = 1, H = 32 // 16 = 2
    assert attn["tflops"] == pytest.approx(attn["flops"] / attn["median_s"] / 1e12)
    assert attn["accurate"] and attn["max_err"] < 1e-4 and set(attn["speedup"]) == {"naive"}
    # F.linear alone is a yardstick for time, not the same function: timed, never checked
    cublas = next(r for r in recs if r["provider"] == "cublas")
    assert cublas["accurate"] is None and cublas["max_err"] is None
    # every record is a valid compare input once wrapped in a result file
    import json

    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema": "tritongpt-bench/1", "suite": "kernels", "environment": {},
                                "benchmarks": recs}))
    assert len(load_results(path)["benchmarks"]) == len(recs)


def test_the_lm_head_loss_sweep_runs_and_checks_ours_against_the_plain_path():
    """The fused linear + cross-entropy against F.linear + F.cross_entropy (fwd+bwd: dx and dW checked); off a
    GPU there is no peak-memory figure."""
    sweep = kc.linear_cross_entropy_sweep("fwd+bwd", 16, 97, "float32", xs=(9,), providers=["triton", "torch"])
    out = _run([sweep])
    assert out["failures"] == [] and out["skipped"] == []
    recs = {r["provider"]: r for r in out["benchmarks"]}
    assert set(recs) == {"triton", "torch"} and recs["triton"]["accurate"]
    assert all(r["peak_memory_bytes"] is None for r in recs.values())
    assert recs["triton"]["flops"] == 6 * 9 * 97 * 16  # the head's useful GEMMs, forward and backward
    full = kc.default_sweeps(("linear_cross_entropy",))
    assert {(s.direction, s.points[0]["C"]) for s in full if s.dtype == "bfloat16"} == {
        (d, c) for d in ("fwd", "fwd+bwd") for c in (768, 1600)}
    assert all(s.points[0]["V"] == 50304 and [p["N"] for p in s.points] == [8192, 16384] for s in full)
    assert set(full[0].providers) == {"triton", "torch", "torch.compile"}


def test_a_wrong_kernel_fails_the_run_and_a_broken_baseline_is_only_skipped():
    s = kc.layer_norm_sweep("fwd", False, "float32", xs=(33,), rows=4, providers=["triton", "torch"])
    s.providers["triton"] = lambda t: torch.nn.functional.layer_norm(t["x"], t["x"].shape[-1:], t["weight"],
                                                                    t["bias"]) * 1.01
    s.providers["torch"] = lambda t: (_ for _ in ()).throw(RuntimeError("No available kernel.\ndetails"))
    out = _run([s])
    assert len(out["failures"]) == 1 and "tolerance" in out["failures"][0]
    assert out["benchmarks"][0]["accurate"] is False
    assert out["skipped"] == [{"name": "layer_norm-fwd-plain-float32/torch/N=33",
                               "reason": "RuntimeError: No available kernel."}]
    s.providers["triton"] = lambda t: (_ for _ in ()).throw(ValueError("boom"))
    out = _run([s])
    assert out["failures"] == ["layer_norm-fwd-plain-float32/triton/N=33: ValueError: boom"]


def test_nan_output_is_inaccurate():
    outs = (torch.tensor([1.0, float("nan")]),)
    assert kb.error(outs, (torch.tensor([1.0, 2.0]),))[0] == math.inf


def test_skip_rule_for_naive_attention_memory():
    s = kc.attention_sweep("fwd", True, 128, "bfloat16", xs=(16384,))
    assert "GiB" in s.skip(s.points[0], "naive") and s.skip(s.points[0], "triton") is None


# ---- CPU-only machine ------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for machines without a GPU")
def test_cpu_only_message_points_to_inspect(capsys):
    from tritongpt.engine.cli import main

    assert main(["bench", "kernels"]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "tritongpt inspect" in err and "bench generate" in err
    assert main(["bench", "kernels", "--kernels", "attn"]) == 2
    assert "unknown ['attn']" in capsys.readouterr().err


def test_cli_help_lists_kernels_suite():
    out = subprocess.run([sys.executable, "-m", "tritongpt", "bench", "kernels", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--quick" in out.stdout and "--timer" in out.stdout


def test_nan_from_our_kernel_fails_and_keeps_the_record_json_strict():
    import json

    s = kc.layer_norm_sweep("fwd", False, "float32", xs=(8,), rows=2, providers=["triton", "torch"])
    s.providers["triton"] = lambda t: t["x"] * float("nan")
    out = _run([s])
    rec = out["benchmarks"][0]
    assert rec["accurate"] is False and rec["nonfinite_output"] and rec["max_err"] is None
    assert "tolerance" in out["failures"][0]
    json.dumps(out["benchmarks"], allow_nan=False)


def test_suite_writes_result_history_plots_and_report(tmp_path):
    from tritongpt.bench.results import load_result

    sweeps = [kc.layer_norm_sweep("fwd", False, "float32", xs=(16, 32), rows=4, providers=["triton", "torch"])]
    lines = []
    result, failures, paths = kb.run_suite(sweeps, device=torch.device("cpu"), timer=_wall, peak=None,
                                           out_dir=tmp_path, report=True, log=lines.append)
    assert failures == [] and lines[0].startswith("CPU")
    assert result["environment"]["device"] == "cpu" and result["environment"]["gpu"] is None
    assert result["kernel_paths"]["capability"] is None  # which TMA variant triton-tma* timed: none here
    saved = load_result(paths["json"])
    assert saved["suite"] == "kernels" and len(saved["benchmarks"]) == 4
    assert saved["benchmarks"][0]["samples"] == result["benchmarks"][0]["samples"]
    rows = paths["history"].read_text().splitlines()
    assert len(rows) == 1 + 4
    assert len(paths["plots"]) == 1 and paths["plots"][0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["report"].read_text()
    assert "layer_norm-fwd-plain-float32" in md and paths["plots"][0].name in md


def test_points_that_do_not_fit_are_skipped_or_timed_without_a_reference():
    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 34.00 GiB")

    s = kc.decode_sweep(2, 2, 16, "float32", xs=(20,))
    s.setup = oom
    out = _run([s])
    assert out["benchmarks"] == [] and out["failures"] == []
    assert [x["reason"].startswith("inputs do not fit: OutOfMemoryError") for x in out["skipped"]] == [True, True]
    s = kc.decode_sweep(2, 2, 16, "float32", xs=(20,))
    s.reference = oom  # fp32 copies of the cache would not fit: time anyway, say no accuracy was checked
    logs = []
    out = kb.run_sweeps([s], device=torch.device("cpu"), timer=_wall, peak=None, log=logs.append)
    assert len(out["benchmarks"]) == 2 and all(r["accurate"] is None for r in out["benchmarks"])
    assert out["failures"] == [] and any("without an accuracy check" in line for line in logs)


# ---- GPU-only behaviour that the CPU can still pin down ------------------------------------------------
def test_compiled_baseline_compiles_every_shape_past_dynamo_recompile_limit():
    # Dynamo keeps compiled entries per CODE object (shared by every closure of one def and by every
    # torch.compile of it) and runs the function eagerly past recompile_limit (8): the full sweeps compile
    # LayerNorm's `eager` 48 times, so most "torch.compile" records would have timed eager PyTorch.
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    s = kc.layer_norm_sweep("fwd", False, "float32", xs=tuple(range(8, 20)), rows=3, providers=["torch"])
    for prov in (kc._compiled(s.providers["torch"], backend), kc._compiled(s.providers["torch"], backend)):
        for p in s.points:
            prov(s.setup(p, torch.device("cpu")))
    assert len(graphs) == 2 * len(s.points)


def test_warmup_s_is_the_first_call_not_a_steady_state_one():
    import time

    s = kc.layer_norm_sweep("fwd", False, "float32", xs=(8,), rows=2, providers=["triton", "torch"])
    calls = []

    def slow_first(t):  # compile/autotune on the first call only
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.2)
        return torch.nn.functional.layer_norm(t["x"], t["x"].shape[-1:], t["weight"], t["bias"])

    s.providers["torch"] = slow_first
    rec = next(r for r in _run([s])["benchmarks"] if r["provider"] == "torch")
    assert rec["warmup_s"] >= 0.2 and rec["median_s"] < 0.1


def test_speedups_compare_like_with_like_when_the_timers_differ():
    ours = {"timer": "cuda_graph", "median_s": 10e-6, "timer_note": {"do_bench_median_s": 16e-6}}
    others = {"graphed": {"timer": "cuda_graph", "median_s": 12e-6, "timer_note": {"do_bench_median_s": 18e-6}},
              "flushed": {"timer": "do_bench", "median_s": 24e-6}}
    sp = kb.point_speedups(ours, others)
    assert sp["graphed"] == pytest.approx(1.2)  # both L2-warm graph replays
    assert sp["flushed"] == pytest.approx(1.5)  # 24 / 16 (both do_bench), not 24 / 10


def test_list_shows_floors_without_a_gpu(capsys):
    from tritongpt.engine.cli import main

    assert main(["bench", "kernels", "--list", "--quick", "--kernels", "layer_norm"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines()
               if line.startswith("layer_norm-fwd-plain-bfloat16") and "N=1024" in line)
    # 4096 x 1024 bf16 in and out + weight/bias + fp32 stats = 16.8 MB; 16.8 MB / 3.35 TB/s = 5.02 us
    assert row.split()[3] == "16.8" and row.split()[4] == "5.02"
    assert out.strip().endswith("2 sweeps, 4 points, 12 measurements")


def test_device_table_prefers_the_most_specific_name():
    assert lookup("NVIDIA L40S").name == "L40S" and lookup("NVIDIA L40").name == "L40"
    assert lookup("NVIDIA L4").name == "L4" and lookup("NVIDIA H100 PCIe").name == "H100 PCIe"
    assert lookup("NVIDIA H100 80GB HBM3").name == "H100 SXM" and lookup("Tesla T4") is None


# ---- our kernels with one path forced (kernel_paths.py) ------------------------------------------------
def test_every_path_of_our_kernels_is_a_provider():
    sweeps = {s.name: s for s in kc.default_sweeps()}
    ours = {name: [p for p in s.providers if kb.is_ours(p)] for name, s in sweeps.items()}
    assert ours["attention-fwd-causal-bfloat16-d64"] == ["triton", "triton-pointer", "triton-tma"]
    assert ours["attention-bwd-causal-bfloat16-d64"] == ["triton"]  # the forcing launcher has no autograd
    fwd = ["triton", "triton-pointer", "triton-tma-persistent", "triton-tma-ws"]
    assert ours["gelu_linear-fwd-bfloat16-768x3072"] == fwd == ours["linear-fwd-float16-3072x768-residual"]
    assert ours["gelu_linear-bwd-bfloat16-768x3072"] == ["triton", "triton-pointer", "triton-tma"]
    assert ours["linear-bwd-bfloat16-3072x768-residual"] == ["triton", "triton-pointer", "triton-tma"]
    assert "cublas" in sweeps["gelu_linear-fwd-bfloat16-4096x4096"].unchecked  # the yardstick: timed, not checked


@pytest.fixture
def tma_launches(monkeypatch):
    """[(provider, TMA launcher)] for every TMA launch, tagged by the provider that was called last."""
    import tritongpt.kernels.flash_attention_tma as fat
    import tritongpt.kernels.fused_linear_tma as flt

    calls, current = [], [None]

    def spy(real, name):
        def run(*a, **k):
            calls.append((current[0], name))
            return real(*a, **k)

        return run

    for mod, name in ((flt, "fused_linear_fwd_tma"), (flt, "fused_linear_bwd_tma"), (fat, "attention_fwd_tma_launch")):
        monkeypatch.setattr(mod, name, spy(getattr(mod, name), name))

    def tag(sweep):
        for prov, fn in list(sweep.providers.items()):
            def run(t, _prov=prov, _fn=fn):
                current[0] = _prov
                return _fn(t)

            sweep.providers[prov] = run
        return sweep

    return calls, tag


@pytest.mark.skipif(not descriptors_available(), reason="this Triton has no tensor descriptors: no TMA path to force")
def test_forced_paths_run_that_path_and_are_checked(tma_launches):
    from tritongpt.kernels import fused_linear

    calls, tag = tma_launches
    fwd = ["triton", "triton-pointer", "triton-tma-persistent", "triton-tma-ws", "cublas+gelu"]
    sweeps = [tag(kc.gelu_linear_sweep("fwd", 32, 48, "bfloat16", xs=(80,), providers=fwd)),
              tag(kc.linear_sweep("bwd", 32, 48, "bfloat16", xs=(80,),
                                  providers=["triton", "triton-pointer", "triton-tma", "cublas+add"])),
              tag(kc.attention_sweep("fwd", True, 16, "bfloat16", xs=(32,), tokens=32, width=32,
                                     providers=["triton", "triton-pointer", "triton-tma", "naive"]))]
    out = _run(sweeps)
    assert out["failures"] == []
    # The interpreter runs the persistent kernel without warp specialization: that name is skipped, saying why.
    assert [(s["name"], "timed as triton-tma-persistent" in s["reason"]) for s in out["skipped"]] == [
        ("gelu_linear-fwd-bfloat16-32x48/triton-tma-ws/M=80", True)]
    ran = {(r["sweep"].split("-")[0] + "-" + r["direction"], r["provider"]) for r in out["benchmarks"]}
    assert len(ran) == 3 + 1 + 3 + 1 + 3 + 1
    assert all(r["accurate"] for r in out["benchmarks"] if kb.is_ours(r["provider"]))
    # Each forced provider launched its path, and only it: triton (auto) takes the pointer path without a GPU.
    assert set(calls) == {("triton-tma-persistent", "fused_linear_fwd_tma"), ("triton-tma", "fused_linear_fwd_tma"),
                          ("triton-tma", "fused_linear_bwd_tma"), ("triton-tma", "attention_fwd_tma_launch")}
    assert fused_linear.FORCE_PATH is None  # restored after every forward and backward


def test_tma_providers_are_skipped_where_tma_cannot_run(monkeypatch):
    from tritongpt.bench import kernel_paths as kp

    sm80, sm90, sm100, sm120 = (8, 0), (9, 0), (10, 0), (12, 0)
    for prov in ("triton-tma", "triton-tma-persistent", "triton-tma-ws"):
        assert kp.linear_skip(prov, sm80, (3, 9)) == "sm_80 has no TMA (sm_90 and newer)"
        assert "Triton 3.3 has no tensor descriptors" in kp.linear_skip(prov, sm90, (3, 3))
        assert "no checked TMA GEMM configs" in kp.linear_skip(prov, sm120, (3, 9))
    assert kp.attention_skip("triton-tma", "bfloat16", sm80, (3, 9)) == "sm_80 has no TMA (sm_90 and newer)"
    assert "Triton 3.3" in kp.attention_skip("triton-tma", "float16", sm90, (3, 3))
    assert "fp16/bf16 only" in kp.attention_skip("triton-tma", "float32", sm90, (3, 9))
    assert kp.attention_skip("triton-tma", "bfloat16", sm90, (3, 9)) is None
    # Hopper runs the persistent GEMM plainly, Blackwell warp-specialized: one name each, the other skipped.
    assert kp.linear_skip("triton-tma-persistent", sm90, (3, 9)) is None
    assert "timed as triton-tma-persistent" in kp.linear_skip("triton-tma-ws", sm90, (3, 9))
    assert kp.linear_skip("triton-tma-ws", sm100, (3, 9)) is None
    assert "timed as triton-tma-ws" in kp.linear_skip("triton-tma-persistent", sm100, (3, 9))
    for prov in ("triton", "triton-pointer", "cublas"):
        assert kp.linear_skip(prov, sm80, (3, 3)) is None and kp.attention_skip(prov, "float32", sm80, (3, 3)) is None
    # A checkout whose attention launcher cannot force a path: both forced providers say so.
    monkeypatch.setattr(kp, "_attention_launcher", lambda: lambda q, k, v, causal, sm_scale, config=None: None)
    assert "takes no path=" in kp.attention_skip("triton-pointer", "bfloat16", sm90, (3, 9))
    monkeypatch.undo()
    # Through a sweep on a (mocked) sm_80: skipped before anything launches, the others still run.
    monkeypatch.setattr(kp, "current_capability", lambda: sm80)
    s = kc.gelu_linear_sweep("fwd", 16, 24, "float32", xs=(5,), providers=["triton-tma-persistent", "cublas+gelu"])
    out = _run([s])
    assert out["skipped"] == [{"name": "gelu_linear-fwd-float32-16x24/triton-tma-persistent/M=5",
                               "reason": "sm_80 has no TMA (sm_90 and newer)"}]
    assert [r["provider"] for r in out["benchmarks"]] == ["cublas+gelu"]
    a = kc.attention_sweep("fwd", True, 16, "bfloat16", xs=(16384,))
    assert a.skip(a.points[0], "triton-tma") == "sm_80 has no TMA (sm_90 and newer)"
    assert "GiB" in a.skip(a.points[0], "naive") and a.skip(a.points[0], "triton-pointer") is None


def test_our_forced_paths_never_set_the_tolerance_nor_fail_the_run():
    from tritongpt.kernels import fused_linear

    def ln(t, scale=1.0):
        return torch.nn.functional.layer_norm(t["x"], t["x"].shape[-1:], t["weight"], t["bias"]) * scale

    s = kc.layer_norm_sweep("fwd", False, "float32", xs=(32,), rows=4, providers=["triton", "torch"])
    s.providers = {"triton": lambda t: ln(t, 1.04), "triton-pointer": ln, "triton-tma": lambda t: ln(t, 1.5),
                   "torch": lambda t: ln(t, 1.03)}
    recs = {r["provider"]: r for r in _run([s])["benchmarks"]}
    # tolerance = 2 x torch's error, not 2 x triton-pointer's exact 0; a wrong forced path is reported, not fatal
    assert recs["triton"]["accurate"] and recs["triton"]["tolerance"] == pytest.approx(2 * recs["torch"]["max_err"])
    assert recs["triton-tma"]["accurate"] is False and _run([s])["failures"] == []
    # a provider that raises with a path pinned (its restore hook never ran) leaves no forced path behind
    s.providers = {"triton": ln, "triton-tma": lambda t: setattr(fused_linear, "FORCE_PATH", "tma") or 1 / 0}
    s.reset = kc.kernel_paths.reset_linear_path
    out = _run([s])
    assert fused_linear.FORCE_PATH is None and out["skipped"][0]["reason"].startswith("ZeroDivisionError")


def test_backward_runs_with_the_pinned_path(monkeypatch):
    from tritongpt.bench import kernel_paths as kp
    from tritongpt.kernels import fused_linear, gelu_linear

    seen = []
    real = fused_linear._bwd
    monkeypatch.setattr(fused_linear, "_bwd", lambda *a: seen.append(fused_linear.FORCE_PATH) or real(*a))
    x, w, b = (torch.randn(*shape, requires_grad=True) for shape in ((8, 16), (24, 16), (24,)))
    fn = kp.linear_path("pointer", lambda t: gelu_linear(t["x"], t["weight"], t["bias"]))
    y = fn({"x": x, "weight": w, "bias": b})
    assert fused_linear.FORCE_PATH is None  # only while our kernels run
    for _ in range(2):  # the node's hooks fire on every backward through it (bwd sweeps retain the graph)
        torch.autograd.grad(y, (x, w, b), torch.ones_like(y), retain_graph=True)
    assert seen == ["pointer", "pointer"] and fused_linear.FORCE_PATH is None
