"""Low-rank adaptation (LoRA) of a model's Linear weights, as a parametrization.

``W`` stays frozen and each forward sees ``W + (alpha / r) * B @ A`` with ``A`` (r, in) drawn like a
Linear's weight and ``B`` (out, r) zero, so training starts from the pretrained function. The model reads
its weights both through modules and through the kernels' functional calls (``ops.linear(x, m.weight,
...)``); a parametrization serves both, where a wrapper module would be bypassed by the latter.
``merge_lora`` folds the update into ``W`` and leaves a plain model to save or serve.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn.utils import parametrize


class LoRADelta(nn.Module):
    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float,
                 device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.B @ self.A)


def add_lora(model: nn.Module, rank: int, alpha: float | None = None,
             targets: tuple[str, ...] = ("c_attn", "c_proj", "c_fc")) -> list[str]:
    """Freeze every parameter, then give each Linear whose name ends in one of ``targets`` a trainable
    rank-``rank`` update (``alpha`` defaults to ``rank``: scale 1). Returns the adapted modules' names."""
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"--lora-rank: expected an integer >= 1, got {rank!r}")
    alpha = float(rank if alpha is None else alpha)
    for p in model.parameters():
        p.requires_grad_(False)
    names = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            w = m.weight
            parametrize.register_parametrization(
                m, "weight", LoRADelta(w.shape[0], w.shape[1], rank, alpha, w.device, w.dtype))
            names.append(name)
    if not names:
        raise ValueError(f"--lora-rank: the model has no Linear layers named {list(targets)}")
    return names


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its weight and drop the parametrization; returns how many."""
    n = 0
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight") and any(
                isinstance(p, LoRADelta) for p in m.parametrizations["weight"]):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            n += 1
    return n
