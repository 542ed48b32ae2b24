"""The interpreter's bf16 tl.dot bug and the harness workaround (kernels/_interpreter.py)."""

import pytest
import torch

from tritongpt.kernels._interpreter import interpreter_enabled, patch_bf16_dot, unpatch_bf16_dot

pytestmark = pytest.mark.skipif(not interpreter_enabled(), reason="interpreter-only behaviour")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402


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
        bad, ref = _run()
        # If this starts failing, Triton fixed the bug: the patch can go (keep the test below).
        assert not torch.allclose(bad, ref, atol=1e-2), "interpreter bf16 dot is correct now"
    finally:
        assert patch_bf16_dot()
    good, ref = _run()
    torch.testing.assert_close(good, ref, atol=1e-4, rtol=1e-4)
    assert patch_bf16_dot()  # idempotent
