"""kernels/spills.py: configs an older Triton spills on are pruned from the autotuner's choice and from
``variants()`` (what the static gate compiles), every shape class keeps a config, and a Triton without
entries is left exactly as it is.

The Triton 3.3 checks run on any Triton by making ``versions.triton_version`` report (3, 3): the pruning
reads the table at call time. On a real 3.3 the hooks are installed at import, which is checked too.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

import tritongpt.kernels.flash_attention as fa
import tritongpt.kernels.flash_attention_bwd as fab
import tritongpt.kernels.fused_linear as fl
import tritongpt.kernels.fused_linear_bwd as flb
from tritongpt.kernels import compat, launch, spills, versions

pytestmark = pytest.mark.kernel

OLD = (3, 3)
MODULES = [importlib.import_module(f"tritongpt.kernels.{m}") for m in compat.KERNEL_MODULES]


def _unpruned(module):
    return getattr(module.variants, "__wrapped__", module.variants)()


@pytest.fixture
def old_triton(monkeypatch):
    monkeypatch.setattr(versions, "triton_version", lambda: OLD)


def _prune_hook(tuned):
    """The kernel's own prune as the running Triton would wrap it for Triton 3.3's entries."""
    own = tuned.early_config_prune
    return spills.pruning(spills.kernel_name(tuned.fn), getattr(own, "__wrapped__", own))


def _config_facts(c, meta, dtype):
    return {**meta, **c.kwargs, "num_warps": c.num_warps, "num_stages": c.num_stages, "dtype": dtype}


# ----------------------------------------------------------------------------- the table


def test_entries_name_shipped_configs_by_facts_the_autotuner_knows():
    """Each entry matches at least one variant the kernel tables ship (no typo leaves a spilling config
    in place), names only facts known before the autotuner picks (the EVEN_* heuristics come after),
    and its fallback differs from the config it replaces."""
    shipped = [v for m in MODULES for v in _unpruned(m)]
    for version, entries in spills.SPILLS.items():
        for e in entries:
            if e.kernel not in spills.FIXED_CONFIG_KERNELS:  # a fixed-config launcher knows EVEN_* up front
                assert not [k for k in e.form if k.startswith("EVEN")], e
            hits = [(v.name, cc) for v in shipped for cc in e.archs
                    if spills.kernel_name(v.fn) == e.kernel and e.matches(spills.variant_facts(v), cc)]
            assert hits, f"Triton {version}: {e} matches no shipped variant"
            if e.fallback is not None:
                assert not e.matches({**e.form, **e.fallback}, e.archs[0]), e


def test_newest_triton_is_untouched():
    """Only older Tritons have entries; where the running one has none, variants() and the autotuners'
    prune hooks are the kernel modules' own."""
    if spills.rules():
        pytest.skip("this Triton has spill entries (see test_installed_where_entries_exist)")
    for m in MODULES:
        assert not hasattr(m.variants, "__wrapped__")
        vs = m.variants()
        assert spills.prune_variants(vs) == vs
    for tuned in (fa._attn_fwd_tuned, fab._dkdv_tuned, fab._dq_tuned, fl._fwd_tuned, flb._dx_tuned, flb._dw_tuned):
        assert not hasattr(tuned.early_config_prune, "kernel")


def test_installed_where_entries_exist():
    """On a Triton with entries (3.3) the import installed both hooks: the autotuners prune through the
    table and variants() is the pruned set."""
    if not spills.rules():
        pytest.skip("no spill entries for this Triton")
    for tuned in (fa._attn_fwd_tuned, fab._dkdv_tuned, fab._dq_tuned, fl._fwd_tuned, flb._dx_tuned, flb._dw_tuned):
        name = spills.kernel_name(tuned.fn)
        assert getattr(tuned.early_config_prune, "kernel", None) == (name if spills.rules(name) else None)
    for m in MODULES:
        assert m.variants.prunes_spills
        assert [v.name for v in m.variants()] == [v.name for v in spills.prune_variants(_unpruned(m))]


# ----------------------------------------------------------------------------- variants() (the gate)


def test_pruned_variants_drop_listed_pairs_and_ship_fallbacks(old_triton):
    for m in MODULES:
        before = _unpruned(m)
        after = spills.prune_variants(before)
        assert len({v.name for v in after}) == len(after)
        assert all(v.archs for v in after)
        shipped = {(v.name, cc) for v in after for cc in v.archs}
        assert not [(v.name, cc) for v in after for cc in v.archs if spills.listed(v, cc)]
        for v in before:
            for cc in v.archs:
                entry = spills.listed(v, cc)
                if entry is None:
                    assert (v.name, cc) in shipped
                    continue
                assert (v.name, cc) not in shipped
                if entry.fallback is not None:  # the same inputs, compiled with the fallback config, ship there
                    want = {**v.constexprs, **{k: x for k, x in entry.fallback.items() if k not in spills._LAUNCH}}
                    assert [w for w in after if cc in w.archs and w.fn is v.fn and w.signature == v.signature
                            and w.constexprs == want and w.num_warps == entry.fallback["num_warps"]
                            and w.num_stages == entry.fallback["num_stages"]], (v.name, cc)


# ----------------------------------------------------------------------------- the autotuner


ATTENTION = (("fwd", fa._attn_fwd_tuned), ("dkdv", fab._dkdv_tuned), ("dq", fab._dq_tuned))
# (Tq, Tk, D): even (every tile divides T, D == BLOCK_D) and masked shapes at each BLOCK_D.
SHAPES = [(256, 256, 16), (100, 100, 16), (256, 256, 32), (256, 384, 24), (512, 512, 64), (500, 512, 64),
          (97, 97, 48), (256, 256, 128), (256, 300, 128), (128, 128, 80)]


@pytest.mark.parametrize("arch", [80, 90])
def test_attention_autotune_choice_on_old_triton(arch, old_triton, monkeypatch):
    """For every (kernel, D, dtype, causal, even/masked) class on sm_80 and sm_90a, Triton 3.3's prune keeps
    at least one config, none of them listed as spilling, and each one ships in variants() for that target
    and class (so the gate compiled it)."""
    monkeypatch.setattr(fab, "_arch", lambda device=None: arch)
    monkeypatch.setattr(spills, "target_arch", lambda device: arch)
    shipped = {(v.tags["kernel"], v.tags["D"], v.tags["dtype"], v.tags["causal"], v.tags["even"],
                v.constexprs["BLOCK_M"], v.constexprs["BLOCK_N"], v.num_warps, v.num_stages)
               for v in spills.prune_variants(_unpruned(fa))
               if arch in v.archs and v.tags["kernel"] in ("fwd", "dkdv", "dq") and v.tags["aligned"]}
    pruned_somewhere = False
    for kernel, tuned in ATTENTION:
        name, hook = spills.kernel_name(tuned.fn), _prune_hook(tuned)
        own = getattr(tuned.early_config_prune, "__wrapped__", tuned.early_config_prune)
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            dt = {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype, "fp16")
            for causal in (True, False):
                for tq, tk, d in SHAPES:
                    block_d = launch.block_d(d)
                    even = d == block_d and tq % 128 == 0 and tk % 128 == 0
                    nargs = {"Q": torch.empty(1, dtype=dtype), "TQ": tq, "TK": tk, "D": d, "ALIGN": 1}
                    meta = {"BLOCK_D": block_d, "CAUSAL": causal}
                    picked = hook(tuned.configs, nargs, **meta)
                    cls = (kernel, block_d, dt, "causal" if causal else "noncausal", "even" if even else "masked")
                    assert picked, cls
                    pruned_somewhere |= len(picked) != len(own(tuned.configs, nargs, **meta))
                    for c in picked:
                        facts = _config_facts(c, meta, dt)
                        assert not [e for e in spills.rules(name) if e.matches(facts, arch)], (cls, c)
                        key = (kernel, block_d, "fp16" if dt == "bf16" else dt, causal, even,
                               c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
                        assert key in shipped, f"{cls}: {c} is not shipped for sm_{arch} in variants()"
    assert pruned_somewhere


FUSED = (("fwd", fl._fwd_tuned, "X"), ("dx", flb._dx_tuned, "DY"), ("dw", flb._dw_tuned, "DY"))


@pytest.mark.parametrize("arch", [80, 89, 90])
def test_fused_linear_autotune_choice_on_old_triton(arch, old_triton, monkeypatch):
    """For every (kernel, dtype) that ships for a target, Triton 3.3's prune keeps a config, none listed as
    spilling, each shipped in variants() for that target and dtype."""
    monkeypatch.setattr(launch, "device_limits", lambda device: (arch, launch.SMEM_LIMIT[arch]))
    monkeypatch.setattr(spills, "target_arch", lambda device: arch)
    before = _unpruned(fl)
    after = spills.prune_variants(before)

    def tiles(vs, kernel, dt, names):
        return {(tuple(sorted((k, v.constexprs[k]) for k in names)), v.num_warps, v.num_stages)
                for v in vs if v.tags["kernel"] == kernel and v.tags["dtype"] == dt and arch in v.archs}

    for kernel, tuned, first in FUSED:
        name, hook, names = spills.kernel_name(tuned.fn), _prune_hook(tuned), list(tuned.configs[0].kwargs)
        for dtype, dt in ((torch.float16, "fp16"), (torch.bfloat16, "bf16"), (torch.float32, "fp32")):
            if not tiles(before, kernel, dt, names):
                continue  # nothing fits this target in this dtype on any Triton (e.g. fp32 on sm_89's 99 KB)
            picked = hook(tuned.configs, {first: torch.empty(1, dtype=dtype)})
            assert picked, (kernel, dt, arch)
            for c in picked:
                assert not [e for e in spills.rules(name) if e.matches(_config_facts(c, {}, dt), arch)]
                key = (tuple(sorted(c.kwargs.items())), c.num_warps, c.num_stages)
                assert key in tiles(after, kernel, dt, names), f"{kernel} {dt}: {c} is not shipped for sm_{arch}"


def test_fallback_is_picked_where_the_prune_would_keep_nothing(old_triton, monkeypatch):
    """dQ at D=128 fp32 causal on sm_80: the tables keep only 32x16/4 warps, which Triton 3.3 spills on."""
    monkeypatch.setattr(fab, "_arch", lambda device=None: 80)
    monkeypatch.setattr(spills, "target_arch", lambda device: 80)
    nargs = {"Q": torch.empty(1, dtype=torch.float32), "TQ": 256, "TK": 256, "D": 128, "ALIGN": 1}
    own = getattr(fab._dq_tuned.early_config_prune, "__wrapped__", fab._dq_tuned.early_config_prune)
    assert [(c.kwargs, c.num_warps) for c in own(fab._dq_tuned.configs, nargs, BLOCK_D=128, CAUSAL=True)] == [
        ({"BLOCK_M": 32, "BLOCK_N": 16}, 4)]
    picked = _prune_hook(fab._dq_tuned)(fab._dq_tuned.configs, nargs, BLOCK_D=128, CAUSAL=True)
    assert [(c.kwargs, c.num_warps, c.num_stages) for c in picked] == [({"BLOCK_M": 32, "BLOCK_N": 16}, 8, 2)]


# ----------------------------------------------------------------------------- the fallbacks compile


@pytest.mark.skipif(os.environ.get("TRITONGPT_SKIP_AOT") == "1", reason="AOT checks disabled")
def test_fallbacks_compile_spill_free():
    """Under a Triton with entries, the fallback variants shipped in their place compile without spills
    (the full gate compiles them too; this keeps them in the kernel test run)."""
    if not spills.rules():
        pytest.skip("no spill entries for this Triton")
    from tritongpt.bench import static_check as ins

    for m in MODULES:
        pairs = [(v, cc) for v in m.variants() if "fallback_for" in v.tags for cc in v.archs]
        if pairs:
            findings = ins.check_pairs(pairs, f"{m.__name__}:variants")
            assert not findings, "\n".join(map(str, findings))
