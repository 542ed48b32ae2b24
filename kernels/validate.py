"""Input checks shared by every host launcher.

Launchers call these before any kernel runs, so bad input gets a ``ValueError``/``TypeError``
that names the argument and what was expected, never an out-of-bounds access in a kernel.
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Sequence

import torch
import triton

from .interpreter import interpreter_enabled
from .launch import LOG2E

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INT32_MAX = 2**31 - 1
MIN_BLOCK = 16  # the smallest sequence tile of any attention or decode kernel (the grid-size bound below)
_FP32_MAX = 3.4028234663852886e38


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


def max_offset(t: torch.Tensor, dims: Sequence[int] | None = None) -> int:
    """The furthest element of ``t`` from its first, in elements, over ``dims`` (every dim by default):
    sum of (size - 1) * |stride|; 0 for an empty tensor. Kernels that index with int32 offsets need it
    below 2**31."""
    dims = range(t.dim()) if dims is None else dims
    if any(t.shape[i] == 0 for i in dims):
        return 0
    return sum((t.shape[i] - 1) * abs(t.stride(i)) for i in dims)


def slice_extent(t: torch.Tensor) -> int:
    """Largest offset, in elements, inside one (batch, head) slice of a (B, H, T, D) tensor: what
    the kernels index with int32 ((T - 1) * stride_t + (D - 1) * stride_d; batch and head offsets
    are int64)."""
    return max_offset(t, (2, 3))


def check_int32_span(name: str, t: torch.Tensor) -> None:
    """Kernels that index within a tensor with int32 offsets: its furthest element must be below
    2**31 (otherwise a kernel would read or write out of bounds)."""
    span = max_offset(t)
    if span >= 2**31:
        raise ValueError(f"{name}: spans {span + 1} elements; this kernel indexes with 32-bit offsets "
                         "(at most 2**31 - 1): split the batch")


def check_offsets(**tensors: torch.Tensor) -> None:
    """Every (B, H, T, D) argument, the fresh contiguous outputs of its shape and the 1-D grid must
    be indexable with int32: ValueError naming the argument otherwise (before anything launches)."""
    for name, t in tensors.items():
        extent = slice_extent(t)
        if extent > INT32_MAX:
            raise ValueError(
                f"{name}: one (batch, head) slice spans {extent + 1} elements (strides {tuple(t.stride())}); "
                f"the attention kernels index within a slice with 32-bit offsets (at most 2**31): "
                f"pass {name}.contiguous() or a shorter sequence")
        B, H, n, d = t.shape
        if n * d > INT32_MAX + 1:
            raise ValueError(f"{name}: a (T, D) = ({n}, {d}) slice has more than 2**31 elements; the attention "
                             "kernels index within a slice with 32-bit offsets: use a shorter sequence")
        if B * H * triton.cdiv(n, MIN_BLOCK) > INT32_MAX:
            raise ValueError(f"{name}: B * H * ceil(T / {MIN_BLOCK}) = {B * H * triton.cdiv(n, MIN_BLOCK)} "
                             "programs exceed the 2**31 - 1 grid limit: split the batch")


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


def check_scale(sm_scale: object) -> float:
    """sm_scale: a positive finite real (numpy scalars too) whose sm_scale * log2(e), the factor the
    kernels apply in fp32, is finite there too."""
    scale = check_float("sm_scale", sm_scale, positive=True)
    if scale * LOG2E > _FP32_MAX:
        raise ValueError(f"sm_scale: {scale:g} is too large: the kernels scale scores by sm_scale * log2(e) "
                         f"in fp32, which must be finite (sm_scale at most {_FP32_MAX / LOG2E:.4g})")
    return scale


def check_sm_scale(sm_scale: object, head_dim: int) -> float:
    """The public ``sm_scale`` argument of the attention ops: None gives 1/sqrt(head_dim); a number is
    checked (``check_scale``) unless torch.compile traces it. Traced by torch.compile(dynamic=True), a
    number may be symbolic (Dynamo shows it as a plain float): testing its value would break the graph,
    so it passes through and the launcher checks the concrete value."""
    if sm_scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(sm_scale, torch.SymInt | torch.SymFloat) or (
            torch.compiler.is_compiling() and isinstance(sm_scale, int | float) and not isinstance(sm_scale, bool)):
        return sm_scale if isinstance(sm_scale, float) else torch.sym_float(sm_scale)
    return check_scale(sm_scale)


def check_optional_count(name: str, value: object) -> int | None:
    """None, or an int >= 1 (numpy integers too), returned as a Python int."""
    if value is None:
        return None
    if isinstance(value, bool) or not hasattr(value, "__index__") or isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected an int or None, got {type(value).__name__}")
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name}: expected at least 1, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """A Python bool (no truthy stand-ins)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return value
