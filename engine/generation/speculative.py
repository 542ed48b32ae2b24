"""Speculative decoding: a cheap proposer guesses a few tokens, the target model checks them in one forward.

References: Leviathan, Kalman and Matias, "Fast Inference from Transformers via Speculative Decoding"
(2023); Chen et al., "Accelerating Large Language Model Decoding with Speculative Sampling" (2023). The
n-gram proposer follows "prompt lookup decoding" (Saxena, 2023).

Each step the proposer guesses up to k tokens after the context: a small draft GPT (its own KV cache,
the same vocabulary) samples them from its distributions q_1..q_k, or prompt lookup copies the tokens
that followed the last n-gram where it occurred earlier in the context (q is then a point mass). The
target runs the tokens it has not seen yet plus the k guesses through ``GPT.forward_extend`` once, which
gives its distributions p_1..p_{k+1}. Guess x_i is accepted with probability min(1, p_i(x_i) / q_i(x_i));
the first rejection emits a token drawn from norm(max(0, p_i - q_i)) and ends the step; when all k are
accepted a bonus token is drawn from p_{k+1}. So every step emits 1..k+1 tokens for one target forward,
each distributed exactly as the target's own sample. Greedy (temperature 0) accepts a guess when it is
the target's argmax and otherwise emits that argmax: the output is ``generate(..., temperature=0)``'s.

p and q both go through ``sampling.process_logits`` (vocabulary limit, temperature, top-k, top-p), so
the distribution kept is the one ``generate`` samples from. Draws come from one ``torch.Generator``
seeded from ``seed``: a seeded request is reproducible.

Scope and differences from ``generate``: one prompt (batch 1); no repetition penalty or min-p; the
prompt, the new tokens and one step's guesses must fit the context window (no cropping past it); the
steps run eagerly (no CUDA graphs: every step's shapes differ). A rejection needs no KV-cache undo: only
the count of valid positions moves back, and the next step overwrites the stale ones.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .kv_cache import KVCache
from .request import Request, validate_request
from .sampling import SamplingParams, is_int, process_logits


@dataclass
class SpeculativeResult:
    tokens: list[int] = field(default_factory=list)  # the new tokens (ending with the EOS token when it stopped there)
    proposed: int = 0  # guesses the target checked
    accepted: int = 0  # guesses kept (and emitted)
    target_forwards: int = 0  # target model calls, the first one with the prompt

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    def summary(self, num_draft_tokens: int) -> str:
        return (f"speculative: {num_draft_tokens} draft tokens/step, {self.accepted}/{self.proposed} accepted "
                f"({100 * self.acceptance_rate:.1f}%), {self.target_forwards} target forwards for "
                f"{len(self.tokens)} tokens")


class _DraftModel:
    """Guesses from a small GPT with its own KV cache; ``length`` counts the positions that hold the
    context's keys/values (the rest are stale)."""

    def __init__(self, model, capacity: int, params: SamplingParams, generator: torch.Generator) -> None:
        w = model.transformer.wte.weight
        self.model, self.params, self.gen = model, params, generator
        self.cache = KVCache.allocate(model.config, 1, capacity, dtype=w.dtype, device=w.device)
        self.length = 0

    def propose(self, ctx: list[int], k: int) -> tuple[list[int], torch.Tensor | None]:
        """k guesses after ``ctx`` and their distributions q (k, V) (None when greedy)."""
        feed = torch.tensor([ctx[self.length:]], device=self.cache.storage.device)
        toks, probs = [], []
        for _ in range(k):
            logits = self.model.forward_extend(feed, self.length, self.cache, last=1)[:, -1]  # (1, V)
            self.length += feed.shape[1]
            scores = process_logits(logits, self.params)
            if self.params.greedy:
                tok = scores.argmax(-1)
            else:
                q = torch.softmax(scores, dim=-1)
                tok = torch.multinomial(q, 1, generator=self.gen).view(1)
                probs.append(q[0])
            toks.append(tok)
            feed = tok.view(1, 1)  # stays on the device: one host sync per step, below
        return torch.cat(toks).tolist(), (torch.stack(probs) if probs else None)

    def accept(self, n: int, m: int) -> None:
        """``m`` guesses after the ``n`` context tokens were kept: the cache holds ctx + guesses[:k - 1]."""
        self.length = min(self.length, n + m)


class PromptLookup:
    """Guesses copied from the context: the tokens that followed the latest earlier occurrence of its last
    ``n``-gram, else of a shorter one; nothing when even its last token never occurred before."""

    def __init__(self, n: int) -> None:
        self.n = n

    def propose(self, ctx: list[int], k: int) -> tuple[list[int], None]:
        L = len(ctx)
        for g in range(min(self.n, L - 1), 0, -1):
            tail = ctx[L - g:]
            for j in range(L - g - 1, -1, -1):  # the latest match first: recent text repeats most
                if ctx[j:j + g] == tail:
                    return ctx[j + g:j + g + k], None
        return [], None

    def accept(self, n: int, m: int) -> None:
        pass


def _draw(weights: torch.Tensor, gen: torch.Generator) -> int:
    return int(torch.multinomial(weights, 1, generator=gen))


def verify(scores: torch.Tensor, drafts: list[int], q: torch.Tensor | None, greedy: bool,
           gen: torch.Generator | None) -> tuple[int, int]:
    """One verification: ``scores`` (k + 1, V) are the target's processed logits at each guess and after
    the last; ``q`` (k, V) the proposer's distributions, None for deterministic guesses (a point mass).
    Returns (guesses accepted m, the token after them: a correction or the bonus token)."""
    k = len(drafts)
    if greedy:
        best = scores.argmax(-1).tolist()
        m = next((i for i in range(k) if drafts[i] != best[i]), k)
        return m, best[m]
    p = torch.softmax(scores, dim=-1)  # (k + 1, V)
    if k == 0:
        return 0, _draw(p[0], gen)
    rows = torch.arange(k, device=p.device)
    idx = torch.tensor(drafts, device=p.device)
    px = p[rows, idx]
    qx = q[rows, idx] if q is not None else torch.ones_like(px)
    u = torch.rand(k, generator=gen, device=p.device)
    ok = (u * qx < px).tolist()  # u < p/q without dividing by q; always true where p >= q
    m = next((i for i in range(k) if not ok[i]), k)
    if m == k:
        return k, _draw(p[k], gen)
    if q is None:
        residual = p[m].index_fill(0, idx[m:m + 1], 0.0)
    else:
        residual = (p[m] - q[m]).clamp_min(0.0)
    # p == q up to rounding leaves no residual mass; p itself is then the right distribution.
    residual = torch.where(residual.sum() > 0, residual, p[m])
    return m, _draw(residual, gen)


@contextlib.contextmanager
def _step_modes(device_type: str):
    """Inference mode around each step, never held across a yield (it is thread-local), and autocast off:
    the caches hold the weights' dtype."""
    with torch.inference_mode(), torch.autocast(device_type, enabled=False):
        yield


def _steps(model, req: Request, draft_model, prompt_lookup: int | None, num_draft_tokens: int,
           result: SpeculativeResult) -> Iterator[list[int]]:
    prompt, n_new, params = req.prompts[0], req.max_new_tokens, req.params
    w = model.transformer.wte.weight
    capacity = len(prompt) + n_new + num_draft_tokens
    models = [x for x in (model, draft_model) if x is not None]
    was_training = [x.training for x in models]
    for x in models:
        x.eval()
    try:
        with _step_modes(w.device.type):
            gen = torch.Generator(device=w.device)
            gen.manual_seed(req.seed if req.seed is not None else secrets.randbits(63))
            cache = KVCache.allocate(model.config, 1, capacity, dtype=w.dtype, device=w.device)
            proposer = (PromptLookup(prompt_lookup) if draft_model is None
                        else _DraftModel(draft_model, capacity, params, gen))
        ctx, length, eos = list(prompt), 0, set(req.eos)
        while len(result.tokens) < n_new:
            # Near the end fewer guesses: a step emits up to k + 1 tokens.
            k = min(num_draft_tokens, n_new - len(result.tokens) - 1)
            n = len(ctx)
            with _step_modes(w.device.type):
                drafts, q = proposer.propose(ctx, k) if k > 0 else ([], None)
                feed = torch.tensor([ctx[length:] + drafts], device=w.device)
                logits = model.forward_extend(feed, length, cache, last=len(drafts) + 1)[0]  # (k + 1, V)
                m, nxt = verify(process_logits(logits, params), drafts, q, params.greedy, gen)
            result.target_forwards += 1
            length = n + m  # the rejected guesses' positions are stale now
            proposer.accept(n, m)
            new = drafts[:m] + [nxt]
            stop = next((i for i, t in enumerate(new) if t in eos), None)
            if stop is not None:
                new = new[:stop + 1]
            result.proposed += len(drafts)
            result.accepted += min(m, len(new))
            ctx += new
            result.tokens += new
            yield new
            if stop is not None:
                return
    finally:
        for x, was in zip(models, was_training, strict=True):
            x.train(was)


class SpeculativeStream:
    """Iterator over the tokens each step emits (a list of 1..k + 1); ``result`` holds the counts so far."""

    def __init__(self, steps: Iterator[list[int]], result: SpeculativeResult, num_draft_tokens: int) -> None:
        self._steps, self.result, self.num_draft_tokens = steps, result, num_draft_tokens

    def __iter__(self) -> SpeculativeStream:
        return self

    def __next__(self) -> list[int]:
        return next(self._steps)

    def close(self) -> None:
        self._steps.close()


def _check(model, prompt, max_new_tokens, draft_model, prompt_lookup, num_draft_tokens, temperature, top_k, top_p,
           seed, eos_token_id, vocab_limit) -> Request:
    from ..model.gpt import GPT

    req = validate_request(model, prompt, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                           seed=seed, eos_token_id=eos_token_id, vocab_limit=vocab_limit)
    if len(req.prompts) != 1:
        raise ValueError(f"prompt: expected one prompt (a list of token ids), got {len(req.prompts)}; "
                         "speculative decoding runs one sequence")
    if not is_int(num_draft_tokens) or num_draft_tokens < 1:
        raise ValueError(f"num_draft_tokens: expected an integer >= 1, got {num_draft_tokens!r}")
    if prompt_lookup is not None and (not is_int(prompt_lookup) or prompt_lookup < 1):
        raise ValueError(f"prompt_lookup: expected an n-gram length >= 1 or None, got {prompt_lookup!r}")
    if (draft_model is None) == (prompt_lookup is None):
        raise ValueError("draft_model, prompt_lookup: expected exactly one proposer (a draft GPT or an n-gram "
                         f"length), got {'both' if draft_model is not None else 'neither'}")
    windows = [("model", model)]
    if draft_model is not None:
        if not isinstance(draft_model, GPT):
            raise TypeError(f"draft_model: expected a tritongpt.engine.GPT, got {type(draft_model).__name__}")
        if draft_model.config.vocab_size != model.config.vocab_size:
            raise ValueError(f"draft_model: vocab_size {draft_model.config.vocab_size} differs from the target's "
                             f"{model.config.vocab_size}; expected a draft with the same vocabulary")
        dev, ddev = model.transformer.wte.weight.device, draft_model.transformer.wte.weight.device
        if dev != ddev:
            raise ValueError(f"draft_model: on {ddev}, expected the target model's device {dev}")
        windows.append(("draft_model", draft_model))
    need = len(req.prompts[0]) + req.max_new_tokens + num_draft_tokens
    for name, m in windows:
        if need > m.config.block_size:
            raise ValueError(f"max_new_tokens: prompt ({len(req.prompts[0])}) + max_new_tokens ({req.max_new_tokens}) "
                             f"+ num_draft_tokens ({num_draft_tokens}) = {need} exceeds the {name}'s context window "
                             f"({m.config.block_size}); speculative decoding does not crop the context")
    return req


def speculative_stream(
    model, prompt, max_new_tokens: int, *, draft_model=None, prompt_lookup: int | None = None,
    num_draft_tokens: int = 4, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
    seed: int | None = None, eos_token_id=None, vocab_limit: int | None = None,
) -> SpeculativeStream:
    """Like ``speculative_generate`` but yields each step's tokens; arguments are checked on this call."""
    req = _check(model, prompt, max_new_tokens, draft_model, prompt_lookup, num_draft_tokens, temperature, top_k,
                 top_p, seed, eos_token_id, vocab_limit)
    result = SpeculativeResult()
    steps = _steps(model, req, draft_model, prompt_lookup, num_draft_tokens, result)
    return SpeculativeStream(steps, result, num_draft_tokens)


def speculative_generate(
    model, prompt, max_new_tokens: int, *, draft_model=None, prompt_lookup: int | None = None,
    num_draft_tokens: int = 4, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
    seed: int | None = None, eos_token_id=None, vocab_limit: int | None = None,
) -> SpeculativeResult:
    """Up to ``max_new_tokens`` tokens after ``prompt`` (one list of token ids) from ``model``, with
    ``num_draft_tokens`` guesses per step from ``draft_model`` (a smaller GPT, same vocabulary) or from
    ``prompt_lookup``-grams of the context; exactly one of the two. Greedy output equals
    ``generate(model, [prompt], ..., temperature=0)[0]``; sampled output has the target's distribution."""
    s = speculative_stream(model, prompt, max_new_tokens, draft_model=draft_model, prompt_lookup=prompt_lookup,
                           num_draft_tokens=num_draft_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                           seed=seed, eos_token_id=eos_token_id, vocab_limit=vocab_limit)
    for _ in s:
        pass
    return s.result
