"""The generation benchmark and the launch counter (tiny shapes; the numbers are not checked, the
accounting is)."""

from __future__ import annotations

import pytest
import torch

from tritongpt.bench import generate as gb
from tritongpt.bench.compare import load_results
from tritongpt.bench.launches import count_launches
from tritongpt.engine import GPT
from tritongpt.engine.cli import main


def test_decode_step_launches_at_most_8_per_layer_on_the_triton_backend():
    m = GPT.from_preset("tiny", block_size=512).eval()
    m.backend = "triton"
    total, per_layer, _ = gb.count_step_launches(m, 2, 300)  # long enough for a split KV range + merge
    assert per_layer <= 8, per_layer
    assert total <= 8 * m.config.n_layer + 6  # embeddings, final LayerNorm, LM head, position index
    m.backend = "torch"
    assert gb.count_step_launches(m, 2, 300)[1] > per_layer  # the reference path is not fused


def test_launch_counter_counts_kernels_not_views():
    x = torch.randn(4, 4)
    c = count_launches(lambda: (x.t()[1:].unsqueeze(0).view(1, 3, 4) + 1).sum())
    assert c.total == 2 and c.by_name == {"aten.add": 1, "aten.sum": 1}
    c = count_launches(lambda: x.t().reshape(16))  # a transposed tensor cannot be viewed flat: one copy
    assert c.by_name == {"aten.clone": 1}
    c = count_launches(lambda: torch.nn.functional.dropout(x, 0.5, training=False))
    assert c.total == 0


def test_step_bytes_counts_weights_once_plus_kv():
    m = GPT.from_preset("tiny")
    cfg = m.config
    weights = (m.num_parameters() - cfg.block_size * cfg.n_embd) * 4
    kv = 2 * cfg.n_layer * cfg.n_embd * 4
    assert gb.step_bytes(m, 1, 10) == weights + cfg.n_embd * 4 + 11 * kv
    assert gb.step_bytes(m, 3, 10) - gb.step_bytes(m, 1, 10) == 2 * (cfg.n_embd * 4 + 11 * kv)


def test_streaming_read_bandwidth_is_measured():
    bw = gb.streaming_read_bandwidth(torch.device("cpu"), nbytes=8 << 20, repeats=2)
    assert bw["best_gbs"] == max(bw["sum_gbs"], bw["gemv_gbs"]) > 0


def test_bench_generate_cli_writes_a_report(tmp_path, capsys):
    pytest.importorskip("transformers")
    out = tmp_path / "gen.json"
    code = main(["bench", "generate", "--preset", "tiny", "--batch", "1,2", "--prompt-len", "4", "--new-tokens", "5",
                  "--repeats", "2", "--json", str(out)])
    assert code == 0
    doc = load_results(out)  # what `bench compare` reads
    assert doc["suite"] == "generate" and doc["created"].endswith("Z")
    env = doc["environment"]
    assert env["device"] == "cpu" and env["gpu"] is None and env["throttled"] is None and env["cpu"]["threads"] >= 1
    names = [b["name"] for b in doc["benchmarks"]]
    assert len(names) == len(set(names))
    # Batched Hugging Face ITL is derived (an n-token run minus a 1-token run): on a busy CPU the
    # difference can come out <= 0, and then the record is listed as skipped with the reason instead.
    derived = "generate/transformers/batch=2/itl"
    skipped = {s["name"]: s["reason"] for s in doc["skipped"]}
    for prov, B in (("tritongpt[torch]", 1), ("transformers", 1), ("tritongpt[torch]", 2), ("transformers", 2)):
        for metric in ("ttft", "itl", "e2e"):
            name = f"generate/{prov}/batch={B}/{metric}"
            assert name in names or (name == derived and "out of range" in skipped.get(name, "")), name
    ours = {b["name"]: b for b in doc["benchmarks"]}["generate/tritongpt[torch]/batch=2/itl"]
    assert len(ours["samples"]) == 2 * 4 and ours["params"]["B"] == 2 and ours["timer"] == "wall"
    if derived in names:  # one estimate per run, not n - 1 copies of it
        assert len({b["name"]: b for b in doc["benchmarks"]}[derived]["samples"]) == 2
    report = doc["report"]
    assert report["device"].startswith("CPU") and report["backend"] == "torch"
    rows = report["results"]
    assert [(r["provider"], r["batch"]) for r in rows] == [
        ("tritongpt[torch]", 1), ("transformers", 1), ("tritongpt[torch]", 2), ("transformers", 2)]
    for r in rows:
        assert r["ttft_ms"] > 0 and r["floor_ms"] > 0
        assert r["itl_p50_ms"] > 0 or (r["provider"], r["batch"]) == ("transformers", 2)  # derived, see above
        assert r["floor_ratio"] == pytest.approx(r["itl_p50_ms"] / r["floor_ms"], rel=1e-6)
    assert rows[0]["launches_per_layer"] > 0
    out = capsys.readouterr().out
    assert "x floor" in out and "CPU (" in out


def test_records_with_one_sample_are_skipped_not_written():
    doc = gb.result_document("generate", {})
    gb.add_record(doc, "a", [0.1])
    gb.add_record(doc, "b", [0.1, -0.01])
    gb.add_record(doc, "c", [0.3, 0.1, 0.2], provider="p")
    assert [s["name"] for s in doc["skipped"]] == ["a", "b"]
    [c] = doc["benchmarks"]
    assert c["median_s"] == 0.2 and c["q20_s"] == 0.1 and c["q80_s"] == 0.3 and c["provider"] == "p"


def test_bench_generate_rejects_bad_sizes(capsys):
    assert main(["bench", "generate", "--preset", "tiny", "--prompt-len", "30", "--new-tokens", "8"]) == 2
    assert "context window" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "generate", "--batch", "0"])
