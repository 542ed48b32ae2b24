"""Reference helpers shared by the fused-linear test files."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


@contextlib.contextmanager
def tf32(enabled: bool):
    """Set PyTorch's TF32 matmul switch for the block (fp32 references match the kernels' TF32 on GPUs)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def reference(gelu: bool, x, w, b, r):
    """gelu_tanh(x @ w^T + b) or x @ w^T + b (+ r), in PyTorch."""
    y = F.linear(x, w, b)
    if gelu:
        y = F.gelu(y, approximate="tanh")
    return y + r if r is not None else y


def close_to_reference(name, got, ref, low):
    """``got`` (a kernel's output) is within 2x PyTorch's own error (``low``, PyTorch in the same dtype)
    of the fp64 ``ref``, plus ~1-2 ulp at the output scale: that covers a different summation order
    where few elements make PyTorch's max error small by luck (e.g. a single fp32 output)."""
    assert got.dtype == low.dtype and got.shape == ref.shape, (name, got.dtype, got.shape, ref.shape)
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err = (got.double() - ref).abs().max().item()
    torch_err = (low.double() - ref).abs().max().item()
    atol = 2 * torch.finfo(got.dtype).eps * max(1.0, ref.abs().max().item())
    assert err <= 2 * torch_err + atol, f"{name}: error {err:.3g} > 2 x torch's {torch_err:.3g} + {atol:.2g}"
