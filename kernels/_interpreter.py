"""Helpers for running the kernels under Triton's CPU interpreter (``TRITON_INTERPRET=1``).

Known interpreter bugs (seen 2026-11 on Triton 3.9; the dot bug on 3.6 too), both patched here:

1. bf16 values are stored as raw uint16 bits and ``create_dot`` feeds those bits straight to
   ``np.matmul``, so ``tl.dot`` on bf16 operands returns garbage (a 16x16 product was off by
   ~1e10). ``patch_bf16_dot`` upcasts bf16 operands to fp32 (exact) before the matmul, which is
   what the GPU's tensor cores do too (bf16 products, fp32 accumulation).
2. fp32 -> bf16 casts (``.to(tl.bfloat16)`` and stores of fp32 values into bf16 pointers)
   truncate the mantissa, where GPUs and torch round to nearest even: every bf16 output was off
   by up to 1 ulp, and a residual ``h = x + r`` did not match torch's. ``patch_bf16_cast`` rounds.

Re-check on Triton upgrades: ``tests/test_interpreter.py`` fails loudly once either bug is
fixed upstream (then the patch can go) or a patch stops working.
"""

from __future__ import annotations

import os

import numpy as np


def interpreter_enabled() -> bool:
    """True when Triton kernels run on the CPU interpreter (``TRITON_INTERPRET`` set true, parsed
    as Triton parses it). Read at call time; kernels themselves are decorated at import, so set
    the variable before importing ``tritongpt.kernels``."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _bf16_bits_to_fp32(bits: np.ndarray) -> np.ndarray:
    # bf16 is the upper half of an fp32: shifting the bits left by 16 is an exact conversion.
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def patch_bf16_dot() -> bool:
    """Make the interpreter's ``tl.dot`` correct for bf16 inputs. Idempotent.

    Returns True if the patch is (now) installed, False if this Triton has no interpreter
    builder to patch (then nothing is changed).
    """
    try:
        import triton.language as tl
        from triton.runtime import interpreter as interp
    except ImportError:  # pragma: no cover - Triton missing
        return False
    builder = getattr(interp, "InterpreterBuilder", None)
    if builder is None or not hasattr(builder, "create_dot"):
        return False
    if getattr(builder.create_dot, "_tritongpt_bf16_patch", False):
        return True
    original = builder.create_dot

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.dtype == tl.bfloat16 or b.dtype == tl.bfloat16:
            a_data = _bf16_bits_to_fp32(a.data) if a.dtype == tl.bfloat16 else a.data.astype(np.float32)
            b_data = _bf16_bits_to_fp32(b.data) if b.dtype == tl.bfloat16 else b.data.astype(np.float32)
            out = np.matmul(a_data, b_data, dtype=np.float32).astype(d.data.dtype) + d.data
            return interp.TensorHandle(out, d.dtype.scalar)
        return original(self, a, b, d, input_precision, max_num_imprecise_acc)

    create_dot._tritongpt_bf16_patch = True  # type: ignore[attr-defined]
    create_dot._tritongpt_original = original  # type: ignore[attr-defined]
    builder.create_dot = create_dot
    return True


def _fp32_to_bf16_rne(data: np.ndarray) -> np.ndarray:
    """fp32 values -> bf16 bit patterns (uint16), rounding to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(data, dtype=np.float32).view(np.uint32)
    lsb = (bits >> np.uint32(16)) & np.uint32(1)
    rounded = ((bits + np.uint32(0x7FFF) + lsb) >> np.uint32(16)).astype(np.uint16)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, ((bits >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16), rounded)


def patch_bf16_cast() -> bool:
    """Make the interpreter round fp32 -> bf16 to nearest even, as GPUs do. Idempotent."""
    try:
        import triton.language as tl
        from triton.runtime import interpreter as interp
    except ImportError:  # pragma: no cover
        return False
    builder = getattr(interp, "InterpreterBuilder", None)
    if builder is None or not hasattr(builder, "cast_impl"):
        return False
    if getattr(builder.cast_impl, "_tritongpt_bf16_patch", False):
        return True
    original = builder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            return interp.TensorHandle(_fp32_to_bf16_rne(src.data), dst_type.scalar)
        return original(self, src, dst_type)

    cast_impl._tritongpt_bf16_patch = True  # type: ignore[attr-defined]
    cast_impl._tritongpt_original = original  # type: ignore[attr-defined]
    builder.cast_impl = cast_impl
    return True


def unpatch_bf16_cast() -> None:
    """Restore the interpreter's own ``cast_impl`` (used by the test that shows the bug)."""
    from triton.runtime import interpreter as interp

    original = getattr(interp.InterpreterBuilder.cast_impl, "_tritongpt_original", None)
    if original is not None:
        interp.InterpreterBuilder.cast_impl = original


def patch_interpreter() -> None:
    """Install every workaround above (tests call this before any kernel runs)."""
    patch_bf16_dot()
    patch_bf16_cast()


def unpatch_bf16_dot() -> None:
    """Restore the interpreter's own ``create_dot`` (used by the test that shows the bug)."""
    from triton.runtime import interpreter as interp

    current = interp.InterpreterBuilder.create_dot
    original = getattr(current, "_tritongpt_original", None)
    if original is not None:
        interp.InterpreterBuilder.create_dot = original
