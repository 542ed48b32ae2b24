"""`tritongpt bench all` (bench/suite.py): the plan, the no-GPU exit, argument errors, and the stage runner
and combined report on CPU with stand-in stages (the real stages need a GPU)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tritongpt.bench import kernel_cases as kc
from tritongpt.bench import kernels as kb
from tritongpt.bench import suite
from tritongpt.bench.results import add_record, load_result, result_document, save
from tritongpt.bench.timing import time_wall
from tritongpt.engine.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def test_dry_run_lists_the_three_benchmarks_and_their_files(tmp_path, capsys):
    out = tmp_path / "gpu-run"
    assert main(["bench", "all", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    stages = re.findall(r"^\d\. (\w+): ", text, re.M)
    assert stages == ["kernels", "train", "generate"]
    for name in ("kernels-<gpu>-<UTC time>.json", "kernels-<gpu>-<UTC time>-<sweep>.png", "train-<gpu>-<UTC time>.json",
                 "generate-<gpu>-<UTC time>.json", "history.csv", "REPORT.md"):
        assert str(out / name) in text, name
    assert "64 sweeps" in text and not out.exists() and list(tmp_path.iterdir()) == []
    assert main(["bench", "all", "--dry-run", "--quick", "--out", str(out)]) == 0
    quick = capsys.readouterr().out
    assert "12 sweeps" in quick and "--steps 5" in quick and "--batch 1,8 " in quick


def test_each_stage_is_the_same_run_as_its_own_subcommand(tmp_path):
    parser = build_parser()
    for quick in (False, True):
        for stage in suite.plan(tmp_path, quick):
            args = parser.parse_args(list(stage.argv))  # every listed command is one the CLI accepts
            assert args.suite == stage.name


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU exit")
def test_without_a_gpu_one_line_nonzero_exit_and_nothing_written(tmp_path, capsys):
    assert main(["bench", "all", "--out", str(tmp_path / "results")]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1
    assert cap.err.startswith("error: tritongpt bench all") and "CUDA GPU" in cap.err and "--dry-run" in cap.err
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_is_one_error_line(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    for extra in ([], ["--dry-run"]):
        assert main(["bench", "all", "--out", str(f), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: --out {f}: is a file; expected a folder"]
    assert f.read_text() == "x"


def _toy_kernels(out_dir: Path, log) -> tuple[list[Path], bool]:
    s = kc.layer_norm_sweep("fwd", False, "float32", xs=(16, 32), rows=4, providers=["torch"])
    _, failures, paths = kb.run_suite([s], device=torch.device("cpu"), timer=lambda fn, sw: time_wall(fn, repeats=2),
                                      peak=None, out_dir=out_dir, log=log)
    return [paths["json"]], not failures


def _toy_train(out_dir: Path, log) -> tuple[list[Path], bool]:
    doc = result_document("train", {"gpu": "Fake GPU", "device": "cuda"})
    add_record(doc, "train/torch/step", [0.1, 0.11, 0.12], provider="torch")
    return [save(doc, out_dir)["json"]], True


def _broken(out_dir: Path, log):
    raise RuntimeError("CUDA error: out of memory\nmore")


def test_stages_run_on_past_a_failure_and_the_report_covers_this_run(tmp_path, monkeypatch, capsys):
    stages = [suite.Stage("kernels", "toy", (), (), _toy_kernels), suite.Stage("generate", "toy", (), (), _broken),
              suite.Stage("train", "toy", (), (), _toy_train)]
    monkeypatch.setattr(suite, "plan", lambda out, quick: stages)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    old = tmp_path / "kernels-old.json"  # an earlier run's file in the same folder stays out of this report
    old.write_text("{}")
    assert suite.main(tmp_path, log=print) == 1
    cap = capsys.readouterr()
    assert "FAILED stage generate: RuntimeError: CUDA error: out of memory" in cap.err
    assert "Traceback" in cap.err  # kept for whoever reads the lent GPU's log
    files = sorted(p.name for p in tmp_path.glob("*.json") if p != old)
    assert [f.split("-2")[0] for f in files] == ["kernels-cpu", "train-fake-gpu"]
    report = (tmp_path / suite.REPORT_NAME).read_text()
    assert report.index("## kernels") < report.index("## train") and "kernels-old" not in report
    assert "layer_norm-fwd-plain-float32" in report and "train/torch/step" in report
    assert re.search(r"\.png\)", report)  # the kernels stage's plot, linked
    wrote = cap.out[cap.out.index("wrote:"):]
    assert re.findall(r"^  (/\S+)$", wrote, re.M) == [str(tmp_path / f) for f in [*files, suite.REPORT_NAME]]
    assert load_result(tmp_path / files[0])["suite"] == "kernels"


def test_make_bench_gpu_calls_bench_all_and_is_not_part_of_make_test():
    lines = (REPO / "Makefile").read_text().splitlines()
    i = lines.index(next(x for x in lines if x.startswith("bench-gpu:")))
    assert "tritongpt bench all --out $(BENCH_OUT)" in lines[i + 1]
    assert [x for x in lines if "bench all" in x and not x.startswith("#")] == [lines[i + 1]]
    rules = [x for x in lines if re.match(r"^[\w.-]+:", x) and not x.startswith((".PHONY", "bench-gpu:"))]
    assert not any("bench-gpu" in x for x in rules)  # no other target (test, demo, ...) depends on it
