"""kernels/compat.py: Triton-version guards (the lazy autotune benchmarker for Triton <= 3.3; the spill
pruning hooks are tested in test_old_triton_pruning.py, the compiled-facts prune it attaches in
test_autotune_prune.py)."""

from __future__ import annotations

import pytest
import triton

import tritongpt.kernels  # noqa: F401  (installs the guards)
from tritongpt.kernels import compat, spills, versions

pytestmark = pytest.mark.kernel


def _triton_version() -> tuple[int, int]:
    major, minor = triton.__version__.split(".")[:2]
    return int(major), int(minor)


def test_triton_version():
    assert versions.triton_version() == _triton_version()
    for text, want in (("3.3.1", (3, 3)), ("3.10.0+git1234", (3, 10)), ("4.0.0rc1", (4, 0))):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(triton, "__version__", text)
            assert versions.triton_version() == want


def test_autotune_is_patched_on_every_triton():
    # Every Triton: the compiled-facts prune is attached to each of the package's autotuners.
    # 3.6's property and 3.9's cached_property are lazy; 3.3 looks the driver up when a kernel is
    # decorated, so there the lazy benchmarker is passed in as well.
    assert compat._autotuner_benchmarker_is_eager() == (_triton_version() <= (3, 3))
    assert triton.autotune is compat.autotune


def test_eager_benchmarker_gets_a_lazy_do_bench(monkeypatch):
    monkeypatch.setattr(spills, "rules", lambda kernel=None: ())  # the benchmarker guard alone
    seen = {}
    monkeypatch.setattr(compat, "_autotuner_benchmarker_is_eager", lambda: True)
    monkeypatch.setattr(compat, "_original_autotune", lambda **kw: seen.update(kw) or (lambda fn: fn))

    def kernel():
        pass

    assert compat.autotune(configs=[], key=["n"])(kernel) is kernel
    assert seen["do_bench"] is compat._lazy_do_bench  # no driver lookup until the first benchmark
    mine = object()
    compat.autotune(configs=[], key=["n"], do_bench=mine)(kernel)
    assert seen["do_bench"] is mine  # a caller's own benchmarker is kept


def test_autotune_wraps_the_prune_where_this_triton_has_spill_entries(monkeypatch):
    """With entries, the decorated kernel's name keys a wrapper around its own early_config_prune."""
    seen = {}
    monkeypatch.setattr(versions, "triton_version", lambda: (3, 3))
    monkeypatch.setattr(compat, "_original_autotune", lambda **kw: lambda fn: seen.update(kw) or fn)

    def own(configs, nargs, **meta):
        return configs

    def _attn_bwd_dq_kernel():
        pass

    assert compat.autotune(configs=[], key=["n"], prune_configs_by={"early_config_prune": own})(
        _attn_bwd_dq_kernel) is _attn_bwd_dq_kernel
    hook = seen["prune_configs_by"]["early_config_prune"]
    assert hook.kernel == "_attn_bwd_dq_kernel" and hook.__wrapped__ is own

    def other_kernel():  # no entries: decorated exactly as asked
        pass

    seen.clear()
    compat.autotune(configs=[], key=["n"], prune_configs_by={"early_config_prune": own})(other_kernel)
    assert seen["prune_configs_by"]["early_config_prune"] is own
