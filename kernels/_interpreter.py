"""Helpers for running the kernels under Triton's CPU interpreter (``TRITON_INTERPRET=1``).

Known interpreter bug (seen 2026-11 on Triton 3.6 and 3.9): bf16 values are stored as raw
uint16 bits and ``create_dot`` feeds those bits straight to ``np.matmul``, so ``tl.dot`` on bf16
operands returns garbage (a 16x16 product was off by ~1e10). Loads, stores and casts of bf16 are
right. ``patch_bf16_dot`` upcasts bf16 operands to fp32 (exact) before the matmul, which is what
the GPU's tensor cores do too (bf16 products, fp32 accumulation). Re-check on Triton upgrades:
``tests/test_interpreter.py`` fails loudly once the bug is fixed upstream or the patch breaks.
"""

from __future__ import annotations

import os

import numpy as np


def interpreter_enabled() -> bool:
    """True when Triton kernels run on the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


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


def unpatch_bf16_dot() -> None:
    """Restore the interpreter's own ``create_dot`` (used by the test that shows the bug)."""
    from triton.runtime import interpreter as interp

    current = interp.InterpreterBuilder.create_dot
    original = getattr(current, "_tritongpt_original", None)
    if original is not None:
        interp.InterpreterBuilder.create_dot = original
