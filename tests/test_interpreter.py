"""The interpreter's bf16 bugs and the harness workarounds (kernels/_interpreter.py)."""

import pytest
import torch

from tritongpt.kernels._interpreter import (
    interpreter_enabled,
    patch_bf16_cast,
    patch_bf16_dot,
    unpatch_bf16_cast,
    unpatch_bf16_dot,
)

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
        bad, ref = _cast()
        # If this starts failing, Triton rounds correctly now: the patch can go (keep the test below).
        assert not torch.equal(bad, ref), "interpreter fp32->bf16 cast rounds correctly now"
        assert ((bad.float() - ref.float()).abs() <= ref.float().abs() * 2**-7).all()  # off by <= 1 ulp
    finally:
        assert patch_bf16_cast()
    good, ref = _cast()
    assert torch.equal(good, ref)
    nan_in = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0] + [1.0] * 123)
    y = torch.empty(128, dtype=torch.bfloat16)
    _cast_kernel[(1,)](nan_in, y, BLOCK=128)
    assert torch.isnan(y[0]) and torch.equal(y[1:], nan_in[1:].bfloat16())


def test_top_level_kernels_import_is_inert(monkeypatch):
    """transformers probes for the PyPI package ``kernels`` by importing it; with the checkout on
    sys.path that finds this repository's kernels/ folder. It must not register the custom ops again."""
    import importlib
    import pathlib
    import sys

    root = str(pathlib.Path(__file__).resolve().parents[1])
    monkeypatch.syspath_prepend(root)
    monkeypatch.delitem(sys.modules, "kernels", raising=False)
    stray = importlib.import_module("kernels")
    assert stray.__all__ == [] and not any(m.startswith("kernels.") for m in sys.modules)
    monkeypatch.delitem(sys.modules, "kernels")
