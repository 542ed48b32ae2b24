"""kernels/_compat.py: Triton-version guards (the lazy autotune benchmarker for Triton <= 3.3)."""

from __future__ import annotations

import pytest
import triton

import tritongpt.kernels  # noqa: F401  (installs the guards)
from tritongpt.kernels import _compat

pytestmark = pytest.mark.kernel


def _triton_version() -> tuple[int, int]:
    major, minor = triton.__version__.split(".")[:2]
    return int(major), int(minor)


def test_autotune_is_patched_exactly_where_the_benchmarker_is_eager():
    # 3.6's property and 3.9's cached_property are lazy: nothing to patch, the kernels use triton.autotune as is.
    # 3.3 looks the driver up when a kernel is decorated: the guard must be installed there.
    eager = _triton_version() <= (3, 3)
    assert _compat._autotuner_benchmarker_is_eager() == eager
    assert (triton.autotune is _compat.autotune) == eager
    assert (triton.autotune is _compat._original_autotune) == (not eager)


def test_eager_benchmarker_gets_a_lazy_do_bench(monkeypatch):
    seen = {}
    monkeypatch.setattr(_compat, "_autotuner_benchmarker_is_eager", lambda: True)
    monkeypatch.setattr(_compat, "_original_autotune", lambda **kw: seen.update(kw) or "decorator")
    assert _compat.autotune(configs=[], key=["n"]) == "decorator"
    assert seen["do_bench"] is _compat._lazy_do_bench  # no driver lookup until the first benchmark
    mine = object()
    _compat.autotune(configs=[], key=["n"], do_bench=mine)
    assert seen["do_bench"] is mine  # a caller's own benchmarker is kept
