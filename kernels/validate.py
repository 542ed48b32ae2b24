"""Input checks shared by every host launcher.

Launchers call these before any kernel runs, so bad input gets a ``ValueError``/``TypeError``
that names the argument and what was expected, never an out-of-bounds access in a kernel.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch

from .interpreter import interpreter_enabled

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_tensor(
    name: str,
    t: object,
    *,
    ndim: int | Sequence[int] | None = None,
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
    unit_last_stride: bool = True,
) -> torch.Tensor:
    """Check type, rank, dtype, device and last-dim stride of one tensor argument."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name}: expected a {want}-D tensor, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name}: expected dtype in ({names}), got {str(t.dtype).replace('torch.', '')}")
    check_device(name, t)
    if unit_last_stride and t.dim() > 0 and t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(
            f"{name}: the last dimension must be contiguous (stride 1), got strides {tuple(t.stride())}; "
            f"pass {name}.contiguous()"
        )
    return t


def check_device(name: str, t: torch.Tensor) -> None:
    """Kernels run on CUDA tensors, or on CPU tensors under the Triton interpreter."""
    if t.is_cuda:
        return
    if t.device.type == "cpu" and interpreter_enabled():
        return
    where = "CUDA" if not interpreter_enabled() else "CUDA or CPU"
    hint = "" if interpreter_enabled() else " (set TRITON_INTERPRET=1 to run kernels on CPU)"
    raise ValueError(f"{name}: expected a tensor on a {where} device, got {t.device}{hint}")


def check_same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """``t`` must share dtype and device with ``ref``."""
    if t.dtype != ref.dtype:
        raise TypeError(f"{name}: dtype {t.dtype} does not match {ref_name} dtype {ref.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name}: device {t.device} does not match {ref_name} device {ref.device}")


def device_guard(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``t``'s GPU the current one for the launch: Triton launches on the current device, so
    a tensor on cuda:1 with cuda:0 current would otherwise be read from the wrong GPU."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def check_int32_span(name: str, t: torch.Tensor) -> None:
    """Kernels that index within a tensor with int32 offsets: its furthest element must be below
    2**31 (otherwise a kernel would read or write out of bounds)."""
    span = sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride(), strict=True) if n > 0)
    if span >= 2**31:
        raise ValueError(f"{name}: spans {span + 1} elements; this kernel indexes with 32-bit offsets "
                         "(at most 2**31 - 1): split the batch")


def check_float(name: str, value: object, *, positive: bool = False) -> float:
    """A finite Python/numpy real scalar (not bool), returned as float."""
    if isinstance(value, bool) or not isinstance(value, int | float) and not hasattr(value, "__float__"):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    if isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a Python number, got a tensor")
    v = float(value)  # type: ignore[arg-type]
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name}: expected a positive number, got {v}")
    return v
