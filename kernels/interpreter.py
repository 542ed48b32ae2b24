"""Helpers for running the kernels under Triton's CPU interpreter (``TRITON_INTERPRET=1``).

Known interpreter bugs (1 and 2 seen 2026-11 on Triton 3.3.1, 3.6.0 and 3.9.0), all patched here:

1. bf16 values are stored as raw uint16 bits and ``create_dot`` feeds those bits straight to
   ``np.matmul``, so ``tl.dot`` on bf16 operands returns garbage (a 16x16 product was off by
   ~1e10). ``patch_bf16_dot`` upcasts bf16 operands to fp32 (exact) before the matmul, which is
   what the GPU's tensor cores do too (bf16 products, fp32 accumulation).
2. fp32 -> bf16 casts (``.to(tl.bfloat16)`` and stores of fp32 values into bf16 pointers)
   truncate the mantissa, where GPUs and torch round to nearest even: every bf16 output was off
   by up to 1 ulp, and a residual ``h = x + r`` did not match torch's. ``patch_bf16_cast`` rounds.
3. Triton 3.3 and 3.6 only (fixed in 3.9), with NumPy >= 2.4: ``range(n)`` over a scalar kernel
   argument raised a TypeError, see ``tensor_index_is_broken``; ``patch_tensor_index`` fixes it.

Each patch is guarded: before installing it, a probe runs the interpreter's own builder method on
a tiny input and the patch goes in only if the bug shows (and bf16 is still stored as uint16 bits,
which the patches assume), so a Triton that fixed a bug, or changed the representation, is left
alone. Re-check on Triton upgrades: ``tests/test_interpreter.py`` checks that the probes agree with
what a kernel sees, that the bugs still exist on the versions they were seen on, and that the
patched interpreter is right.
"""

from __future__ import annotations

import inspect
import os
from types import SimpleNamespace

import numpy as np


def interpreter_enabled() -> bool:
    """True when Triton kernels run on the CPU interpreter (``TRITON_INTERPRET`` set true, parsed
    as Triton parses it). Read at call time; kernels themselves are decorated at import, so set
    the variable before importing ``tritongpt.kernels``."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _bf16_bits_to_fp32(bits: np.ndarray) -> np.ndarray:
    # bf16 is the upper half of an fp32: shifting the bits left by 16 is an exact conversion.
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _fp32_to_bf16_bits(values: list[float]) -> np.ndarray:
    # Exact for values that are representable in bf16 (the probes only use such values).
    return (np.asarray(values, dtype=np.float32).view(np.uint32) >> np.uint32(16)).astype(np.uint16)


def bf16_dot_is_broken() -> bool:
    """True if this Triton's interpreter multiplies raw bf16 bits in ``tl.dot`` (bug 1 above).

    Runs the unpatched builder method on a 1x1 product (1.0 * 2.0). False where the interpreter is
    right, or where its bf16 handling is not the uint16-bits scheme the patch assumes (then the
    patch would be wrong, so it stays out), or where the probe cannot run at all.
    """
    try:
        import triton.language as tl
        from triton.runtime import interpreter as interp

        create_dot = interp.InterpreterBuilder.create_dot
        create_dot = getattr(create_dot, "_tritongpt_original", create_dot)
        a = interp.TensorHandle(_fp32_to_bf16_bits([[1.0]]), tl.bfloat16)
        b = interp.TensorHandle(_fp32_to_bf16_bits([[2.0]]), tl.bfloat16)
        d = interp.TensorHandle(np.zeros((1, 1), dtype=np.float32), tl.float32)
        out = create_dot(None, a, b, d, None, None)  # the method does not use its builder
        value = float(np.asarray(out.data, dtype=np.float64).reshape(-1)[0])
    except Exception:  # an interpreter this probe does not understand: leave it alone
        return False
    return value != 2.0


def patch_bf16_dot() -> bool:
    """Make the interpreter's ``tl.dot`` correct for bf16 inputs. Idempotent.

    Returns True if the patch is (now) installed, False if this Triton has no interpreter
    builder to patch or its ``tl.dot`` does not have the bug (then nothing is changed).
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
    if not bf16_dot_is_broken():
        return False
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


def bf16_cast_truncates() -> bool:
    """True if this Triton's interpreter truncates fp32 -> bf16 casts (bug 2 above).

    Runs the unpatched builder method on 1 + 2**-8 + 2**-9, which rounds up to 1 + 2**-7 (bits
    0x3F81) but truncates to 1.0 (0x3F80). False where the interpreter rounds, where bf16 is not
    stored as uint16 bits (the patch writes such bits), or where the probe cannot run at all.
    """
    try:
        import triton.language as tl
        from triton.runtime import interpreter as interp

        cast_impl = interp.InterpreterBuilder.cast_impl
        cast_impl = getattr(cast_impl, "_tritongpt_original", cast_impl)
        src = interp.TensorHandle(np.array([1.0 + 2.0**-8 + 2.0**-9], dtype=np.float32), tl.float32)
        out = cast_impl(None, src, tl.bfloat16)  # the method does not use its builder
    except Exception:  # an interpreter this probe does not understand: leave it alone
        return False
    data = np.asarray(out.data)
    return data.dtype == np.uint16 and int(data.reshape(-1)[0]) == 0x3F80


def patch_bf16_cast() -> bool:
    """Make the interpreter round fp32 -> bf16 to nearest even, as GPUs do. Idempotent.

    Returns True if the patch is (now) installed, False if this Triton has no interpreter builder
    to patch or its casts do not truncate (then nothing is changed).
    """
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
    if not bf16_cast_truncates():
        return False
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


def _interpreter_index_method():
    """The ``__index__`` that the interpreter's ``_patch_lang_tensor`` gives ``tl.tensor``, read off a
    stand-in class (the real one is patched only while a kernel runs)."""
    from triton.runtime import interpreter as interp

    patch = interp._patch_lang_tensor
    patch = getattr(patch, "_tritongpt_original", patch)

    class _StandIn:
        pass

    if len(inspect.signature(patch).parameters) >= 2:  # Triton >= 3.4: (tensor, scope)
        patch(_StandIn, interp._LangPatchScope())
    else:  # Triton 3.3: (tensor)
        patch(_StandIn)
    return _StandIn.__dict__["__index__"]


def tensor_index_is_broken() -> bool:
    """True if the interpreter's ``tl.tensor.__index__`` fails on a scalar kernel argument (bug 3).

    Triton 3.3 and 3.6 define it as ``int(self.handle.data)``, but scalars are stored as 1-element
    1-d arrays, and NumPy 2.4 no longer converts those with ``int()`` (deprecated since 1.25): every
    ``for i in range(0, n)`` over a runtime ``n`` raised "only 0-dimensional arrays can be converted
    to Python scalars". Triton 3.9 squeezes the array first. False where the probe cannot run.
    """
    try:
        index = _interpreter_index_method()
        scalar = SimpleNamespace(handle=SimpleNamespace(data=np.array([3], dtype=np.int32)))
        return index(scalar) != 3
    except TypeError:
        return True
    except Exception:  # an interpreter this probe does not understand: leave it alone
        return False


def _tensor_index(self) -> int:
    return int(self.handle.data.squeeze())  # what Triton 3.9's interpreter does


def patch_tensor_index() -> bool:
    """Make ``range()`` over scalar kernel arguments work on interpreters with bug 3. Idempotent.

    Returns True if the patch is (now) installed, False if this Triton does not need it.
    """
    try:
        from triton.runtime import interpreter as interp
    except ImportError:  # pragma: no cover
        return False
    current = getattr(interp, "_patch_lang_tensor", None)
    if current is None:
        return False
    if getattr(current, "_tritongpt_patch", False):
        return True
    if not tensor_index_is_broken():
        return False

    def _patch_lang_tensor(tensor, *args, **kwargs):
        current(tensor, *args, **kwargs)
        # Set directly, not through Triton >= 3.4's patch scope: the scope then restores the
        # attribute that was there before the kernel ran, as it would without this patch.
        tensor.__index__ = _tensor_index

    _patch_lang_tensor._tritongpt_patch = True  # type: ignore[attr-defined]
    _patch_lang_tensor._tritongpt_original = current  # type: ignore[attr-defined]
    interp._patch_lang_tensor = _patch_lang_tensor
    return True


def patch_interpreter() -> None:
    """Install every workaround above (tests call this before any kernel runs)."""
    patch_bf16_dot()
    patch_bf16_cast()
    patch_tensor_index()


def unpatch_bf16_dot() -> None:
    """Restore the interpreter's own ``create_dot`` (used by the test that shows the bug)."""
    from triton.runtime import interpreter as interp

    current = interp.InterpreterBuilder.create_dot
    original = getattr(current, "_tritongpt_original", None)
    if original is not None:
        interp.InterpreterBuilder.create_dot = original
