"""The interpreter's bf16 bugs and the harness workarounds (kernels/interpreter.py)."""

import pytest
import torch

from tritongpt.kernels.interpreter import (
    bf16_cast_truncates,
    bf16_dot_is_broken,
    interpreter_enabled,
    patch_bf16_cast,
    patch_bf16_dot,
    patch_tensor_index,
    tensor_index_is_broken,
    unpatch_bf16_cast,
    unpatch_bf16_dot,
)

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not interpreter_enabled(), reason="interpreter-only behaviour")]

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# Both bugs were seen on each of these releases; a Triton outside this list may have fixed them, and
# then the guarded patches must stay out (the probes decide, and must agree with what kernels see).
_BUGGY_RELEASES = ("3.3.1", "3.6.0", "3.9.0")
_KNOWN_BUGGY = triton.__version__.split("+")[0] in _BUGGY_RELEASES


@triton.jit
def _dot16(A, B, C):
    r = tl.arange(0, 16)
    a = tl.load(A + r[:, None] * 16 + r[None, :])
    b = tl.load(B + r[:, None] * 16 + r[None, :])
    tl.store(C + r[:, None] * 16 + r[None, :], tl.dot(a, b))


def _run() -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.randn(16, 16).bfloat16()
    b = torch.randn(16, 16).bfloat16()
    c = torch.empty(16, 16)
    _dot16[(1,)](a, b, c)
    return c, a.float() @ b.float()


def test_bf16_dot_needs_the_patch_and_the_patch_works():
    unpatch_bf16_dot()
    try:
        raw, ref = _run()
        broken = not torch.allclose(raw, ref, atol=1e-2)
        # If this fails on a listed release, the bug went away there: re-check _BUGGY_RELEASES.
        assert broken or not _KNOWN_BUGGY, "interpreter bf16 dot is correct now"
        assert bf16_dot_is_broken() == broken, "the patch's guard misjudges this interpreter"
    finally:
        installed = patch_bf16_dot()
    assert installed == broken  # guarded: only where the bug exists
    good, ref = _run()
    torch.testing.assert_close(good, ref, atol=1e-4, rtol=1e-4)
    assert patch_bf16_dot() == broken  # idempotent


@triton.jit
def _cast_kernel(X, Y, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.load(X + offs).to(tl.bfloat16))


def _cast() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(1024)
    y = torch.full((1024,), float("nan"), dtype=torch.bfloat16)
    _cast_kernel[(1,)](x, y, BLOCK=1024)
    return y, x.bfloat16()


def test_bf16_cast_needs_the_patch_and_the_patch_rounds_to_nearest_even():
    unpatch_bf16_cast()
    try:
        raw, ref = _cast()
        broken = not torch.equal(raw, ref)
        # If this fails on a listed release, the bug went away there: re-check _BUGGY_RELEASES.
        assert broken or not _KNOWN_BUGGY, "interpreter fp32->bf16 cast rounds correctly now"
        assert ((raw.float() - ref.float()).abs() <= ref.float().abs() * 2**-7).all()  # off by <= 1 ulp
        assert bf16_cast_truncates() == broken, "the patch's guard misjudges this interpreter"
    finally:
        installed = patch_bf16_cast()
    assert installed == broken  # guarded: only where the bug exists
    good, ref = _cast()
    assert torch.equal(good, ref)
    nan_in = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0] + [1.0] * 123)
    y = torch.empty(128, dtype=torch.bfloat16)
    _cast_kernel[(1,)](nan_in, y, BLOCK=128)
    assert torch.isnan(y[0]) and torch.equal(y[1:], nan_in[1:].bfloat16())


@triton.jit
def _count_kernel(Y, n):
    acc = 0
    for _ in range(0, n):  # range() over a runtime scalar calls the interpreter's tensor.__index__
        acc += 1
    tl.store(Y, acc)


def test_range_over_a_scalar_argument(monkeypatch):
    from triton.runtime import interpreter as interp

    current = interp._patch_lang_tensor
    original = getattr(current, "_tritongpt_original", current)
    monkeypatch.setattr(interp, "_patch_lang_tensor", original)
    broken = tensor_index_is_broken()
    y = torch.zeros(1, dtype=torch.int32)
    try:
        _count_kernel[(1,)](y, 5)
        assert not broken and y.item() == 5, "the guard says broken but the interpreter is fine"
    except Exception as e:  # noqa: BLE001 - the bug surfaces as an InterpreterError
        assert broken, f"the guard missed this interpreter's bug: {e!r}"
    assert patch_tensor_index() == broken  # guarded: only where the bug exists
    y.zero_()
    _count_kernel[(1,)](y, 5)
    assert y.item() == 5
    assert patch_tensor_index() == broken  # idempotent


def test_patches_leave_a_correct_interpreter_alone(monkeypatch):
    """A Triton whose interpreter has neither bug (simulated here) gets neither patch."""
    from triton.runtime import interpreter as interp

    def bits_to_fp32(h):
        return (h.data.astype("uint32") << 16).view("float32") if h.dtype == tl.bfloat16 else h.data

    def correct_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        out = (bits_to_fp32(a).astype("float32") @ bits_to_fp32(b).astype("float32")).astype(d.data.dtype)
        return interp.TensorHandle(out + d.data, d.dtype.scalar)

    def correct_cast(self, src, dst_type):
        return interp.TensorHandle(torch.from_numpy(src.data).bfloat16().view(torch.uint16).numpy(), dst_type.scalar)

    monkeypatch.setattr(interp.InterpreterBuilder, "create_dot", correct_dot)
    monkeypatch.setattr(interp.InterpreterBuilder, "cast_impl", correct_cast)
    assert not bf16_dot_is_broken() and not bf16_cast_truncates()
    assert not patch_bf16_dot() and not patch_bf16_cast()
    assert interp.InterpreterBuilder.create_dot is correct_dot
    assert interp.InterpreterBuilder.cast_impl is correct_cast

    def correct_patch_lang_tensor(tensor, *args):
        tensor.__index__ = lambda self: int(self.handle.data.squeeze())

    monkeypatch.setattr(interp, "_patch_lang_tensor", correct_patch_lang_tensor)
    assert not tensor_index_is_broken() and not patch_tensor_index()
    assert interp._patch_lang_tensor is correct_patch_lang_tensor
