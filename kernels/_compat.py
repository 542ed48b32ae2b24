"""Guards for Triton APIs that changed between the versions this project supports (3.3 and up).

CI runs the newest Triton; GPU users get whichever Triton their CUDA torch pins. Everything here
is a no-op on current Triton: it only steps in where an older release behaves differently.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import triton


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
    """``triton.autotune(**kwargs)`` that can be applied without a GPU on every supported Triton."""
    if "do_bench" not in kwargs and _autotuner_benchmarker_is_eager():
        kwargs["do_bench"] = _lazy_do_bench
    return _original_autotune(**kwargs)


_original_autotune = triton.autotune


def install() -> None:
    """Route ``triton.autotune`` through :func:`autotune` on Tritons that need it (<= 3.3).

    Done once, before the kernel modules are imported (``kernels/__init__.py``), so the kernel files
    keep calling ``triton.autotune``: their source, and with it the compile-gate baseline keyed by it,
    stays the same. On current Triton nothing is touched."""
    if _autotuner_benchmarker_is_eager() and triton.autotune is _original_autotune:
        triton.autotune = autotune
