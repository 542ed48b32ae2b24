"""Wrong inputs to `tritongpt bench ...` and `tritongpt inspect`: one `error:` line naming the argument or
file, a non-zero exit, no traceback, nothing compiled or benchmarked first, and no file on disk lost.
Gates that would check nothing fail instead of passing."""

from __future__ import annotations

import json
import math
import os
import types

import pytest

from tritongpt.bench import compare as cmp
from tritongpt.bench import inspect_cli
from tritongpt.bench import results as R
from tritongpt.bench import static_check as ins
from tritongpt.engine.cli import main

SCHEMA = R.SCHEMA


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def result_json(path, benchmarks: dict[str, list[float]]):
    doc = {"schema": SCHEMA, "environment": {},
           "benchmarks": [{"name": k, "samples": v} for k, v in benchmarks.items()]}
    path.write_text(json.dumps(doc))  # allow_nan: inf/NaN come out as Infinity/NaN, as a broken writer would
    return path


SAMPLES = [1.0e-3, 1.1e-3, 0.9e-3, 1.05e-3, 0.95e-3, 1.0e-3]


# ---------------------------------------------------------------------------------------------------------------
# bench compare


@pytest.mark.parametrize("base, new", [({"x": SAMPLES}, {"y": SAMPLES}), ({}, {})])
def test_compare_without_a_common_benchmark_fails(tmp_path, capsys, base, new):
    a, b = result_json(tmp_path / "a.json", base), result_json(tmp_path / "b.json", new)
    rc, out, err = run_cli(capsys, "bench", "compare", a, b)
    assert rc == 2 and "no benchmark is in both files" in err and "regression(s)" not in out
    with pytest.raises(ValueError, match="nothing to compare"):
        cmp.compare(json.loads(a.read_text()), json.loads(b.read_text()))


@pytest.mark.parametrize("alpha", ["0", "1", "5", "-0.01", "nan", "inf"])
def test_compare_alpha_outside_0_1_is_an_error(tmp_path, capsys, alpha):
    a = result_json(tmp_path / "a.json", {"x": SAMPLES})
    rc, _, err = run_cli(capsys, "bench", "compare", a, a, "--alpha", alpha)
    assert rc == 2 and "--alpha" in err and "(0, 1)" in err


def test_compare_bare_threshold_is_a_fraction(tmp_path, capsys):
    a = result_json(tmp_path / "a.json", {"x": SAMPLES})
    slow = result_json(tmp_path / "slow.json", {"x": [s * 1.3 for s in SAMPLES]})
    rc, _, err = run_cli(capsys, "bench", "compare", a, slow, "--threshold", "5")
    assert rc == 2 and "did you mean 5%?" in err
    assert run_cli(capsys, "bench", "compare", a, slow, "--threshold", "0.05")[0] == 1  # the 30% slowdown counts
    assert cmp.parse_threshold("0.3") == pytest.approx(0.3) and cmp.parse_threshold("30%") == pytest.approx(0.3)
    for bad in ("1", "150", "100%", "-0.1", "nan", "inf%"):
        with pytest.raises(ValueError, match="--threshold"):
            cmp.parse_threshold(bad)
    with pytest.raises(ValueError, match="did you mean 5%"):
        cmp.compare(json.loads(a.read_text()), json.loads(slow.read_text()), threshold=5)


@pytest.mark.parametrize("bad", [math.inf, math.nan, 1e308, 1e-320, 0.0, -1e-3])
def test_compare_rejects_implausible_samples(tmp_path, capsys, bad):
    a = result_json(tmp_path / "a.json", {"x": SAMPLES})
    b = result_json(tmp_path / "b.json", {"x": SAMPLES[:3] + [bad] + SAMPLES[3:]})
    rc, out, err = run_cli(capsys, "bench", "compare", a, b)
    assert rc == 2 and "b.json" in err and "samples[3]" in err and "same" not in out
    rec = {"schema": SCHEMA, "benchmarks": [{"name": "x", "samples": SAMPLES[:3] + [bad]}]}
    with pytest.raises(ValueError, match="positive finite samples"):
        cmp.compare(json.loads(a.read_text()), rec)  # in-memory results are checked too


def test_compare_unreadable_inputs_name_the_file(tmp_path, capsys):
    a = result_json(tmp_path / "a.json", {"x": SAMPLES})
    trunc = tmp_path / "trunc.json"
    trunc.write_text(a.read_text()[:40])
    for path, words in ((trunc, "truncated or damaged"), (tmp_path / "none.json", "no such file"),
                        (tmp_path, "is a folder")):
        rc, _, err = run_cli(capsys, "bench", "compare", a, path)
        assert rc == 2 and str(path) in err and words in err


# ---------------------------------------------------------------------------------------------------------------
# tritongpt inspect (ins.inspect is replaced: nothing compiles here)


RECORD = next(iter(json.loads(ins.default_baseline_path().read_text())["records"].values())) \
    if ins.default_baseline_path().exists() else {
        "variant": "layer_norm_fwd[fixture]", "target": "sm_80", "registers": 32, "sass_instructions": 100,
        "warps_per_sm": 32, "stack_bytes": 0, "local_bytes": 0, "spill_instructions": 0, "shared_bytes": 0,
        "smem_limit": 166912, "mma_instructions": 0, "num_warps": 4, "num_stages": 1, "fits": True,
        "expect_mma": False, "source": "x"}


@pytest.fixture
def fake_compile(monkeypatch):
    """``ins.inspect`` returns ``state["records"]`` and counts calls; the variants are stand-ins."""
    state = {"calls": 0, "records": [dict(RECORD)]}

    def fake_inspect(variants, targets, **kw):
        state["calls"] += 1
        return [dict(r) for r in state["records"]]

    monkeypatch.setattr(ins, "inspect", fake_inspect)
    monkeypatch.setattr(ins, "all_variants", lambda: [types.SimpleNamespace(name=RECORD["variant"])])
    return state


def baseline_file(path, records=None):
    recs = {ins.record_key(RECORD): RECORD} if records is None else records
    path.write_text(json.dumps({"triton": ins.triton_version(), "records": recs, "traffic": []}))
    return path


def test_inspect_fake_compile_passes_a_matching_baseline(tmp_path, capsys, fake_compile):
    rc, out, _ = run_cli(capsys, "inspect", "--quiet", "--check", baseline_file(tmp_path / "b.json"))
    assert rc == 0 and "gate passed: 1 kernels against" in out and fake_compile["calls"] == 1


@pytest.mark.parametrize("extra, words", [
    (["--targets", ""], "--targets: no target given"),
    (["--targets", " , "], "--targets: no target given"),
    (["--targets", "sm_80,sm_7"], "unknown target 'sm_7'"),
    (["--kernel", "no_such_kernel"], "--kernel 'no_such_kernel' matches no kernel variant"),
    (["--jobs", "0"], "--jobs"),
])
def test_inspect_selecting_nothing_fails_before_compiling(tmp_path, capsys, fake_compile, extra, words):
    for check in ([], ["--check", str(baseline_file(tmp_path / "b.json"))]):
        rc, out, err = run_cli(capsys, "inspect", "--quiet", *check, *extra)
        assert rc == 2 and words in err and "gate passed" not in out
    assert fake_compile["calls"] == 0


def test_inspect_zero_compiled_kernels_fails(tmp_path, capsys, fake_compile):
    fake_compile["records"] = []  # e.g. the variants that --kernel picks do not ship for --targets
    rc, out, err = run_cli(capsys, "inspect", "--quiet", "--check", "--targets", "sm_86")
    assert rc == 2 and "nothing to inspect" in err and "gate passed" not in out


def test_inspect_baseline_without_a_matching_record_fails(tmp_path, capsys, fake_compile):
    b = baseline_file(tmp_path / "b.json", records={})
    rc, out, _ = run_cli(capsys, "inspect", "--quiet", "--check", b, "--json", tmp_path / "new.json")
    assert rc == 1 and "no record for any of the 1 compiled kernels" in out and "gate passed" not in out
    assert json.loads(b.read_text())["records"] == {}  # the baseline itself is left alone


def test_inspect_named_baseline_missing_fails(tmp_path, capsys, fake_compile):
    rc, out, err = run_cli(capsys, "inspect", "--quiet", "--check", tmp_path / "typo.json")
    assert rc == 2 and "typo.json" in err and "no such baseline file" in err and fake_compile["calls"] == 0


@pytest.mark.parametrize("text, words", [
    ('{"triton": "3.', "truncated or damaged"),
    ("", "empty file"),
    ("[1, 2]", "expected a JSON object"),
    ('{"triton": "3.9.0", "records": []}', "'records' must be an object"),
    ('{"triton": "3.9.0", "records": {"k@sm_80": {"registers": "many"}}}', "records['k@sm_80']: registers"),
    ('{"triton": "3.9.0", "records": {}, "traffic": [{"case": "x"}]}', "'traffic' must be a list"),
    ('{"triton": "3.9.0", "scope": "some", "records": {}}', "'scope' must be"),
])
def test_inspect_damaged_baseline_names_the_file(tmp_path, capsys, fake_compile, text, words):
    (tmp_path / "b.json").write_text(text)
    rc, _, err = run_cli(capsys, "inspect", "--quiet", "--check", tmp_path / "b.json")
    assert rc == 2 and f"--check {tmp_path / 'b.json'}" in err and words in err and fake_compile["calls"] == 0


def test_quick_scope_baseline_skips_coverage_and_compares_what_it_holds(tmp_path, capsys, fake_compile, monkeypatch):
    """The oldest Triton's baseline holds the quick subset: --quick --check compares those records (a move
    fails) without asking every shipped variant for a record (which would fail on the missing rest)."""
    others = [types.SimpleNamespace(name=RECORD["variant"]), types.SimpleNamespace(name="not_compiled[x]")]
    monkeypatch.setattr(ins, "all_variants", lambda: others)
    monkeypatch.setattr(ins, "quick_subset", lambda vs: vs[:1])
    covered = []
    monkeypatch.setattr(ins, "baseline_coverage", lambda *a: covered.append(a) or [ins.Finding("x", "baseline", "")])
    path = tmp_path / "b.json"
    path.write_text(json.dumps({**json.loads(baseline_file(path).read_text()), "scope": "quick"}))
    rc, out, err = run_cli(capsys, "inspect", "--quiet", "--quick", "--check", path)
    assert rc == 0 and "gate passed" in out and "quick subset only" in err and not covered
    fake_compile["records"] = [dict(RECORD, registers=RECORD["registers"] + 40)]
    rc, out, _ = run_cli(capsys, "inspect", "--quiet", "--quick", "--check", path)
    assert rc == 1 and "[registers]" in out


def test_inspect_output_paths_are_checked_before_compiling(tmp_path, capsys, fake_compile):
    regular = tmp_path / "regular"
    regular.write_text("keep me")
    b = baseline_file(tmp_path / "b.json")
    kept = b.read_text()
    for extra, words in ((["--json", regular / "x.json"], f"--json {regular / 'x.json'}: {regular} is a file"),
                         (["--json", tmp_path], "is a folder"),
                         (["--write-baseline", regular / "b.json"], "--write-baseline"),
                         (["--check", b, "--json", b], "is also the --check baseline"),
                         (["--check", b, "--write-baseline", b], "is also the --check baseline")):
        rc, _, err = run_cli(capsys, "inspect", "--quiet", *extra)
        assert rc == 2 and words in err, err
    assert fake_compile["calls"] == 0 and regular.read_text() == "keep me" and b.read_text() == kept


# ---------------------------------------------------------------------------------------------------------------
# bench generate / train / kernels: output paths and arguments checked before the run


@pytest.fixture
def no_runs(monkeypatch):
    from tritongpt.bench import generate as gb
    from tritongpt.bench import kernels as kb
    from tritongpt.bench import train as tb

    calls = []
    for mod, name in ((gb, "run"), (tb, "run"), (kb, "main")):
        monkeypatch.setattr(mod, name, lambda *a, _n=f"{mod.__name__}.{name}", **k: calls.append(_n) or 0)
    return calls


GEN = ("bench", "generate", "--preset", "tiny", "--prompt-len", "4", "--new-tokens", "2", "--repeats", "1",
       "--no-hf", "--batch", "1")
TRAIN = ("bench", "train", "--preset", "tiny", "--backends", "torch", "--steps", "1", "--warmup", "0")


def test_json_output_path_is_checked_before_the_benchmark(tmp_path, capsys, no_runs):
    regular = tmp_path / "regular"
    regular.write_text("keep me")
    for cmd in (GEN, TRAIN):
        rc, _, err = run_cli(capsys, *cmd, "--json", regular / "sub" / "out.json")
        assert rc == 2 and f"--json {regular / 'sub' / 'out.json'}: {regular} is a file, not a folder" in err
        rc, _, err = run_cli(capsys, *cmd, "--json", tmp_path)
        assert rc == 2 and "is a folder; expected a file name" in err
    assert no_runs == [] and regular.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["regular"]  # the check leaves nothing behind


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_json_into_a_read_only_folder_is_refused(tmp_path, capsys, no_runs):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, _, err = run_cli(capsys, *TRAIN, "--json", ro / "out.json")
    finally:
        ro.chmod(0o700)
    assert rc == 2 and f"cannot write in {ro}" in err and no_runs == []


@pytest.mark.parametrize("extra, words", [
    (["--batch", "0"], "--batch: expected an integer >= 1, got 0"),
    (["--block-size", "0"], "--block-size"),
    (["--steps", "0"], "--steps"),
    (["--warmup", "-1"], "--warmup"),
    (["--backends", ","], "--backends"),
    (["--preset", "nope"], "--preset: unknown preset 'nope'"),
])
def test_bench_train_arguments_fail_before_the_run(capsys, no_runs, extra, words):
    rc, _, err = run_cli(capsys, *TRAIN, *extra)
    assert rc == 2 and words in err and no_runs == []


def test_bench_train_with_only_skipped_backends_fails_on_a_cpu(capsys, no_runs):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the triton backend runs here")
    rc, _, err = run_cli(capsys, "bench", "train", "--backends", "triton,triton+compile")
    assert rc == 2 and "nothing would be measured" in err and no_runs == []


@pytest.mark.parametrize("device, words", [("bogus", "expected cpu, cuda or cuda:N"), ("meta", "expected cpu"),
                                           ("cuda:99", "--device cuda:99")])
def test_bench_generate_bad_device(capsys, no_runs, device, words):
    rc, _, err = run_cli(capsys, *GEN, "--device", device)
    assert rc == 2 and words in err and no_runs == []


@pytest.mark.parametrize("extra, words", [
    (["--kernels", ""], "--kernels: no kernel given"),
    (["--dtypes", "float32"], "--dtypes"),
    (["--rep-ms", "nan"], "--rep-ms"),
    (["--rep-ms", "0"], "--rep-ms"),
])
def test_bench_kernels_arguments(capsys, no_runs, extra, words):
    rc, _, err = run_cli(capsys, "bench", "kernels", *extra)
    assert rc == 2 and words in err and no_runs == []


def test_bench_kernels_out_dir_under_a_file(tmp_path, capsys, no_runs):
    regular = tmp_path / "regular"
    regular.write_text("keep me")
    for out_dir, words in ((regular / "res", f"{regular} is a file, not a folder"), (regular, "is a file")):
        rc, _, err = run_cli(capsys, "bench", "kernels", "--out-dir", out_dir)
        assert rc == 2 and f"--out-dir {out_dir}" in err and words in err
    assert no_runs == [] and regular.read_text() == "keep me"
    assert run_cli(capsys, "bench", "kernels", "--out-dir", regular, "--no-save")[0] == 0  # nothing is written


# ---------------------------------------------------------------------------------------------------------------
# bench report


def saved_result(folder):
    doc = R.result_document("generate", {})
    R.add_record(doc, "generate/x", SAMPLES)
    return R.write_results(doc, folder)


def test_report_missing_files_name_them_and_keep_the_old_report(tmp_path, capsys):
    good = saved_result(tmp_path)
    old = tmp_path / "REPORT.md"
    old.write_text("old report")
    rc, _, err = run_cli(capsys, "bench", "report", good, tmp_path / "gone.json", "--out", old)
    assert rc == 2 and f"{tmp_path / 'gone.json'}: no such file" in err and old.read_text() == "old report"


def test_report_output_paths(tmp_path, capsys):
    good = saved_result(tmp_path)
    kept = good.read_text()
    regular = tmp_path / "regular"
    regular.write_text("keep me")
    for out, words in ((regular / "r.md", f"{regular} is a file, not a folder"), (tmp_path, "is a folder"),
                       (good, "is one of the result files")):
        rc, _, err = run_cli(capsys, "bench", "report", good, "--out", out)
        assert rc == 2 and f"--out {out}" in err and words in err
    rc, _, err = run_cli(capsys, "bench", "report", "--results-dir", regular)
    assert rc == 2 and "--results-dir" in err and "is a file" in err
    assert good.read_text() == kept and regular.read_text() == "keep me"
    assert run_cli(capsys, "bench", "report", good, "--out", tmp_path / "new" / "R.md")[0] == 0


def test_output_checks_create_nothing(tmp_path):
    R.check_output_file(tmp_path / "a" / "b" / "out.json", "--json")
    R.check_output_dir(tmp_path / "c" / "d", "--out-dir")
    assert list(tmp_path.iterdir()) == []


def test_gate_helpers_directly():
    with pytest.raises(ValueError, match="--targets"):
        inspect_cli.parse_targets(",")
    assert inspect_cli.parse_targets("sm_80, sm_80,sm_90a") == ["sm_80", "sm_90a"]


def test_compare_a_file_with_itself_fails(tmp_path, capsys):
    a = result_json(tmp_path / "a.json", {"x": SAMPLES})
    rc, out, err = run_cli(capsys, "bench", "compare", a, tmp_path / "." / "a.json")
    assert rc == 2 and "same file" in err and "regression(s)" not in out


def test_compare_api_takes_the_cli_threshold_forms(tmp_path):
    a = json.loads(result_json(tmp_path / "a.json", {"x": SAMPLES}).read_text())
    slower = json.loads(result_json(tmp_path / "b.json", {"x": [s * 1.5 for s in SAMPLES]}).read_text())
    for threshold in ("5%", "0.05", 0.05):
        rows, _ = cmp.compare(a, slower, threshold)
        assert [r.verdict for r in rows] == ["regression"]
