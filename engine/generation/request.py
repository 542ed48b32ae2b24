"""One generation request, checked: prompts, lengths, sampling parameters, seed, EOS, window shift.

``validate_request`` raises ``ValueError`` (``TypeError`` for a wrong model) naming the culprit before any
work starts, so a caller (the CLI, a server) can report every mistake before producing output.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .context_window import check_window_shift
from .sampling import SamplingParams, is_int


@dataclass(frozen=True)
class Request:
    prompts: list[list[int]]
    max_new_tokens: int
    params: SamplingParams
    seed: int | None
    eos: tuple[int, ...]
    window_shift: int | None = None  # None: exact crop-and-rerun once past the context window


def _as_token_list(name: str, p: object, vocab: int) -> list[int]:
    if isinstance(p, torch.Tensor):
        if p.dim() != 1 or p.dtype.is_floating_point or p.dtype.is_complex or p.dtype == torch.bool:
            raise ValueError(f"{name}: expected a 1-D integer tensor, got {p.dtype} {tuple(p.shape)}")
        p = p.tolist()
    if isinstance(p, (str, bytes)) or not isinstance(p, Sequence):
        raise ValueError(f"{name}: expected a list of token ids, got {type(p).__name__} (encode text first)")
    if len(p) == 0:
        raise ValueError(f"{name}: empty prompt (a prompt needs at least one token; to generate unconditionally "
                         "start from the end-of-text token, e.g. [[50256]] for GPT-2)")
    for j, t in enumerate(p):
        if not is_int(t):
            raise ValueError(f"{name}[{j}]: expected an integer token id, got {t!r}")
        if not 0 <= t < vocab:
            raise ValueError(f"{name}[{j}]: token id {t} outside the vocabulary [0, {vocab})")
    return [int(t) for t in p]


def _check_vocab_limit(vocab_limit: object, model_vocab: int) -> int:
    """The ids a request may use: ``vocab_limit`` (a smaller tokenizer's size) or the model's vocabulary."""
    if vocab_limit is None:
        return model_vocab
    if not is_int(vocab_limit) or not 1 <= vocab_limit <= model_vocab:
        raise ValueError(f"vocab_limit: expected an integer in [1, {model_vocab}] (the tokenizer's size; the "
                         f"model has {model_vocab} ids), got {vocab_limit!r}")
    return int(vocab_limit)


def validate_request(
    model, prompts, max_new_tokens, *, temperature=1.0, top_k=None, top_p=None, min_p=None,
    repetition_penalty=None, seed=None, eos_token_id=None, vocab_limit=None, window_shift=None,
) -> Request:
    """Check every argument before any work; ``ValueError``/``TypeError`` names the culprit.
    ``vocab_limit``: only ids below it are sampled, and prompts and EOS must be below it too."""
    from ..model.gpt import GPT

    if not isinstance(model, GPT):
        raise TypeError(f"model: expected a tritongpt.engine.GPT, got {type(model).__name__}")
    cfg = model.config
    if isinstance(prompts, torch.Tensor) and prompts.dim() == 2:
        prompts = list(prompts)
    elif isinstance(prompts, torch.Tensor) or (isinstance(prompts, Sequence) and prompts and is_int(prompts[0])):
        prompts = [prompts]  # one prompt given as a flat list / 1-D tensor
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise ValueError(f"prompts: expected a list of token-id lists, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("prompts: expected at least one prompt, got an empty list")
    if not is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected an integer >= 0, got {max_new_tokens!r}")
    vocab = _check_vocab_limit(vocab_limit, cfg.vocab_size)
    rows = [_as_token_list(f"prompts[{i}]", p, vocab) for i, p in enumerate(prompts)]
    shift = check_window_shift(window_shift, cfg.block_size)
    limit = vocab if vocab < cfg.vocab_size else None
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, limit).validate()
    if seed is not None and (not is_int(seed) or not 0 <= seed < 2**63):
        raise ValueError(f"seed: expected an integer in [0, 2**63) or None, got {seed!r}")
    return Request(rows, int(max_new_tokens), params, seed, _eos_ids(eos_token_id, vocab), shift)


def _eos_ids(eos_token_id: object, vocab: int) -> tuple[int, ...]:
    if eos_token_id is None:
        return ()
    ids = [eos_token_id] if isinstance(eos_token_id, numbers.Number) else eos_token_id
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or not ids:
        raise ValueError(f"eos_token_id: expected a token id or a non-empty list of them, got {eos_token_id!r}")
    for t in ids:
        if not is_int(t) or not 0 <= t < vocab:
            raise ValueError(f"eos_token_id: {t!r} is not a token id in [0, {vocab})")
    return tuple(int(t) for t in ids)
