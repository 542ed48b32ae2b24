"""Generation past the context window: crop each row's context and re-prefill its KV cache.

GPT-2's positions are absolute, learned embeddings, so a full cache cannot slide: the keys and values
of the tokens that stay in view were computed at positions that no longer hold. When a row's next token
would sit at position ``block_size``, its context is cropped and prefilled again at positions from 0.

Exact (``window_shift=None``, the same as 1): the context is the last ``block_size`` tokens on every
step once past the window, as in the reference loop ``logits = model(seq[-block_size:])[:, -1]``; greedy
output equals that loop token for token, and every step past the window costs a prefill of
``block_size - 1`` tokens. ``window_shift=N`` moves the window by N tokens at once: the cropped context
keeps the last ``block_size - N`` tokens before the pending one, so N tokens are produced per re-prefill.
That is an approximation: between re-prefills a token sees fewer than ``block_size - 1`` earlier tokens,
so the output differs from the exact loop.

Each re-prefill writes the cropped context at positions [0, keep) of that row's cache (the runner's own
cache, so a captured CUDA graph replays on it unchanged) and sets the row's length so the pending token
is fed at position ``keep`` by the ordinary decode step. The host keeps a copy of every row's tokens to
build the contexts, and wakes up only when some row may reach the window, so a request that fits in the
window runs exactly as before. Rows that finished (EOS) are never re-prefilled.
"""

from __future__ import annotations

import math

import torch

from .kv_cache import KVCache
from .sampling import is_int


def check_window_shift(window_shift: object, block_size: int) -> int | None:
    if window_shift is None:
        return None
    if not is_int(window_shift) or not 1 <= window_shift <= block_size:
        raise ValueError(f"window_shift: expected an integer in [1, {block_size}] (tokens the window moves at "
                         f"once past the context window) or None (exact), got {window_shift!r}")
    return int(window_shift)


def crop(prompt: list[int], block_size: int) -> list[int]:
    """A prompt longer than the context window keeps its last ``block_size`` tokens."""
    return prompt[-block_size:]


def refill(runner, rows: list[int], contexts: list[list[int]]) -> None:
    """Re-prefill ``rows`` of ``runner``'s cache with ``contexts`` (one length) at positions [0, keep); each
    row's pending token (``runner.tokens``, unchanged) is then fed at position ``keep`` by the next step."""
    dev = runner.tokens.device
    index = torch.tensor(rows, dtype=torch.long, device=dev)
    keep = len(contexts[0])
    if keep:
        model = runner.model
        idx = torch.tensor(contexts, dtype=torch.long, device=dev)
        # Prefill writes rows [0, n) of a cache; these rows are anywhere in the batch, so it fills a
        # scratch cache that is copied into them (the logits it returns are not needed).
        scratch = KVCache.allocate(model.config, len(rows), keep, dtype=runner.cache.storage.dtype, device=dev)
        model.forward_prefill(idx, scratch, torch.full((len(rows),), keep - 1, dtype=torch.long, device=dev))
        runner.cache.storage[:, :, index, :, :keep] = scratch.storage
    runner.lengths[index] = keep + 1


class WindowTracker:
    """Host bookkeeping for a request whose rows can outgrow the cache: ``due_at`` is the first step at
    which a live row (one not known to be finished) may need its context cropped; ``sync`` records the
    tokens handed over and, when due, re-prefills the rows that reached the window."""

    def __init__(self, prompts: list[list[int]], runner, window_shift: int | None) -> None:
        self.runner = runner
        # The cache holds the whole window whenever a row can outgrow it (capacity == block_size).
        self.window = runner.cache.capacity
        self.keep = self.window - (window_shift or 1)
        self.seqs = [crop(p, self.window) for p in prompts]  # each row's tokens: what contexts are cut from
        self.live = [True] * len(prompts)
        self.due_at = self._due(1, [len(s) + 1 for s in self.seqs])

    def _due(self, step: int, lengths: list[int]) -> float:
        # Before step s a live row's length is lengths[r] + (s - step); it must stay <= window.
        due = (step + self.window - n + 1 for n, live in zip(lengths, self.live, strict=True) if live)
        return min(due, default=math.inf)

    def sync(self, step: int, events: list[tuple[int, int]], done: list[bool]) -> None:
        """Called at each host sync before ``step`` runs, with the tokens handed over and the finished rows."""
        for r, t in events:
            self.seqs[r].append(t)
        if step < self.due_at:
            return
        lengths = self.runner.lengths[: len(self.seqs)].tolist()
        over, parked = [], []
        for r, n in enumerate(lengths):
            if self.live[r] and done[r]:
                self.live[r] = False  # a finished row never advances again
                if n > self.window:  # it stopped right at the window: keep its (unused) writes in bounds
                    parked.append(r)
            elif self.live[r] and n > self.window:
                over.append(r)
        if parked:
            self.runner.lengths[torch.tensor(parked, device=self.runner.lengths.device)] = 1
        if over:
            refill(self.runner, over, [self.seqs[r][len(self.seqs[r]) - 1 - self.keep: -1] for r in over])
            for r in over:
                lengths[r] = self.keep + 1
                del self.seqs[r][: -self.window]  # older tokens are never in a context again
        self.due_at = self._due(step, lengths)
