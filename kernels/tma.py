"""Choosing between the TMA (tensor-descriptor) path and the pointer path of a kernel.

TMA (Hopper's Tensor Memory Accelerator, also on Blackwell) copies whole tiles between global and
shared memory from a descriptor built once per launch. Triton exposes it as tensor descriptors
(host ``triton.tools.tensor_descriptor.TensorDescriptor``, Triton >= 3.4). The hardware has rules
the Triton interpreter does not enforce, so the launcher checks them here and falls back to the
pointer path where a tensor breaks one:

- the base address is 16-byte aligned;
- every stride but the last is a multiple of 16 bytes, the last stride is 1;
- a box (block) dimension is at most 256 elements, and its innermost extent at least 16 bytes;
- at most 5 dimensions, each of size >= 1 and below 2**32, each stride below 2**40 bytes.

The path is chosen per launch from the Triton version, the device's compute capability (TMA needs
sm_90 or newer) and the tensors; ``choose_path`` takes all three as arguments so tests can ask for
any combination without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .versions import triton_version

POINTER, TMA = "pointer", "tma"
PATHS = (POINTER, TMA)
MIN_TRITON = (3, 4)  # host TensorDescriptor and tl.tensor descriptors with .load/.store
MIN_CAPABILITY = 9  # sm_90 (Hopper) and newer have TMA
MAX_BOX = 256


def descriptors_available(version: tuple[int, int] | None = None) -> bool:
    """True when this Triton (or ``version``) has the tensor-descriptor API the TMA kernels use."""
    if (version or triton_version()) < MIN_TRITON:
        return False
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: F401
    except ImportError:
        return False
    return True


def tma_unfit(t: torch.Tensor, block_shape: Sequence[int]) -> str | None:
    """Why ``t`` cannot be read or written through a TMA descriptor with this box, or None if it can."""
    es = t.element_size()
    if t.dim() == 0 or t.dim() > 5:
        return f"{t.dim()} dimensions (TMA takes 1 to 5)"
    if len(block_shape) != t.dim():
        return f"box {tuple(block_shape)} does not match {t.dim()} dimensions"
    if t.data_ptr() % 16:
        return "base address is not 16-byte aligned"
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        return f"last stride is {t.stride(-1)}, not 1"
    for i, s in enumerate(t.stride()[:-1]):
        if t.shape[i] > 1 and (s * es) % 16:
            return f"stride {s} of dim {i} is not a multiple of 16 bytes"
        if s * es >= 2**40:
            return f"stride {s} of dim {i} is too large for a descriptor"
    if any(n < 1 or n >= 2**32 for n in t.shape):
        return f"shape {tuple(t.shape)} has a dimension outside [1, 2**32)"
    if any(b < 1 or b > MAX_BOX for b in block_shape):
        return f"box {tuple(block_shape)} has a dimension outside [1, {MAX_BOX}]"
    if block_shape[-1] * es < 16:
        return f"box inner extent {block_shape[-1] * es} B is below 16 B"
    return None


def device_capability(device: torch.device) -> tuple[int, int] | None:
    """(major, minor) of a CUDA device; None for CPU (the interpreter)."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_capability(device)


def choose_path(
    tensors: Sequence[tuple[torch.Tensor, Sequence[int]]],
    *,
    capability: tuple[int, int] | None,
    version: tuple[int, int] | None = None,
) -> str:
    """``TMA`` when the Triton version has descriptors, the device is sm_90 or newer and every
    (tensor, box) pair fits TMA's rules; ``POINTER`` otherwise. ``capability`` None (CPU, the
    interpreter) picks the pointer path: tests that cover the TMA path under the interpreter force it."""
    if capability is None or capability[0] < MIN_CAPABILITY or not descriptors_available(version):
        return POINTER
    if any(tma_unfit(t, box) is not None for t, box in tensors):
        return POINTER
    return TMA


def check_path(name: str, path: object) -> str:
    """Validate a ``path=`` argument: None (choose), "pointer" or "tma"."""
    if path is None or path in PATHS:
        return path
    raise ValueError(f"{name}: expected one of {PATHS} or None (choose per launch), got {path!r}")


def make_descriptor(t: torch.Tensor, block_shape: Sequence[int]):
    """A host tensor descriptor over ``t`` (TMA rules checked first: ValueError naming the rule)."""
    why = tma_unfit(t, block_shape)
    if why is not None:
        raise ValueError(f"tensor of shape {tuple(t.shape)} cannot use the TMA path: {why}")
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(t, list(t.shape), list(t.stride()), list(block_shape))
