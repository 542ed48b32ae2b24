"""`tritongpt bench compare`: significance AND threshold, on synthetic samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tritongpt.bench.compare import SCHEMA, compare, parse_threshold
from tritongpt.engine.cli import main

ENV = {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.13.0", "triton": "3.6.0"}


def result(samples: dict[str, np.ndarray], env=ENV) -> dict:
    return {"schema": SCHEMA, "environment": dict(env),
            "benchmarks": [{"name": k, "samples": [float(x) for x in v]} for k, v in samples.items()]}


def noisy(median: float, n: int = 50, seed: int = 0, noise: float = 0.03) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return median * (1 + noise * rng.standard_normal(n)).clip(0.5)


def test_twenty_percent_slowdown_with_noise_is_caught():
    rows, warnings = compare(result({"attn": noisy(1e-3)}), result({"attn": noisy(1.2e-3, seed=1)}))
    assert rows[0].verdict == "regression" and rows[0].ratio == pytest.approx(1.2, rel=0.03)
    assert warnings == []


def test_identical_distributions_pass():
    rows, _ = compare(result({"ln": noisy(1e-4)}), result({"ln": noisy(1e-4, seed=7)}))
    assert rows[0].verdict == "same"


def test_small_change_under_threshold_passes_even_if_significant():
    rows, _ = compare(result({"mlp": noisy(1e-3, n=400, noise=0.005)}),
                      result({"mlp": noisy(1.02e-3, n=400, seed=3, noise=0.005)}), threshold=0.05)
    assert rows[0].p_slower < 0.01 and rows[0].verdict == "same"


def test_big_but_noisy_change_needs_significance():
    rows, _ = compare(result({"x": noisy(1e-3, n=3, noise=0.5)}), result({"x": noisy(1.1e-3, n=3, seed=2, noise=0.5)}))
    assert rows[0].verdict == "same"


def test_improvement_and_environment_warning():
    other = {**ENV, "gpu": "NVIDIA A100-SXM4-80GB"}
    rows, warnings = compare(result({"a": noisy(1e-3), "b": noisy(1e-3)}),
                             result({"a": noisy(0.7e-3, seed=4), "c": noisy(1e-3)}, env=other))
    assert [r.verdict for r in rows] == ["improvement"]
    assert any("gpu" in w for w in warnings) and any("b: only in the base" in w for w in warnings)


def test_cli_exit_codes(tmp_path, capsys):
    base, same, slow = tmp_path / "base.json", tmp_path / "same.json", tmp_path / "slow.json"
    base.write_text(json.dumps(result({"k": noisy(1e-3)})))
    same.write_text(json.dumps(result({"k": noisy(1e-3, seed=5)})))
    slow.write_text(json.dumps(result({"k": noisy(1.3e-3, seed=6)})))
    assert main(["bench", "compare", str(base), str(same)]) == 0
    assert main(["bench", "compare", str(base), str(slow), "--threshold", "5%"]) == 1
    assert main(["bench", "compare", str(base), str(slow), "--threshold", "50%"]) == 0
    out = capsys.readouterr().out
    assert "new/base" in out and "regression" in out
    assert main(["bench", "compare", str(base), str(tmp_path / "missing.json")]) == 2
    assert main(["bench", "compare", str(base), str(same), "--threshold", "abc"]) == 2


def test_threshold_parsing_and_bad_files(tmp_path):
    assert parse_threshold("5%") == pytest.approx(0.05) and parse_threshold("0.1") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="threshold"):
        parse_threshold("-1%")
    from tritongpt.bench.compare import load_results

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": SCHEMA, "benchmarks": [{"name": "x", "samples": [1.0]}]}))
    with pytest.raises(ValueError, match="2 positive finite samples"):
        load_results(bad)
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="schema"):
        load_results(bad)


def test_throttled_run_is_warned_about():
    throttled = dict(ENV, throttled=True, throttle_reasons=["sw_thermal_slowdown"])
    _, warnings = compare(result({"a": noisy(1e-3)}), result({"a": noisy(1e-3, seed=2)}, env=throttled))
    assert any("new run throttled (sw_thermal_slowdown)" in w for w in warnings)


def test_runs_timed_with_different_timers_compare_on_the_do_bench_samples():
    graph = {"name": "ln", "samples": [float(x) for x in noisy(5e-6)], "timer": "cuda_graph",
             "do_bench_samples": [float(x) for x in noisy(8e-6, seed=4)]}
    flushed = {"name": "ln", "samples": [float(x) for x in noisy(8e-6, seed=5)], "timer": "do_bench"}
    base = {"schema": SCHEMA, "environment": ENV, "benchmarks": [graph]}
    new = {"schema": SCHEMA, "environment": ENV, "benchmarks": [flushed]}
    rows, warnings = compare(base, new)
    # graph samples (warm, 5 us) against flushed ones (8 us) would read as a 60% regression
    assert rows[0].verdict == "same" and rows[0].ratio == pytest.approx(1.0, rel=0.03)
    assert any("compared on the do_bench samples" in w for w in warnings)
    del graph["do_bench_samples"]
    rows, warnings = compare(base, new)
    assert rows[0].verdict == "regression" and any("may not be comparable" in w for w in warnings)
