"""Autotune pruning from compiled facts: before an autotuner times its candidates on a GPU, each one is
compiled for this device and this launch, and those that spill registers or do not fit are dropped.

The config tables were compiled spill-free by the newest tested Triton for sm_80, sm_89 and sm_90a. A
user's Triton or GPU may allocate registers differently; a spilling config is slow, yet timing it costs
a compile and a benchmark, and on a noisy GPU it may even win. So, for every autotuned kernel of this
project, the configs the kernel's own prune keeps are compiled the way the timing run would compile
them, and the compiler's and loader's facts decide which ones are timed:

- dropped: a config whose kernel spills (``n_spills`` > 0), or that does not fit this device (its
  ``metadata.shared`` exceeds the device's opt-in shared memory per block, or Triton's loader raises
  ``OutOfResources``, or the compile fails the way the autotuner tolerates: ``PTXASError``,
  ``CompileTimeAssertionFailure``);
- where every config spills, the fitting one with the fewest spill bytes is kept (never an empty
  autotuner) and a warning names the kernel, once per kernel;
- where nothing fits, the list stays as it was and Triton reports the launch as it would unpruned;
- where the facts cannot be read (a Triton whose API this module does not know), the config is kept
  and a warning says so, once per kernel.

Cost: Triton caches compiled kernels per specialization, so these compiles are the ones timing would
do anyway; the verdict is cached per (kernel, config, specialization), so a later tuning key with the
same compiled form reads nothing again. Nothing happens under ``TRITON_INTERPRET`` (nothing compiles),
where the kernel's own prune leaves one config, or with ``TRITONGPT_PRUNE_COMPILED=0`` (read at each
prune; ``false``/``off``/``no`` too).

How it relates to ``spills.SPILLS``: that static table lists, per Triton release, configs found to
spill by compiling every shipped variant without a GPU. It prunes before anything compiles, ships a
fallback where a shape class would be left empty, and also prunes ``variants()``, so the compile gate
(no GPU) compiles exactly what the autotuner may pick. This module covers every Triton and device the
table does not know; it runs after the kernel's ``early_config_prune`` (the table's wrapper included),
so the table's picks and fallbacks are checked too.

Triton APIs used, the same on 3.3 and 3.9 (checked in both sources): the instance method
``Autotuner.prune_configs(kwargs)`` (it runs ``early_config_prune``, then a perf model's ``top_k``,
which no kernel here uses) with ``Autotuner.nargs`` (the positional arguments by name); the tuned
function's ``run(*args, grid=..., warmup=True, **kwargs)``, as ``Autotuner.run`` calls it minus the
launch, which returns the cached or newly compiled ``CompiledKernel``; ``CompiledKernel.metadata.shared``;
reading ``CompiledKernel.run`` loads the binary (3.3: ``__getattribute__``, 3.9: a property), which sets
``n_regs`` and ``n_spills`` (``CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES / 4``); and
``driver.active.utils.get_device_properties(device)["max_shared_mem"]``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Hashable, Sequence
from typing import Any

from triton.compiler.errors import CompileTimeAssertionFailure
from triton.runtime.errors import OutOfResources, PTXASError

from .interpreter import interpreter_enabled

ENV_SWITCH = "TRITONGPT_PRUNE_COMPILED"
# What Autotuner._bench turns into an infinite time: such a config is never picked, so it is dropped.
UNFIT_ERRORS = (OutOfResources, CompileTimeAssertionFailure, PTXASError)
LAUNCH_ONLY = ("grid", "warmup")  # Autotuner.run's launch arguments: no part of the compiled form


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the compiler and the loader reported for one config at one launch on one device."""

    fits: bool  # shared memory within the device's limit and accepted by Triton's loader
    spills: int = 0  # Triton's n_spills: local memory per thread in 4-byte words
    regs: int = 0  # registers per thread
    shared: int = 0  # bytes of shared memory per block

    @property
    def spill_bytes(self) -> int:
        return 4 * self.spills

    @property
    def clean(self) -> bool:
        return self.fits and self.spills == 0


def enabled() -> bool:
    """Whether launches prune from compiled facts now: not under the interpreter, not switched off."""
    value = os.environ.get(ENV_SWITCH, "1").strip().lower()
    off = value in ("0", "false", "off", "no")
    if not off and value not in ("", "1", "true", "on", "yes"):
        warnings.warn(f"{ENV_SWITCH}={value!r}: expected 0 or 1 (off/on); the compiled-facts prune stays on",
                      stacklevel=2)
    return not off and not interpreter_enabled()


# ----------------------------------------------------------------------------- the device


def current_device() -> int:
    from triton.runtime import driver

    return driver.active.get_current_device()


@functools.cache
def max_shared_memory(device: int) -> int:
    """Opt-in shared memory per block on ``device``, in bytes: the limit Triton's loader checks."""
    from triton.runtime import driver

    return driver.active.utils.get_device_properties(device)["max_shared_mem"]


# ----------------------------------------------------------------------------- compiling one config


def compile_config(tuner: Any, config: Any, kwargs: dict[str, Any]) -> Any:
    """The ``CompiledKernel`` the autotuner would time for ``config`` at this launch: the tuned function's
    ``run`` called as ``Autotuner.run`` calls it, with ``warmup=True`` (compile or fetch, no launch)."""
    if getattr(config, "pre_hook", None):  # e.g. the TMA kernels set their descriptors' boxes per config
        config.pre_hook({**tuner.nargs, **kwargs, **config.all_kwargs()})
    return tuner.fn.run(*tuner.nargs.values(), **{"grid": None, **kwargs, **config.all_kwargs(), "warmup": True})


def read_facts(kernel: Any, max_shared: int) -> Facts:
    """``kernel``'s facts; shared memory is checked before loading, as Triton's loader checks it."""
    shared = kernel.metadata.shared
    if shared > max_shared:
        return Facts(fits=False, shared=shared)
    try:
        kernel.run  # noqa: B018  (reading it loads the binary, which sets n_regs and n_spills)
    except OutOfResources:
        return Facts(fits=False, shared=shared)
    return Facts(fits=True, spills=kernel.n_spills, regs=kernel.n_regs, shared=shared)


# ----------------------------------------------------------------------------- the cache key


def launch_values(tuner: Any, config: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every named value the JIT function sees for ``config``: the launch's arguments, the config's, and
    each heuristics wrapper's values, added in the order ``Heuristics.run`` adds them."""
    values = {**tuner.nargs, **kwargs, **config.all_kwargs()}
    fn = tuner.fn
    while hasattr(fn, "values") and hasattr(fn, "fn"):
        for name, heuristic in fn.values.items():
            values[name] = heuristic(values)
        fn = fn.fn
    return values


def value_key(value: Any, exact: bool) -> Hashable | None:
    """How one argument enters the key: at least as finely as Triton specializes it (a tensor by dtype
    and 16-byte alignment; an int by being 1, divisible by 16 and its integer type; a constexpr by
    value); None for a kind not modelled here."""
    if hasattr(value, "data_ptr") and hasattr(value, "dtype"):
        return ("tensor", str(value.dtype), value.data_ptr() % 16 == 0)
    if type(value).__name__ == "TensorDescriptor" and hasattr(value, "block_shape"):
        # Its box comes from the config (a pre_hook sets it), which is in the key already.
        return ("desc", str(value.base.dtype), value.base.data_ptr() % 16 == 0, getattr(value, "padding", None))
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not exact:
        return ("int", value == 1, value % 16 == 0, -(2**31) <= value < 2**31, value < 2**63)
    if isinstance(value, float) and not exact:
        return "float"
    if not exact:
        return None
    try:
        hash(value)
    except TypeError:
        return None
    return (type(value).__name__, value)


def specialization(tuner: Any, config: Any, kwargs: dict[str, Any]) -> Hashable | None:
    """A key that tells apart every compiled form this launch of ``config`` could take on the current
    device (finer than Triton's own key where that is simpler); None where some argument is of a kind
    not modelled here, so its verdict is not cached."""
    fn = tuner.fn
    while not hasattr(fn, "params") and hasattr(fn, "fn"):
        fn = fn.fn
    runtime = {p.name for p in getattr(fn, "params", ()) if not p.is_constexpr}
    parts = []
    for name, value in launch_values(tuner, config, kwargs).items():
        if name in LAUNCH_ONLY:
            continue
        part = value_key(value, exact=name not in runtime)
        if part is None:
            return None
        parts.append((name, part))
    return (current_device(), tuple(sorted(parts)))


# ----------------------------------------------------------------------------- the choice


def choose(configs: Sequence[Any], facts: Sequence[Facts | None]) -> list[Any]:
    """The configs to time, in their order: those that compile clean (or whose facts are unknown); else the
    fitting one with the fewest spill bytes (the first on a tie); else, where nothing fits, all of them."""
    clean = [c for c, f in zip(configs, facts, strict=True) if f is None or f.clean]
    if clean:
        return clean
    fitting = [(f.spills, i) for i, f in enumerate(facts) if f.fits]
    return [configs[min(fitting)[1]]] if fitting else list(configs)


class CompiledPrune:
    """``Autotuner.prune_configs`` for one tuner: the tuner's own prune, then :func:`choose` on the
    compiled facts of what it kept. The tuner's own method stays reachable as ``__wrapped__``."""

    def __init__(self, tuner: Any) -> None:
        self.tuner = tuner
        self.__wrapped__ = tuner.prune_configs
        self.kernel = tuner.base_fn.__name__
        self.verdicts: dict[Hashable, Facts | None] = {}
        self.warned: set[str] = set()

    def __call__(self, kwargs: dict[str, Any]) -> list[Any]:
        kept = self.__wrapped__(kwargs)
        if len(kept) < 2 or not enabled():
            return kept
        facts = [self.facts(c, kwargs) for c in kept]
        picked = choose(kept, facts)
        if not any(f is None or f.clean for f in facts):
            self.warn_unclean(kept, facts, picked)
        return picked

    def facts(self, config: Any, kwargs: dict[str, Any]) -> Facts | None:
        try:
            key = specialization(self.tuner, config, kwargs)
            if key is not None and key in self.verdicts:
                return self.verdicts[key]
            try:
                found = read_facts(compile_config(self.tuner, config, kwargs), max_shared_memory(current_device()))
            except UNFIT_ERRORS:
                found = Facts(fits=False)
        except Exception as e:  # an API this module does not know: time the config as Triton would
            self.warn_once("unknown", f"{self.kernel}: could not read compiled facts ({e!r}); its configs are "
                                      f"timed without the compiled-facts prune")
            return None
        if key is not None:
            self.verdicts[key] = found
        return found

    def warn_unclean(self, kept: list[Any], facts: list[Facts | None], picked: list[Any]) -> None:
        if len(picked) == len(kept):
            self.warn_once("unfit", f"{self.kernel}: no candidate config fits this device; timing them all")
            return
        f = facts[kept.index(picked[0])]
        self.warn_once("spills", f"{self.kernel}: every candidate config spills registers on this device; "
                                 f"timing only the least ({picked[0]}: {f.spill_bytes} B spilled, {f.regs} registers)")

    def warn_once(self, kind: str, message: str) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            warnings.warn(message, RuntimeWarning, stacklevel=3)


def attach(tuner: Any) -> Any:
    """Route ``tuner``'s pruning through :class:`CompiledPrune` (once) and return ``tuner``."""
    if not is_attached(tuner):
        tuner.prune_configs = CompiledPrune(tuner)
    return tuner


def is_attached(tuner: Any) -> bool:
    return isinstance(getattr(tuner, "prune_configs", None), CompiledPrune)
