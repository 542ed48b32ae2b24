"""`tritongpt bench train` on the CPU: the report's accounting (the numbers themselves are CPU timings)."""

from __future__ import annotations

import json

import pytest

from tritongpt.bench.compare import load_results
from tritongpt.bench.memory import largest_fitting, parse_size
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


def test_bench_train_rejects_bad_memory_options(capsys):
    for argv, needle in ((["--max-batch"], "--memory-limit SIZE"), (["--memory-limit", "lots"], "--memory-limit"),
                         (["--memory-limit=-2GiB"], "--memory-limit"), (["--batch-cap", "0"], "--batch-cap")):
        assert main(["bench", "train", "--backends", "torch", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, (argv, err)


def test_parse_size():
    assert parse_size("512MiB", "x") == 512 * 2**20
    assert parse_size("1.5 GB", "x") == 1_500_000_000
    assert parse_size("4096", "x") == 4096
    for bad in ("", "GiB", "0", "12parsecs", "infGiB", "nan"):
        with pytest.raises(ValueError, match="^x: expected a size"):
            parse_size(bad, "x")


@pytest.mark.parametrize("threshold", [0, 1, 5, 16, 17, 100, 1000])
@pytest.mark.parametrize("start", [1, 4, 40])
def test_largest_fitting_finds_the_threshold(threshold, start):
    found, probes = largest_fitting(lambda n: n <= threshold, start, cap=100)
    assert found == min(threshold, 100)
    assert all(ok == (n <= threshold) for n, ok in probes) and all(1 <= n <= 100 for n, _ in probes)
    assert len(probes) <= 2 * 7 + 1  # doubling then bisecting: logarithmic


@pytest.mark.kernel
def test_fused_loss_fits_a_larger_batch(tmp_path, capsys):
    """The triton backend with the fused head + loss against the plain one, on the interpreter: the plain
    step's footprint grows by the (B*T, V) fp32 logits, their softmax and gradient per row (~0.4 MB each
    here), the fused one's hardly at all, so under a 1.5 MB budget the fused loss reaches the batch cap (8)
    while the plain one stops at 2."""
    preset = tmp_path / "wide-vocab.toml"
    preset.write_text("[model]\nvocab_size = 2053\nblock_size = 16\nn_layer = 1\nn_head = 1\nn_embd = 16\n"
                      "dropout = 0.0\n")
    out = tmp_path / "train.json"
    code = main(["bench", "train", "--preset", str(preset), "--batch", "2", "--steps", "2", "--warmup", "0",
                 "--backends", "triton", "--interpreter", "--max-batch", "--memory-limit", "1.5MB",
                 "--batch-cap", "8", "--json", str(out)])
    assert code == 0
    doc = load_results(out)
    rows = {r["backend"]: r for r in doc["report"]["results"]}
    fused, plain = rows["triton"], rows["triton/plain-loss"]
    assert (fused["loss"], plain["loss"]) == ("fused", "plain")
    assert (fused["max_batch"], plain["max_batch"]) == (8, 2)
    assert fused["peak_memory_bytes"] < 0.8 * plain["peak_memory_bytes"]
    recs = {r["name"]: r for r in doc["benchmarks"]}
    assert recs["train/triton/plain-loss/step"]["max_batch_probes"] == [[2, True], [4, False], [3, False]]
    assert "largest batch 8 vs 2" in capsys.readouterr().out
