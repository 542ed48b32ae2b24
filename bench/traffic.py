"""Counted memory traffic: the bytes a kernel really loads and stores, measured on CPU.

Under Triton's interpreter every ``tl.load``/``tl.store`` runs through two builder methods;
``count_traffic`` wraps them and records the addresses of the lanes that are not masked off.
After the kernel ran, the caller names the tensors (inputs, outputs, saved statistics) and gets,
per tensor, the bytes read and written (every access counted, re-reads included) and the unique
bytes touched. Accesses outside every named tensor are reported as ``<unnamed>``: scratch
buffers the launcher allocated, or a bug.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class TensorTraffic:
    name: str
    nbytes: int  # size of the tensor's storage span
    read: int = 0  # bytes loaded, every access
    written: int = 0  # bytes stored, every access
    unique_read: int = 0
    unique_written: int = 0


@dataclass
class Traffic:
    """Raw access log plus attribution to named tensors."""

    _loads: list[tuple[np.ndarray, int]] = field(default_factory=list)
    _stores: list[tuple[np.ndarray, int]] = field(default_factory=list)

    @property
    def bytes_read(self) -> int:
        return sum(a.size * s for a, s in self._loads)

    @property
    def bytes_written(self) -> int:
        return sum(a.size * s for a, s in self._stores)

    @property
    def total(self) -> int:
        return self.bytes_read + self.bytes_written

    def attribute(self, tensors: dict[str, torch.Tensor]) -> dict[str, TensorTraffic]:
        """Split the log by tensor. Tensors must be alive (their storage spans are read here)."""
        spans = []
        for name, t in tensors.items():
            if t is None:
                continue
            lo = t.data_ptr()
            # The span a strided view can touch: up to its last element.
            last = sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True)) if t.numel() else -1
            hi = lo + (last + 1) * t.element_size()
            spans.append((lo, hi, name))
        spans.sort()
        out = {name: TensorTraffic(name, hi - lo) for lo, hi, name in spans}
        out["<unnamed>"] = TensorTraffic("<unnamed>", 0)
        starts = np.array([s[0] for s in spans], dtype=np.int64)
        ends = np.array([s[1] for s in spans], dtype=np.int64)
        names = [s[2] for s in spans] + ["<unnamed>"]

        def owner(addr: np.ndarray) -> np.ndarray:
            i = np.searchsorted(starts, addr, side="right") - 1
            ok = (i >= 0) & (addr < ends[np.clip(i, 0, None)]) if len(starts) else np.zeros(addr.shape, bool)
            return np.where(ok, i, len(spans))

        for log, total_attr, uniq_attr in ((self._loads, "read", "unique_read"),
                                           (self._stores, "written", "unique_written")):
            seen: dict[int, list[np.ndarray]] = {}
            for addr, size in log:
                own = owner(addr)
                for k in np.unique(own):
                    sel = addr[own == k]
                    rec = out[names[k]]
                    setattr(rec, total_attr, getattr(rec, total_attr) + sel.size * size)
                    # Byte addresses, so mixed element sizes on one tensor still count right.
                    seen.setdefault(int(k), []).append((sel[:, None] + np.arange(size)).ravel())
            for k, chunks in seen.items():
                setattr(out[names[k]], uniq_attr, int(np.unique(np.concatenate(chunks)).size))
        return out


_ACTIVE: list[Traffic] = []


def _install() -> None:
    from triton.runtime import interpreter as interp

    b = interp.InterpreterBuilder
    if getattr(b.create_masked_load, "_tritongpt_traffic", False):
        return
    orig_load, orig_store = b.create_masked_load, b.create_masked_store

    # The trailing arguments differ between Triton versions ((cache_policy, is_volatile) on 3.9,
    # (cache_modifier, eviction_policy, is_volatile) on 3.3-3.6): only ptrs and mask are read here,
    # the rest is passed through as given.
    def _record(into: list, ptrs, mask) -> None:
        size = np.dtype(interp._get_np_dtype(ptrs.get_element_ty())).itemsize
        addr = np.broadcast_to(ptrs.data, np.broadcast_shapes(ptrs.data.shape, mask.data.shape))
        m = np.broadcast_to(mask.data, addr.shape)
        into.append((addr[m].astype(np.int64).ravel(), size))

    def counted(orig, mask_at: int, kind: str):
        """``orig`` that first records its accesses into the innermost ``count_traffic`` block's ``kind`` list;
        the mask is argument ``mask_at`` (a store's value sits between its pointers and mask)."""
        def create(self, *args, **kwargs):
            if _ACTIVE:
                ptrs = args[0] if args else kwargs["ptrs"]
                mask = args[mask_at] if len(args) > mask_at else kwargs["mask"]
                _record(getattr(_ACTIVE[-1], kind), ptrs, mask)
            return orig(self, *args, **kwargs)

        return create

    b.create_masked_load = counted(orig_load, 1, "_loads")
    b.create_masked_load._tritongpt_traffic = True  # type: ignore[attr-defined]
    b.create_masked_store = counted(orig_store, 2, "_stores")


@contextlib.contextmanager
def count_traffic() -> Iterator[Traffic]:
    """Record every interpreter load/store inside the block (needs ``TRITON_INTERPRET=1``)."""
    from tritongpt.kernels.interpreter import interpreter_enabled

    if not interpreter_enabled():
        raise RuntimeError("count_traffic needs the Triton interpreter: set TRITON_INTERPRET=1 before import")
    _install()
    t = Traffic()
    _ACTIVE.append(t)
    try:
        yield t
    finally:
        _ACTIVE.remove(t)
