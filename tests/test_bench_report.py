"""bench/report.py: the markdown report, its goal checks and ``main``, on synthetic results."""

from __future__ import annotations

import json
import re

from test_bench_results import H100, PNG_SIGNATURE, generate_result, kernels_result

from tritongpt.bench import report
from tritongpt.bench import results as R


def _goal_rows(md: str) -> dict[str, str]:
    """goal -> its table row(s) in the Goals section."""
    section = md.split("## Goals", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| goal"):
            goal = line.split(" | ")[0][2:]
            rows[goal] = rows.get(goal, "") + line
    return rows


ATTN, LN, GELU = "Attention fwd bf16 D=128 causal T>=4k on an H100", "LayerNorm fwd, hidden >= 1024", "gelu_linear fwd"
LCE_MEM = "LM head + loss peak memory (linear_cross_entropy)"
LCE_TIME = "LM head + loss time on an H100 (linear_cross_entropy)"


def test_report_has_environment_sweep_tables_plots_and_lists(tmp_path):
    k, g = kernels_result(throttled=True), generate_result()
    k["benchmarks"][2].update(accurate=False, max_err=0.4, max_abs_err=0.5)  # naive attention at T=1024
    R.plot_sweeps(k, tmp_path / "plots")
    md = report.render_report([k, g], tmp_path / "plots", tmp_path)
    assert md.startswith("# tritongpt benchmark report")
    assert "## kernels — NVIDIA H100 80GB HBM3 — 2026-11-22T06:01:02Z" in md
    assert "| SM clock (before → after) | 1980 / 1980 MHz → 1755 / 1980 MHz |" in md
    assert "| power | 120 / 700 W → 690 / 700 W |" in md and "| temperature | 38 °C → 71 °C |" in md
    assert "**WARNING: the GPU throttled during this run (sw_power_cap); its timings are pessimistic.**" in md
    assert "| torch | 2.9.0 |" in md and "| commit | f44a58e |" in md
    # attention sweep table: triton first, the baselines, then Triton's speedups
    assert "| T | triton | sdpa-flash | naive | triton vs sdpa-flash | triton vs naive |" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| 4096 |") and "TFLOP" not in ln and "400.0" in ln)
    assert "400.0 · 40%" in row and "1.10x | 4.00x |" in row
    assert re.search(r"\| 1024 \| 11\.8 us · 2847\.5 · 85% \|", md)  # LayerNorm in GB/s
    for plot in ("attention-fwd-causal-bf16-d128", "layer-norm-fwd-bf16"):
        link = f"(plots/kernels-nvidia-h100-80gb-hbm3-20261122-060102-{plot}.png)"
        assert link in md and (tmp_path / link[1:-1]).is_file()
    assert "![Attention forward, causal, bf16, D=128](plots/" in md
    assert "### Accuracy failures" in md and "| attention-fwd-causal-bf16-d128/naive/T=1024 | 0.4 | 0.5 | 0.02 |" in md
    assert "- `attention-fwd-causal-bf16-d128/naive/T=16384`: out of memory" in md
    # generate suite: a plain table of its records, CPU environment, throttling unknown
    assert "## generate — CPU — 2026-11-22T07:00:00Z" in md and "| throttled | unknown (no NVML readings) |" in md
    assert "| benchmark | median | q20 / q80 | n |" in md
    assert re.search(r"\| generate/transformers/B=8/itl \| 56\.569 ms \| 55\.\d+ ms / 57\.\d+ ms \| 7 \|", md)


def test_no_plot_link_when_the_plot_is_absent(tmp_path):
    md = report.render_report([kernels_result(throttled=False)], tmp_path, tmp_path)
    assert "![" not in md and "| T | triton |" in md
    assert "WARNING" not in md and "| throttled | no |" in md


def test_goals_met():
    md = report.render_report([kernels_result(400.0, 0.85, gelu=(1.05, 1.0, 1.3))], "/nonexistent", "/")
    rows = _goal_rows(md)
    assert "min 400 TFLOP/s at T=4096 over T=4096, 8192" in rows[ATTN] and rows[ATTN].endswith("| met |")
    assert H100 in rows[ATTN]
    assert "= 85% of 3350 GB/s" in rows[LN] and rows[LN].endswith("| met |")
    assert "triton / cuBLAS linear = 1.05x" in rows[GELU] and "(cuBLAS + GELU) = 0.81x" in rows[GELU]
    assert rows[GELU].endswith("| met |")


def test_goals_not_met():
    md = report.render_report([kernels_result(200.0, 0.5, gelu=(1.2, 1.0, 1.1))], "/nonexistent", "/")
    rows = _goal_rows(md)
    assert "min 200 TFLOP/s" in rows[ATTN] and rows[ATTN].endswith("| **NOT met** |")
    assert "= 50% of 3350 GB/s" in rows[LN] and rows[LN].endswith("| **NOT met** |")
    assert "= 1.20x" in rows[GELU] and rows[GELU].endswith("| **NOT met** |")
    # faster than linear + GELU but 15% behind linear alone: still not met
    rows = _goal_rows(report.render_report([kernels_result(gelu=(1.15, 1.0, 1.3))], "/x", "/"))
    assert rows[GELU].endswith("| **NOT met** |")


def test_goals_not_measured_without_matching_records():
    rows = _goal_rows(report.render_report([generate_result()], "/x", "/"))
    assert all(r.endswith("| — | — | not measured |") for r in rows.values()) and len(rows) == 5
    # attention measured on another GPU: quoted, but the H100 target is not claimed either way
    a100 = kernels_result(gpu="NVIDIA A100-SXM4-80GB")
    rows = _goal_rows(report.render_report([a100], "/x", "/"))
    assert "NVIDIA A100-SXM4-80GB" in rows[ATTN] and rows[ATTN].endswith("not measured on an H100 (the target is "
                                                                           "H100-specific) |")
    assert "of 2039 GB/s" in rows[LN]  # the LayerNorm goal holds on any GPU with a known bandwidth
    # wrong shape: D=64 attention does not count
    k = kernels_result()
    for b in k["benchmarks"]:
        b["params"]["D"] = 64
    assert _goal_rows(report.render_report([k], "/x", "/"))[ATTN].endswith("| not measured |")


def test_main_newest_per_suite_writes_report_and_plots(tmp_path, capsys):
    res = tmp_path / "results"
    R.save(kernels_result(200.0, created="2026-11-20T00:00:00Z"), res)
    R.save(kernels_result(400.0, created="2026-11-22T06:01:02Z"), res)
    R.save(generate_result(), res)
    assert report.main([], res, None) == 0
    out = res / "REPORT.md"
    assert capsys.readouterr().out.strip() == str(out)
    md = out.read_text()
    assert md.count("\n## kernels") == 1 and "2026-11-22T06:01:02Z" in md and "2026-11-20" not in md
    assert "## generate" in md and md.index("## kernels") < md.index("## generate")
    assert _goal_rows(md)[ATTN].endswith("| met |")
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(links) == 2 and all((res / p).read_bytes()[:8] == PNG_SIGNATURE for p in links)
    assert "Source: `kernels-nvidia-h100-80gb-hbm3-20261122-060102.json`" in md


def test_main_explicit_files_and_other_output(tmp_path, capsys):
    p = R.write_results(kernels_result(), tmp_path / "results")
    out = tmp_path / "docs" / "bench.md"
    assert report.main([p], tmp_path / "elsewhere", out) == 0
    md = out.read_text()
    assert "Source: `../results/" in md
    assert all((out.parent / link).is_file() for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md))


def test_main_nothing_to_report_or_invalid_file(tmp_path, capsys):
    assert report.main([], tmp_path / "missing", None) == 2
    assert "nothing to report: no valid result files in" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report.main([], tmp_path / "empty", None) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": R.SCHEMA, "benchmarks": [{"name": "a", "samples": [1.0]}]}))
    assert report.main([bad], tmp_path, None) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.json" in err and ">= 2 positive finite samples" in err
    assert not (tmp_path / "REPORT.md").exists()
    # in the results folder a stray file is skipped with a warning, the valid ones are reported
    R.write_results(generate_result(), tmp_path)
    assert report.main([], tmp_path, None) == 0
    assert "warning: skipping" in capsys.readouterr().err


def test_linear_cross_entropy_goals():
    """Peak memory against the plain head + loss on any GPU; time only on an H100, against eager."""
    ok = {"triton": (10.5, 600 * 2**20), "torch": (10.0, 4000 * 2**20), "torch.compile": (8.0, 3000 * 2**20)}
    rows = _goal_rows(report.render_report([kernels_result(lce=ok)], "/x", "/"))
    assert "600 MiB vs 4,000 MiB = 0.15x" in rows[LCE_MEM] and rows[LCE_MEM].endswith("| met |")
    assert "triton / eager = 1.05x, triton / torch.compile = 1.31x" in rows[LCE_TIME]
    assert rows[LCE_TIME].endswith("| met |")
    slow = dict(ok, triton=(11.5, 1200 * 2**20))
    rows = _goal_rows(report.render_report([kernels_result(lce=slow)], "/x", "/"))
    assert rows[LCE_MEM].endswith("| **NOT met** |") and rows[LCE_TIME].endswith("| **NOT met** |")
    rows = _goal_rows(report.render_report([kernels_result(lce=ok, gpu="NVIDIA A100-SXM4-80GB")], "/x", "/"))
    assert rows[LCE_MEM].endswith("| met |") and "not measured on an H100" in rows[LCE_TIME]
    no_peak = {k: (ms, None) for k, (ms, _) in ok.items()}
    rows = _goal_rows(report.render_report([kernels_result(lce=no_peak)], "/x", "/"))
    assert rows[LCE_MEM].endswith("| not measured |")
