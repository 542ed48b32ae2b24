"""Host-side helpers that the kernel launchers share: output allocation, block sizes, dtype names, the
device's SM count and shared memory, CUDA-graph capture, and the 2-D view of a ``(..., C)`` operand.

Launchers call ``launch.alloc`` through the module (not a local name), so a test that replaces it
(NaN-poisoned buffers, allocation logs) reaches every launcher with one patch; ``launch.device_limits``
likewise, so the autotune prunes can be asked about any device without one.
"""

from __future__ import annotations

import functools
import math

import torch
import triton

LOG2E = 1.4426950408889634  # log2(e): kernels scale scores by sm_scale * LOG2E and use exp2
DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}  # Triton's type names
# Shared memory per block (bytes) by compute capability, where the driver cannot be asked; unknown parts
# get the smallest (101376).
SMEM_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448}


def alloc(shape: tuple[int, ...] | int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised output buffer: every attention, decode, int8-linear and layer-norm launcher
    allocates through here, so tests can hand out NaN-poisoned memory instead."""
    return torch.empty(shape, dtype=dtype, device=device)


def block_d(d: int) -> int:
    """The tile width of a head (or row) dim ``d``: the next power of two, at least 16 (tl.dot needs K >= 16)."""
    return max(16, triton.next_power_of_2(d))


@functools.cache
def _device_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device, default: int | None = None) -> int | None:
    """Streaming multiprocessors of a CUDA device; ``default`` for any other device (the interpreter)."""
    if device.type != "cuda":
        return default
    return _device_sm_count(device.index if device.index is not None else torch.cuda.current_device())


def capturing(t: torch.Tensor) -> bool:
    """A CUDA graph is being captured on the current stream of ``t``'s kind (then no host sync is allowed)."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def device_limits(device: torch.device) -> tuple[int, int]:
    """(compute capability as 80, 90, ..., shared memory per block in bytes) of a CUDA device."""
    major, minor = torch.cuda.get_device_capability(device)
    cc = major * 10 + minor
    try:
        idx = device.index if device.index is not None else torch.cuda.current_device()
        smem = int(triton.runtime.driver.active.utils.get_device_properties(idx)["max_shared_mem"])
    except Exception:  # older/newer driver API: fall back to the table, then the smallest part
        smem = SMEM_LIMIT.get(cc, 101376)
    return cc, smem


def rows(t: torch.Tensor) -> torch.Tensor:
    """(..., C) -> (M, C); a view whenever the leading dims allow it. M is explicit rather than -1,
    which reshape cannot infer when C == 0."""
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])
