"""Weight-only int8 quantization of a GPT for inference (``tritongpt generate --quantize int8``).

``quantize_int8(model)`` replaces every Linear of the transformer blocks (``c_attn``, attention ``c_proj``,
``c_fc``, MLP ``c_proj``) and the LM head with a ``QuantizedLinear``: an int8 weight with symmetric
per-output-channel scales (``scale = absmax / 127`` in fp32, ``w8 = round(w / scale)`` in [-127, 127]) and the
float bias. Embeddings (wte, wpe) stay float: a lookup reads a few rows, while a decode step reads every
linear weight once per token, so those are the bytes worth halving. GPT-2 ties the head to wte: the head
gets its own int8 copy and wte keeps its float weight.

The seams in ``engine/model/ops.py`` take the layer's ``ops.Int8Weight`` wherever they take a weight: the triton
backend runs ``kernels.int8_linear`` (the weight read as int8), the torch backend dequantizes per call.
A quantized model is inference-only: a forward in training mode raises. ``perplexity`` measures what the
quantization costs on held-out text.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..model import ops

_BLOCK_LINEARS = (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj"))


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 quantization of ``weight`` (N, K): returns (w8 (N, K) int8, scale (N,) fp32)
    with ``weight ~= w8 * scale[:, None]``; an all-zero row (GPT-2's padded vocabulary rows) gets scale 1."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"weight: expected a 2-D floating-point tensor, got {_describe(weight)}")
    w = weight.detach().float()
    absmax = w.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax / 127.0, torch.ones_like(absmax))
    w8 = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return w8, scale


def _describe(t: object) -> str:
    return f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


class QuantizedLinear(nn.Module):
    """An ``nn.Linear`` with its weight stored as int8 plus fp32 per-output-channel scales (buffers: nothing
    here trains). ``forward`` and the model's functional calls (``ops.weight_of``) read ``int8``."""

    def __init__(self, weight_int8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)
        self.backend = "torch"

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> QuantizedLinear:
        w8, scale = quantize_per_channel(linear.weight)  # a copy: a tied wte keeps its float weight
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        return cls(w8, scale, bias)

    @property
    def int8(self) -> ops.Int8Weight:
        return ops.Int8Weight(self.weight_int8, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise ValueError("model: an int8-quantized model is inference-only (call model.eval()); train the "
                             "float model and quantize it afterwards")
        return ops.linear(x, self.int8, self.bias, backend=self.backend)

    def _apply(self, fn, recurse=True):
        # Scales stay fp32 whatever dtype the model is cast to (model.to(torch.bfloat16) casts float buffers);
        # only their device follows. The int8 weight is never cast (not floating point); the bias follows x.
        scale = self.scale
        super()._apply(fn, recurse)
        self.scale = scale.to(self.weight_int8.device)
        return self

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


def quantize_int8(model):
    """Quantize ``model``'s block linears and LM head to int8 in place (see the module docstring); returns it,
    in eval mode. Layers already quantized are left as they are."""
    from ..model.gpt import GPT
    from .decoding import forget_runners

    if not isinstance(model, GPT):
        raise TypeError(f"model: expected a tritongpt GPT, got {type(model).__name__}")
    with torch.no_grad():
        for block in model.transformer.h:
            for part, name in _BLOCK_LINEARS:
                owner = getattr(block, part)
                setattr(owner, name, _quantized(getattr(owner, name), model.backend))
        model.lm_head = _quantized(model.lm_head, model.backend)
    forget_runners(model)  # a CUDA graph captured before this replays the float layers
    return model.eval()


def _quantized(m: nn.Module, backend: str) -> nn.Module:
    if isinstance(m, QuantizedLinear):
        return m
    q = QuantizedLinear.from_linear(m)
    q.backend = backend
    return q


@torch.no_grad()
def perplexity(model, tokens: torch.Tensor, block_size: int, batch: int) -> float:
    """exp(mean next-token cross-entropy) of ``model`` over ``tokens`` (1-D ids), cut into consecutive
    non-overlapping windows of ``block_size`` inputs (each predicting the next ``block_size`` ids), evaluated
    ``batch`` windows at a time; a tail shorter than a window is left out. Runs in eval mode."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 1 or tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"tokens: expected a 1-D integer tensor, got {_describe(tokens)}")
    for name, v in (("block_size", block_size), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
    if block_size > model.config.block_size:
        raise ValueError(f"block_size: {block_size} exceeds the model's context window {model.config.block_size}")
    n = (tokens.numel() - 1) // block_size
    if n < 1:
        raise ValueError(f"tokens: {tokens.numel()} ids, need at least block_size + 1 = {block_size + 1}")
    dev = model.transformer.wte.weight.device
    ids = tokens[: n * block_size + 1].to(dev, torch.long)
    x_all = ids[:-1].view(n, block_size)
    y_all = ids[1:].view(n, block_size)
    was = model.training
    model.eval()
    try:
        total = 0.0
        for i in range(0, n, batch):
            x, y = x_all[i:i + batch], y_all[i:i + batch]
            total += model(x, y, return_logits=False)[1].item() * x.shape[0]
    finally:
        model.train(was)
    return math.exp(total / n)
