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
