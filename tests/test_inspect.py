"""The compile-only and traffic gate (bench/static_check.py, bench/inspect_cli.py) must be able to fail."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tritongpt.bench import static_check as ins

SOURCE = "gate_fixtures:bad_variants"


@pytest.fixture(scope="module")
def bad_records():
    import gate_fixtures

    return {ins.record_key(r): r for r in ins.inspect(gate_fixtures.bad_variants(), ["sm_80", "sm_90a"], jobs=2,
                                                  progress=False, source=SOURCE)}


def _rules(findings, variant):
    return {f.rule for f in findings if f.key.startswith(variant)}


def test_spilling_config_is_caught(bad_records):
    rec = bad_records["fixture_spill[128x128,w1]@sm_80"]
    assert rec["stack_bytes"] > 0 or rec["spill_instructions"] > 0
    assert "spill" in _rules(ins.check_absolute([rec]), "fixture_spill")


def test_shared_memory_over_the_limit_is_caught(bad_records):
    rec = bad_records["fixture_smem[256x256x128,s4]@sm_80"]
    assert rec["shared_bytes"] > rec["smem_limit"]
    assert "smem" in _rules(ins.check_absolute([rec]), "fixture_smem")


def test_lost_tensor_cores_are_caught(bad_records):
    rec = bad_records["fixture_no_mma[32]@sm_80"]
    assert rec["mma_instructions"] == 0
    assert "tensor-cores" in _rules(ins.check_absolute([rec]), "fixture_no_mma")


def test_a_clean_kernel_passes(bad_records):
    clean = [r for k, r in bad_records.items() if k.startswith("fixture_copy")]
    assert len(clean) == 2 and not ins.check_absolute(clean)
    assert {r["target"] for r in clean} == {"sm_80", "sm_90a"}


@pytest.fixture(scope="module")
def modern_records():
    import gate_fixtures

    return {ins.record_key(r): r for r in ins.inspect(gate_fixtures.modern_variants(), ["sm_90a", "sm_100a"],
                                                  jobs=2, progress=False, source="gate_fixtures:modern_variants")}


@pytest.mark.parametrize("target, family", [("sm_90a", "wgmma"), ("sm_100a", "tcgen05")])
def test_a_tile_without_the_targets_mma_family_is_caught(modern_records, target, family):
    """A 64-row fp16 tile compiled to Ampere's mma.sync (2 warps) fails the wgmma rule on sm_90a/sm_100a;
    the same product through TMA descriptors with 4 warps passes with the target's family and UTMALDG."""
    lost = modern_records[f"fixture_mma_sync[64x64,w2]@{target}"]
    assert lost["mma_family"] == "mma.sync" and lost["mma_instructions"] > 0 and lost["expect_wgmma"]
    assert _rules(ins.check_absolute([lost]), "fixture_mma_sync") == {"wgmma"}
    fake = modern_records[f"fixture_fake_tma[64x64,w4]@{target}"]
    assert fake["mma_family"] == family and fake["tma_loads"] == 0
    assert _rules(ins.check_absolute([fake]), "fixture_fake_tma") == {"tma"}
    good = modern_records[f"fixture_tma[64x64,w4]@{target}"]
    assert good["mma_family"] == family and good["wgmma_instructions"] > 0 and good["tma_loads"] > 0
    assert not ins.check_absolute([good])


def test_register_instruction_and_occupancy_moves_are_caught_both_ways(bad_records):
    rec = bad_records["fixture_no_mma[32]@sm_80"]
    base = ins.make_baseline([rec], None)
    assert not ins.check_relative([rec], base)
    worse = copy.deepcopy(rec)
    worse["registers"] += 24
    worse["warps_per_sm"] -= 4
    assert {f.rule for f in ins.check_relative([worse], base)} == {"registers", "occupancy"}
    better = copy.deepcopy(rec)
    better["sass_instructions"] = int(better["sass_instructions"] * 0.8)
    assert {f.rule for f in ins.check_relative([better], base)} == {"instructions"}  # improvements too
    within = copy.deepcopy(rec)
    within["registers"] += 2  # under the stated margin
    assert not ins.check_relative([within], base)


def test_input_read_twice_is_caught():
    from gate_fixtures import _copy_kernel

    from tritongpt.bench.traffic_cases import Case, measure

    def case(twice: bool) -> Case:
        def run(t):
            y = torch.empty_like(t["x"])
            _copy_kernel[(4,)](t["x"], y, t["x"].numel(), BLOCK=256, READ_TWICE=twice)
            return {"y": y}

        return Case(f"copy[twice={twice}]", "copy", lambda: {"x": torch.randn(1000)}, run, flops=0,
                    target_ratio=1.05)

    good, bad = measure(case(False)), measure(case(True))
    assert good["ratio"] == 1.0 and not good["problems"]
    assert bad["ratio"] == 1.5 and bad["problems"]
    assert bad["tensors"]["in:x"]["read"] == 2 * bad["tensors"]["in:x"]["unique_read"]
    # Against a baseline recorded from the good kernel, the regression is a finding too.
    base = {"traffic": [dict(good, case="copy")]}
    assert [f.rule for f in ins.check_traffic([dict(bad, case="copy")], base)] == ["traffic"]
    assert not ins.check_traffic([dict(good, case="copy")], base)


def test_occupancy_table():
    from tritongpt.bench.aot import occupancy

    # 128 registers x 8 warps: 32 KiB registers per block -> 2 blocks, 16 warps of 64 on sm_80.
    assert occupancy(80, 128, 0, 8) == {"blocks_per_sm": 2, "warps_per_sm": 16, "occupancy": 0.25,
                                        "limiter": "registers"}
    # Shared memory bound: 100 KiB per block on sm_90a (228 KiB per SM) -> 2 blocks.
    assert occupancy(90, 32, 100 * 1024, 4)["blocks_per_sm"] == 2
    assert occupancy(89, 32, 0, 4)["warps_per_sm"] == 48


def test_shipped_kernels_pass_the_gate_against_the_committed_baseline():
    """The quick CI subset, absolute rules plus the committed baseline of this Triton version."""
    variants = ins.quick_subset(ins.all_variants())
    records = ins.inspect(variants, ["sm_80", "sm_90a"], jobs=2, progress=False)
    findings = ins.check_absolute(records)
    path = ins.default_baseline_path()
    if path.exists():
        findings += ins.check_relative(records, json.loads(path.read_text()))
    assert not findings, "\n".join(map(str, findings))


def test_cli_check_fails_on_a_regression_and_prints_the_replacement(tmp_path, capsys):
    from tritongpt.engine.cli import main

    args = ["inspect", "--kernel", "layer_norm_fwd[N=768,BN=1024,fp16", "--targets", "sm_80", "--quiet"]
    assert main(args + ["--write-baseline", str(tmp_path / "b.json")]) == 0
    base = json.loads((tmp_path / "b.json").read_text())
    (rec,) = base["records"].values()
    rec["registers"] -= 20  # the committed figure is 20 lower: this run reads as a regression
    (tmp_path / "b.json").write_text(json.dumps(base))
    capsys.readouterr()
    assert main(args + ["--check", str(tmp_path / "b.json"), "--json", str(tmp_path / "new.json")]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "[registers]" in out and "cp " in out
    assert (tmp_path / "new.baseline.json").exists()
    # A baseline of another Triton version: absolute rules only, with a warning.
    base["triton"] = "0.0.1"
    (tmp_path / "b.json").write_text(json.dumps(base))
    assert main(args + ["--check", str(tmp_path / "b.json")]) == 0
    assert "only the absolute rules" in capsys.readouterr().err


def test_bad_target_is_rejected(capsys):
    from tritongpt.engine.cli import main

    assert main(["inspect", "--targets", "sm_70"]) == 2
    assert "--targets" in capsys.readouterr().err


def test_committed_baseline_covers_every_shipped_variant():
    """Every shipped config x target (sm_80, sm_89, sm_90a, sm_100a) was compiled (by `make baseline`,
    from this exact kernel source) and passed the absolute rules. CI compiles the quick subset fresh
    (above); the full set recompiles with `make inspect` or `pytest -m slow`."""
    path = ins.default_baseline_path()
    if not path.exists():
        pytest.skip(f"no committed baseline for Triton {ins.triton_version()}")
    findings = ins.baseline_coverage(ins.all_variants(), json.loads(path.read_text()), list(ins.DEFAULT_TARGETS))
    assert not findings, "\n".join(map(str, findings[:20]))


_COMPILE_ONE = """
import sys
from tritongpt.bench import static_check as ins
variants = {v.name: v for v in ins.all_variants()}
for name in sys.argv[1:]:
    v = variants[name]
    s = ins.compile_kernel(v.fn, ins.in_arg_order(v), v.constexprs, cc=80, num_warps=v.num_warps,
                           num_stages=v.num_stages, divisible_by_16=v.tags.get("divisible_by_16"))
print(s.registers, s.sass_instructions)
"""


@pytest.mark.kernel
def test_a_record_does_not_depend_on_what_the_process_compiled_before(tmp_path):
    """Triton < 3.4 leaves an LLVM option on after a process's first compile, which changes the data
    layout (and ~10% of the registers) of every later one: records must not depend on compile order."""
    import os
    import subprocess
    import sys

    # The variant whose count moved 152 <-> 166 with Triton 3.3.1, and a kernel compiled before it.
    target = "fused_linear_fwd[32x64x32,w4,s2,fp32,HAS_BIAS,GELU,STORE_GELU_GRAD,unaligned]"
    first = next(v.name for v in ins.all_variants() if v.name.startswith("layer_norm_fwd"))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}

    def run(*names):
        # A cache of its own: a cubin the other process stored would hide the difference.
        cache = tmp_path / str(len(names))
        out = subprocess.run([sys.executable, "-c", _COMPILE_ONE, *names], env={**env, "TRITON_CACHE_DIR": str(cache)},
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()

    assert run(target) == run(first, target)
