"""bench/results.py: result JSON files, the CSV history and the per-sweep plots, on synthetic results."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest

from tritongpt.bench import results as R
from tritongpt.bench.compare import load_results

H100 = "NVIDIA H100 80GB HBM3"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _samples(median: float, n: int = 7) -> list[float]:
    return [median * (1 + 0.01 * (k - n // 2)) for k in range(n)]


def _record(sweep: str, kernel: str, direction: str, provider: str, x_name: str, x: int, params: dict,
            median: float, flops: float | None = None, nbytes: float | None = None, **extra) -> dict:
    tflops = flops / median / 1e12 if flops else None
    gbs = nbytes / median / 1e9 if nbytes else None
    s = _samples(median)
    rec = {"name": f"{sweep}/{provider}/{x_name}={x}", "sweep": sweep, "kernel": kernel, "direction": direction,
           "provider": provider, "params": dict(params, **{x_name: x}), "x_name": x_name, "x": x, "samples": s,
           "timer": "do_bench", "l2": "flushed", "warmup_s": 0.5, "median_s": median, "q20_s": s[2],
           "q80_s": s[4], "flops": flops, "bytes": nbytes, "tflops": tflops, "gbs": gbs,
           "peak_fraction": (tflops / 989.0 if tflops else gbs / 3350.0 if gbs else None),
           "bound": "compute" if flops else "memory", "max_abs_err": 1e-3,
           "max_err": 2e-3, "tolerance": 2e-2, "accurate": True}
    rec.update(extra)
    return rec


def _snapshot(sm: int, power: float, temp: float, reasons: list[str]) -> dict:
    return {"name": H100, "driver": "560.35.03", "sm_clock_mhz": sm, "sm_clock_max_mhz": 1980, "mem_clock_mhz": 2619,
            "mem_clock_max_mhz": 2619, "power_w": power, "power_limit_w": 700.0, "temperature_c": temp,
            "pstate": 0, "clock_event_reasons": 0, "clock_event_reason_names": reasons}


def kernels_result(attn_tflops: float = 400.0, ln_fraction: float = 0.85, *, gpu: str | None = H100,
                   created: str = "2026-11-22T06:01:02Z", throttled: bool | None = False,
                   gelu: tuple[float, float, float] | None = None,
                   lce: dict[str, tuple[float, int]] | None = None) -> dict:
    """A kernels-suite result: attention (TFLOP/s) and LayerNorm (GB/s) sweeps, 3 providers x 3 sizes each.

    Triton's attention reaches ``attn_tflops`` at T >= 4096 and its LayerNorm ``ln_fraction`` of the H100's
    3350 GB/s at every N. ``gelu``: add a gelu_linear sweep with medians (triton, cublas, cublas+gelu) in
    units of 60 us. ``lce``: add the linear_cross_entropy fwd+bwd records at N=16384, C=768, provider ->
    (median ms, peak memory bytes).
    """
    attn, ln = "attention-fwd-causal-bf16-d128", "layer_norm-fwd-bf16"
    recs = []
    B, H, D = 4, 16, 128
    for T in (1024, 4096, 8192):
        flops = 4 * B * H * T * T * D / 2  # causal: half of QK^T and PV
        ours = flops / ((attn_tflops if T >= 4096 else 0.8 * attn_tflops) * 1e12)
        medians = {"triton": ours, "sdpa-flash": ours * 1.1, "naive": ours * 4.0}
        for p, m in medians.items():
            extra = {"speedup": {"sdpa-flash": 1.1, "naive": 4.0}} if p == "triton" else {}
            recs.append(_record(attn, "attention", "fwd", p, "T", T, {"B": B, "H": H, "D": D, "dtype": "bfloat16",
                                                                          "causal": True}, m, flops=flops, **extra))
    M = 8192
    for N in (1024, 4096, 8192):
        nbytes = 2 * M * N * 2 + 2 * N * 2
        ours = nbytes / (ln_fraction * 3350e9)
        for p, m in {"triton": ours, "torch": ours * 1.3, "torch.compile": ours * 1.05}.items():
            extra = {"speedup": {"torch": 1.3, "torch.compile": 1.05}} if p == "triton" else {}
            recs.append(_record(ln, "layer_norm", "fwd", p, "N", N, {"M": M, "dtype": "bfloat16"}, m, nbytes=nbytes,
                                **extra))
    sweeps = [{"sweep": attn, "kernel": "attention", "title": "Attention forward, causal, bf16, D=128",
               "x_name": "T", "metric": "tflops"},
              {"sweep": ln, "kernel": "layer_norm", "title": "LayerNorm forward, bf16, M=8192", "x_name": "N",
               "metric": "gbs"}]
    if gelu is not None:
        gl = "gelu_linear-fwd-bf16"
        sweeps.append({"sweep": gl, "kernel": "gelu_linear", "title": "GELU(linear) forward", "x_name": "N",
                       "metric": "tflops"})
        for p, ms in zip(("triton", "cublas", "cublas+gelu"), gelu, strict=True):
            flops = 2 * 8192 * 768 * 3072
            recs.append(_record(gl, "gelu_linear", "fwd", p, "N", 3072, {"M": 8192, "K": 768, "dtype": "bfloat16"},
                                ms * 60e-6, flops=flops))
    if lce is not None:
        sw = "linear_cross_entropy-fwd+bwd-bfloat16-768x50304"
        sweeps.append({"sweep": sw, "kernel": "linear_cross_entropy", "title": "cross_entropy(x @ W^T) fwd+bwd",
                       "x_name": "N", "metric": "tflops"})
        for p, (ms, peak) in lce.items():
            recs.append(_record(sw, "linear_cross_entropy", "fwd+bwd", p, "N", 16384,
                                {"C": 768, "V": 50304, "dtype": "bfloat16"}, ms * 1e-3,
                                flops=6 * 16384 * 50304 * 768, peak_memory_bytes=peak))
    nvml = {"before": _snapshot(1980, 120.0, 38, []),
            "after": _snapshot(1755 if throttled else 1980, 690.0, 71, ["sw_power_cap"] if throttled else [])}
    return {"schema": R.SCHEMA, "suite": "kernels", "created": created,
            "environment": {"gpu": gpu, "device": "cuda" if gpu else "cpu", "torch": "2.9.0", "triton": "3.5.0",
                            "cuda": "12.8", "driver": "560.35.03", "python": "3.11.7", "commit": "f44a58e",
                            "dirty": False, "nvml": nvml if gpu else None, "throttled": throttled,
                            "throttle_reasons": ["sw_power_cap"] if throttled else []},
            "sweeps": sweeps, "benchmarks": recs,
            "skipped": [{"name": f"{attn}/naive/T=16384", "reason": "out of memory"}]}


def generate_result(created: str = "2026-11-22T07:00:00Z") -> dict:
    """A CPU generate-suite result: records with just a name, samples and a couple of facts."""
    recs = [{"name": f"generate/{p}/B={b}/itl", "provider": p, "samples": _samples(0.02 * b ** 0.5),
             "tokens_per_s": 50.0 * b} for p in ("tritongpt[torch]", "transformers") for b in (1, 8)]
    return {"schema": R.SCHEMA, "suite": "generate", "created": created,
            "environment": {"gpu": None, "device": "cpu", "torch": "2.9.0", "triton": "3.5.0", "cuda": None,
                            "driver": None, "python": "3.11.7", "commit": None, "dirty": None, "nvml": None,
                            "throttled": None, "throttle_reasons": []},
            "benchmarks": recs}


# --------------------------------------------------------------------------------------------------------------


def test_filename_from_suite_device_and_created():
    assert R.result_filename(kernels_result()) == "kernels-nvidia-h100-80gb-hbm3-20261122-060102.json"
    assert R.result_filename(generate_result()) == "generate-cpu-20261122-070000.json"
    # a non-UTC offset is converted, so names sort by real time
    assert R.result_filename(generate_result("2026-11-22T08:00:00+01:00")) == "generate-cpu-20261122-070000.json"


def test_json_round_trip_keeps_raw_samples_and_never_overwrites(tmp_path):
    result = kernels_result()
    out = tmp_path / "nested" / "results"  # created on demand
    p1 = R.write_results(result, out)
    p2 = R.write_results(kernels_result(attn_tflops=200.0), out)
    p3 = R.write_results(result, out)
    assert p1.name == "kernels-nvidia-h100-80gb-hbm3-20261122-060102.json"
    assert p2.name == "kernels-nvidia-h100-80gb-hbm3-20261122-060102-1.json"
    assert p3.name == "kernels-nvidia-h100-80gb-hbm3-20261122-060102-2.json"
    assert R.load_result(p1) == result and json.loads(p1.read_text()) == result
    assert json.loads(p2.read_text())["benchmarks"][3]["samples"] != result["benchmarks"][3]["samples"]
    assert load_results(p1)["benchmarks"][0]["samples"] == result["benchmarks"][0]["samples"]  # compare reads it
    assert sorted(f.name for f in out.iterdir()) == sorted([p1.name, p2.name, p3.name])  # no temporaries left


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(schema="tritongpt-bench/0"), "expected a 'tritongpt-bench/1' result"),
    (lambda r: r.pop("suite"), "'suite' must be"),
    (lambda r: r.update(created="yesterday"), "'created': expected an ISO-8601 time"),
    (lambda r: r["benchmarks"][2].update(samples=[1e-3]), "benchmarks[2] (attention-fwd-causal-bf16-d128/naive/T=1024)"
                                                          " needs >= 2 positive finite samples"),
    (lambda r: r["benchmarks"][0]["samples"].append(float("nan")), "needs >= 2 positive finite samples"),
    (lambda r: r["benchmarks"][1].update(name=r["benchmarks"][0]["name"]), "benchmarks[1]: duplicate name"),
    (lambda r: r["benchmarks"][0].update(tflops="fast"), "'tflops' must be a number or null"),
    (lambda r: r["sweeps"][1].update(metric="GB/s"), "sweeps[1] (layer_norm-fwd-bf16): 'metric' must be one of"),
    (lambda r: r.update(benchmarks={}), "'benchmarks' must be a list"),
    (lambda r: r["environment"].update(gpu=3), "environment.gpu must be a string"),
])
def test_schema_errors_name_the_field_and_nothing_is_written(tmp_path, mutate, message):
    bad = copy.deepcopy(kernels_result())
    mutate(bad)
    with pytest.raises(R.ResultError) as e:
        R.write_results(bad, tmp_path / "out")
    assert message in str(e.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_load_result_rejects_unreadable_files(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(R.ResultError, match=r"x\.json: not a readable JSON result file"):
        R.load_result(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("[1, 2]")
    with pytest.raises(R.ResultError, match="expected a JSON object"):
        R.load_result(tmp_path / "y.json")


def _read_csv(path: Path) -> tuple[str, list[dict[str, str]]]:
    text = path.read_text()
    return text, list(csv.DictReader(text.splitlines()))


def test_history_header_once_and_one_row_per_record(tmp_path):
    k, g = kernels_result(), generate_result()
    R.save(k, tmp_path)
    R.save(g, tmp_path)
    text, rows = _read_csv(tmp_path / "history.csv")
    assert text.splitlines()[0] == ",".join(R.HISTORY_COLUMNS)
    assert text.count("created,commit,") == 1
    assert len(rows) == len(k["benchmarks"]) + len(g["benchmarks"])
    first = rows[0]
    assert first["name"] == k["benchmarks"][0]["name"] and first["gpu"] == H100 and first["suite"] == "kernels"
    assert float(first["median_s"]) == k["benchmarks"][0]["median_s"]
    assert float(first["tflops"]) == pytest.approx(320.0) and first["gbs"] == ""
    assert first["speedup_best"] == "4.0" and first["accurate"] == "true" and first["throttled"] == "false"
    assert first["n_samples"] == "7" and first["commit"] == "f44a58e" and first["dirty"] == "false"
    assert rows[1]["speedup_best"] == ""  # a baseline has no speedups
    cpu = rows[-1]
    assert cpu["gpu"] == "cpu" and cpu["suite"] == "generate" and cpu["sweep"] == "" and cpu["throttled"] == ""
    # no median_s in the record: computed from the samples, as are the quantiles
    s = g["benchmarks"][-1]["samples"]
    assert float(cpu["median_s"]) == pytest.approx(s[3]) and float(cpu["q20_s"]) < float(cpu["median_s"])


def test_history_with_other_columns_is_rotated_not_mangled(tmp_path):
    hist = tmp_path / "history.csv"
    old = "created,name,median_s\n2025-01-01T00:00:00Z,a,0.1\n"
    hist.write_text(old)
    with pytest.warns(UserWarning, match="columns differ"):
        R.append_history(generate_result(), hist)
    rotated = [f for f in tmp_path.iterdir() if f.name.startswith("history-")]
    assert len(rotated) == 1 and rotated[0].read_text() == old
    text, rows = _read_csv(hist)
    assert text.splitlines()[0] == ",".join(R.HISTORY_COLUMNS) and len(rows) == 4


def _colour_pixels(png: Path, rgb: tuple[int, int, int]) -> int:
    import numpy as np
    from matplotlib.image import imread

    img = (imread(png)[..., :3] * 255).round().astype(int)
    return int((np.abs(img - np.array(rgb)).sum(axis=-1) < 30).sum())


def test_plots_one_png_per_sweep_with_lines(tmp_path):
    result = kernels_result()
    paths = R.plot_sweeps(result, tmp_path)
    assert [p.name for p in paths] == [
        "kernels-nvidia-h100-80gb-hbm3-20261122-060102-attention-fwd-causal-bf16-d128.png",
        "kernels-nvidia-h100-80gb-hbm3-20261122-060102-layer-norm-fwd-bf16.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 20_000
        # one line per provider in matplotlib's first three colours (C0 blue, C1 orange, C2 green)
        for rgb in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):
            assert _colour_pixels(p, rgb) > 100
    assert not [f for f in tmp_path.iterdir() if f.suffix == ".tmp"]


def test_plots_skip_records_without_the_metric(tmp_path):
    result = kernels_result()
    for b in result["benchmarks"]:
        if b["sweep"].startswith("layer_norm") or b["provider"] == "naive":
            b["gbs"] = b["tflops"] = None
    series = R.sweep_series(result, result["sweeps"][0])
    assert sorted(series) == ["sdpa-flash", "triton"] and [x for x, _ in series["triton"]] == [1024, 4096, 8192]
    paths = R.plot_sweeps(result, tmp_path, prefix="run")
    assert [p.name for p in paths] == ["run-attention-fwd-causal-bf16-d128.png"]  # LayerNorm: nothing to draw
    assert _colour_pixels(paths[0], (44, 160, 44)) < 10  # no third provider line
    assert R.plot_sweeps(generate_result(), tmp_path) == []  # no sweeps


def test_save_returns_every_path(tmp_path):
    paths = R.save(kernels_result(), tmp_path / "results")
    assert paths["json"].is_file() and paths["history"] == tmp_path / "results" / "history.csv"
    assert len(paths["plots"]) == 2 and all(p.stem.startswith(paths["json"].stem) for p in paths["plots"])


def test_peak_line_only_where_the_table_has_the_right_peak():
    result = kernels_result()
    attn, ln = result["sweeps"]
    assert R._peak(result, attn)[0] == 989.0 and R._peak(result, ln)[0] == 3350.0
    fp32 = dict(attn, dtype="float32")  # the table's tensor-core peak is bf16/fp16: no line for fp32 FLOP/s
    assert R._peak(result, fp32) is None and R._peak(result, dict(ln, dtype="float32"))[0] == 3350.0
    assert R._peak(kernels_result(gpu="Some Future GPU"), attn) is None  # unknown GPU: no guess
