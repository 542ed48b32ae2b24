"""Counting kernel launches of a piece of work (a decode step, say).

On CUDA the profiler's kernel records are counted: exact. Without a GPU the count is what the same
work would launch on one: every Triton kernel launch (counted at the JIT function, so autotune and
heuristics wrappers count once) plus every ATen op that launches a kernel on CUDA (views, metadata
and uninitialised allocations launch nothing). ``per_module`` attributes launches to the calls of
chosen methods (each transformer block's decode step) to report launches per layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_NO_KERNEL = {
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "detach", "alias",
    "_local_scalar_dense", "_unsafe_view", "_reshape_alias", "resize_", "set_", "sym_size", "sym_stride",
    "sym_numel", "is_same_size",
}


def _launches_a_kernel(func, args: tuple) -> bool:
    schema = func._schema
    if schema.name.split("::")[0] != "aten":
        return False  # custom ops (tritongpt::*) are counted by their Triton launches
    if func.overloadpacket.__name__ in _NO_KERNEL:
        return False
    if func.overloadpacket.__name__ in ("dropout", "feature_dropout") and args[2] is False:
        return False  # eval-mode dropout returns its input
    rets = schema.returns
    # A view returns an alias of an input without writing it (transpose, view, split, unbind, ...).
    if rets and all(r.alias_info is not None and not r.alias_info.is_write for r in rets):
        return False
    return True


class _AtenCounter(TorchDispatchMode):
    def __init__(self, counter: LaunchCount) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if _launches_a_kernel(func, args):
            self.counter.add(f"aten.{func.overloadpacket.__name__}")
        return func(*args, **(kwargs or {}))


@dataclass
class LaunchCount:
    total: int = 0
    by_name: dict[str, int] = field(default_factory=dict)
    per_call: dict[str, list[int]] = field(default_factory=dict)  # method label -> launches of each call
    method: str = ""
    profiled: int | None = None  # exact kernel count from the CUDA profiler, when on a GPU

    def add(self, name: str, n: int = 1) -> None:
        self.total += n
        self.by_name[name] = self.by_name.get(name, 0) + n


@contextlib.contextmanager
def _patched_triton(counter: LaunchCount):
    from triton.runtime import jit

    classes: list[Any] = [jit.JITFunction]
    try:
        from triton.runtime.interpreter import InterpretedFunction

        classes.append(InterpretedFunction)
    except ImportError:  # pragma: no cover - older Triton layouts
        pass
    saved = [(c, c.run) for c in classes]

    def wrap(orig):
        def run(self, *args, warmup=False, **kwargs):
            if not warmup:
                name = getattr(self, "__name__", None) or getattr(getattr(self, "fn", None), "__name__", "kernel")
                counter.add(f"triton.{name}")
            return orig(self, *args, warmup=warmup, **kwargs)

        return run

    try:
        for c, orig in saved:
            c.run = wrap(orig)
        yield
    finally:
        for c, orig in saved:
            c.run = orig


@contextlib.contextmanager
def _per_call(counter: LaunchCount, methods: Iterable[tuple[str, Any, str]]):
    """Wrap ``obj.attr`` so each call records the launches made inside it under ``label``."""
    saved = []
    for label, obj, attr in methods:
        orig = getattr(obj, attr)

        def wrapped(*a, _orig=orig, _label=label, **k):
            before = counter.total
            out = _orig(*a, **k)
            counter.per_call.setdefault(_label, []).append(counter.total - before)
            return out

        saved.append((obj, attr))
        setattr(obj, attr, wrapped)
    try:
        yield
    finally:
        for obj, attr in saved:
            delattr(obj, attr)  # back to the class attribute


def count_launches(fn: Callable[[], Any], *, per_call: Iterable[tuple[str, Any, str]] = ()) -> LaunchCount:
    """Launches made by ``fn()``: counted Triton + ATen launches (attributed to ``per_call`` methods);
    on CUDA the profiler's exact kernel count of a second run is in ``profiled``."""
    counter = LaunchCount()
    with _patched_triton(counter), _AtenCounter(counter), _per_call(counter, per_call):
        fn()
    counter.method = "counted: Triton launches + kernel-launching ATen ops"
    if torch.cuda.is_available():
        from torch.profiler import ProfilerActivity, profile

        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                   and not e.name.startswith(("Memcpy", "Memset"))]
        counter.profiled = len(kernels)
        counter.method += f"; CUDA profiler on {torch.cuda.get_device_name()}"
    return counter
