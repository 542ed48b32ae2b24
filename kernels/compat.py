"""Guards for Triton APIs that changed between the versions this project supports (3.3 and up).

CI runs the newest Triton; GPU users get whichever Triton their CUDA torch pins. The guards step in
only where an older release behaves differently; :func:`autotune` also hands every autotuner of this
package to ``autotune_prune`` (compiled-facts pruning at launch, any Triton) on every release.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any

import triton

from . import autotune_prune, spills


def _autotuner_benchmarker_is_eager() -> bool:
    # Triton <= 3.3: ``Autotuner.__init__`` calls ``driver.active.get_benchmarker()``, so merely
    # decorating a kernel with ``triton.autotune`` on a machine without a GPU (the interpreter,
    # ``tritongpt inspect``) raised "0 active drivers". Newer Triton made ``do_bench`` a lazy
    # property and looks the driver up on the first benchmark only.
    from triton.runtime.autotuner import Autotuner

    # 3.6 has a property, 3.9 a functools.cached_property: both lazy.
    return not isinstance(inspect.getattr_static(Autotuner, "do_bench", None), (property, functools.cached_property))


def _lazy_do_bench(kernel_call: Any, quantiles: Any) -> Any:
    from triton.runtime import driver

    return driver.active.get_benchmarker()(kernel_call, quantiles=quantiles)


def autotune(**kwargs: Any) -> Any:
    """``triton.autotune(**kwargs)`` for every supported Triton: applicable without a GPU (the lazy
    benchmarker on Triton <= 3.3), pruned of the configs this Triton is listed to spill on
    (``spills.SPILLS``), and, for this package's kernels, pruned from compiled facts before each tuning
    run on a GPU (``autotune_prune``). Other libraries' kernels get the first two only."""
    if "do_bench" not in kwargs and _autotuner_benchmarker_is_eager():
        kwargs["do_bench"] = _lazy_do_bench

    def decorate(fn: Any) -> Any:
        tuner = _original_autotune(**_with_spill_pruning(kwargs, fn))(fn)
        return autotune_prune.attach(tuner) if _defined_in_package(fn) else tuner

    return decorate


def _with_spill_pruning(kwargs: dict[str, Any], fn: Any) -> dict[str, Any]:
    # The entries are per kernel, and only the decorated function names it; kernels without entries
    # (other libraries' too) keep their own prune.
    name = spills.kernel_name(fn)
    if not spills.rules(name):
        return kwargs
    by = dict(kwargs.get("prune_configs_by") or {})
    by["early_config_prune"] = spills.pruning(name, by.get("early_config_prune"))
    return {**kwargs, "prune_configs_by": by}


def _defined_in_package(fn: Any) -> bool:
    while hasattr(fn, "fn"):  # autotune/heuristics wrappers, the JIT or interpreted function
        fn = fn.fn
    return getattr(fn, "__module__", "").startswith(f"{__package__}.")


_original_autotune = triton.autotune


def install() -> None:
    """Route ``triton.autotune`` through :func:`autotune`, on every Triton (the compiled-facts prune
    applies everywhere; the older-Triton guards where they are needed).

    Done once, before the kernel modules are imported (``kernels/__init__.py``), so the kernel files
    keep calling ``triton.autotune``: their source, and with it the compile-gate baseline keyed by it,
    stays the same."""
    if triton.autotune is _original_autotune:
        triton.autotune = autotune


KERNEL_MODULES = ("flash_attention", "layernorm", "fused_linear", "decode_attention", "linear_cross_entropy",
                  "int8_linear", "paged_decode_attention")


def install_variant_pruning() -> None:
    """Where this Triton has spill entries, make each kernel module's ``variants()`` return the pruned set
    (``spills.prune_variants``), so the static gate and the AOT tests compile what the autotuner may pick.

    Done once, after the kernel modules are imported (``kernels/__init__.py``); the kernel files stay
    unchanged for the same reason as in :func:`install`. On a Triton without entries nothing is touched."""
    if not spills.rules():
        return
    for name in KERNEL_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        if not getattr(module.variants, "prunes_spills", False):
            module.variants = _pruned(module.variants)


def _pruned(variants: Any) -> Any:
    @functools.wraps(variants)
    def pruned_variants() -> list:
        return spills.prune_variants(variants())

    pruned_variants.prunes_spills = True
    return pruned_variants
