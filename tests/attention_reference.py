"""Reference attention shared by the attention test files."""

from __future__ import annotations

import torch


def naive(q, k, v, causal, scale):
    """softmax(q k^T * scale + end-aligned causal mask) v in q's dtype (softmax in >= fp32), and the
    row log-sum-exp in fp64."""
    s = (q @ k.transpose(-1, -2)) * scale
    tq, tk = s.shape[-2:]
    if causal:
        i, j = torch.arange(tq, device=s.device)[:, None], torch.arange(tk, device=s.device)[None, :]
        s = s.masked_fill(j > i + tk - tq, float("-inf"))
    p = torch.softmax(s.to(torch.promote_types(s.dtype, torch.float32)), -1).to(q.dtype)
    return p @ v, torch.logsumexp(s.double(), -1)
