"""Next-token selection: repetition penalty, temperature, top-k, top-p, min-p, then a draw.

Everything here is fixed-shape tensor work on (B, V) logits with no host synchronisation, so it can
sit inside a captured CUDA graph. The draw is an exponential race: ``argmax(p / E)`` with
``E ~ Exp(1)`` i.i.d. picks token i with probability ``p_i`` exactly (the Gumbel-max trick in another
form). The noise ``E`` is drawn by the caller from its own ``torch.Generator`` into a static buffer, so a
seed gives the same tokens with or without a graph and never touches the global RNG.

Order (as in Hugging Face's generate): vocabulary limit, repetition penalty, temperature, top-k, top-p,
min-p. ``temperature == 0`` is exact greedy argmax (after the limit and the repetition penalty).
``vocab_limit`` keeps the draw to ids below it: a tokenizer smaller than the model's (padded) vocabulary
cannot decode the ids above its own size, so those logits are -inf on every path.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch


def is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    vocab_limit: int | None = None

    def validate(self) -> SamplingParams:
        """Raise ``ValueError`` naming the first invalid value; returns self."""
        if not _is_real(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature: expected a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if self.top_k is not None and (not is_int(self.top_k) or self.top_k < 1):
            raise ValueError(f"top_k: expected an integer >= 1 or None, got {self.top_k!r}")
        if self.top_p is not None and (not _is_real(self.top_p) or not 0 < self.top_p <= 1):
            raise ValueError(f"top_p: expected a number in (0, 1] or None, got {self.top_p!r}")
        if self.min_p is not None and (not _is_real(self.min_p) or not 0 <= self.min_p <= 1):
            raise ValueError(f"min_p: expected a number in [0, 1] or None, got {self.min_p!r}")
        rp = self.repetition_penalty
        if rp is not None and (not _is_real(rp) or rp <= 0):
            raise ValueError(f"repetition_penalty: expected a finite number > 0 or None, got {rp!r}")
        if self.vocab_limit is not None and (not is_int(self.vocab_limit) or self.vocab_limit < 1):
            raise ValueError(f"vocab_limit: expected an integer >= 1 (the tokenizer's size) or None, "
                             f"got {self.vocab_limit!r}")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def uses_presence(self) -> bool:
        return self.repetition_penalty is not None and self.repetition_penalty != 1.0


def apply_repetition_penalty(logits: torch.Tensor, presence: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty on tokens already in the row (prompt or output): positive logits divided by
    ``penalty``, negative ones multiplied, so ``penalty > 1`` always discourages repeats."""
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(presence, scaled, logits)


def apply_vocab_limit(logits: torch.Tensor, limit: int) -> torch.Tensor:
    """Logits of ids >= ``limit`` become -inf (one fixed-shape op: safe inside a CUDA graph)."""
    if limit >= logits.shape[-1]:
        return logits
    return torch.nn.functional.pad(logits[..., :limit], (0, logits.shape[-1] - limit), value=float("-inf"))


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (ties with the k-th are kept too)."""
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches ``p``
    (the most likely token always stays)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each token
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below ``min_p`` times the row's top probability."""
    if min_p <= 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    threshold = probs.amax(dim=-1, keepdim=True) * min_p
    return logits.masked_fill(probs < threshold, float("-inf"))


def process_logits(logits: torch.Tensor, params: SamplingParams, presence: torch.Tensor | None = None) -> torch.Tensor:
    """The filtered, temperature-scaled fp32 logits the draw samples from (greedy: penalty only)."""
    logits = logits.float()
    if params.vocab_limit is not None:
        logits = apply_vocab_limit(logits, int(params.vocab_limit))
    if params.uses_presence:
        if presence is None:
            raise ValueError("presence: a repetition penalty needs the (B, V) mask of tokens seen so far")
        logits = apply_repetition_penalty(logits, presence, float(params.repetition_penalty))
    if params.greedy:
        return logits
    if params.temperature != 1.0:
        logits = logits / float(params.temperature)
    if params.top_k is not None:
        logits = apply_top_k(logits, int(params.top_k))
    if params.top_p is not None:
        logits = apply_top_p(logits, float(params.top_p))
    if params.min_p is not None:
        logits = apply_min_p(logits, float(params.min_p))
    return logits


def sample(
    logits: torch.Tensor,
    params: SamplingParams,
    presence: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next token per row (B,) int64. ``noise`` (B, V) holds Exp(1) draws; required unless greedy."""
    logits = process_logits(logits, params, presence)
    if params.greedy:
        return torch.argmax(logits, dim=-1)
    if noise is None:
        raise ValueError("noise: sampling needs a (B, V) buffer of Exp(1) draws (see draw_noise)")
    probs = torch.softmax(logits, dim=-1)
    # A zero draw would turn p/E into inf (or nan for filtered tokens); clamp it to the smallest normal.
    return torch.argmax(probs / noise.clamp_min(torch.finfo(torch.float32).tiny), dim=-1)


def draw_noise(noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Refill ``noise`` in place with Exp(1) draws from ``generator``."""
    return noise.exponential_(1.0, generator=generator)
