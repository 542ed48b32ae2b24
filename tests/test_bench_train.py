"""`tritongpt bench train` on the CPU: the report's accounting (the numbers themselves are CPU timings)."""

from __future__ import annotations

import json

from tritongpt.bench.compare import load_results
from tritongpt.engine.cli import main


def test_bench_train_reports_per_backend(tmp_path, capsys):
    out = tmp_path / "train.json"
    code = main(["bench", "train", "--preset", "tiny", "--batch", "2", "--steps", "2", "--warmup", "1",
                 "--backends", "triton,torch", "--json", str(out)])
    assert code == 0
    doc = load_results(out)  # what `bench compare` reads
    assert doc["suite"] == "train" and doc["environment"]["device"] == "cpu"
    [rec] = doc["benchmarks"]
    assert rec["name"] == "train/torch/step" and len(rec["samples"]) == 2
    assert rec["samples"][0] == sum(rec["phase_samples"][k][0] for k in ("fwd", "bwd", "opt"))
    assert doc["skipped"][0]["name"] == "train/triton/step"
    report = json.loads(out.read_text())["report"]
    assert report["device"].startswith("CPU")
    [r] = report["results"]  # triton is skipped on a CPU, and says so
    assert r["backend"] == "torch" and r["mfu"] is None and r["tokens_per_s"] > 0
    assert abs(r["ms_per_step"] - (r["fwd_ms"] + r["bwd_ms"] + r["opt_ms"])) < 0.5 * r["ms_per_step"]
    assert "skipped on CPU" in capsys.readouterr().out


def test_bench_train_rejects_unknown_backend(capsys):
    assert main(["bench", "train", "--backends", "jax"]) == 2
    assert "--backends" in capsys.readouterr().err
