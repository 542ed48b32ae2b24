"""Epoch sampling (``train.sampling = "epoch"``): the sliding-window dataset of the "build a GPT from
scratch" books, every window used once per epoch, in a shuffled order.

Windows: ``block_size + 1`` tokens starting at 0, stride, 2 x stride, ... while
``start + block_size + 1 <= n`` (n = the train split's tokens), so an epoch has
``W = (n - block_size - 1) // stride + 1`` windows. ``stride`` defaults to ``block_size``: the windows'
inputs tile the text without overlap (consecutive windows share one token, the last target of one
being the first input of the next); ``stride < block_size`` overlaps them, ``stride > block_size``
skips tokens. Epoch ``e`` visits its windows in the order of the permutation drawn by numpy's
generator seeded with ``(seed, e)``.

Positions are global: micro-step ``m`` of step ``s`` holds sample positions
``[(s * grad_accum + m) * rows, ... + rows)`` with ``rows = batch_size x world_size``, and rank ``r``
takes ``[r * batch_size, (r + 1) * batch_size)`` of them. Position ``p`` is the window
``order(p // W)[p % W]``. A batch is thus a pure function of the step: a resume from a checkpoint's
step draws exactly the batches the uninterrupted run would have, with no state beyond the step; the
ranks' slices are disjoint and together form the global batch; a batch that crosses an epoch boundary
takes the tail of epoch ``e`` and the head of epoch ``e + 1``. Each cached order holds 8 bytes per
window (two epochs are kept, for batches that cross a boundary).
"""

from __future__ import annotations

import numpy as np

from .shards import DataError


def window_count(n_tokens: int, block_size: int, stride: int) -> int:
    """Windows of ``block_size + 1`` tokens starting every ``stride`` tokens in ``n_tokens``."""
    if n_tokens < block_size + 1:
        return 0
    return (n_tokens - block_size - 1) // stride + 1


def steps_for_epochs(epochs: int, windows: int, global_batch: int) -> int:
    """Optimizer steps that see ``epochs`` x ``windows`` samples (the last step may spill into the next epoch)."""
    return -(-epochs * windows // global_batch)  # ceil in integers: exact for any size


class EpochOrder:
    """Items 0..count-1 visited once per epoch in a (seed, epoch)-seeded order, positions derived from the
    step (see the module docstring); stateless apart from a cache. Fine-tuning walks its examples with it."""

    def __init__(self, count: int, seed: int, batch_size: int, world_size: int = 1, grad_accum: int = 1) -> None:
        if min(batch_size, world_size, grad_accum) < 1 or seed < 0 or count < 1:
            raise ValueError("count, batch_size, world_size and grad_accum must be >= 1 and seed >= 0")
        self.windows = count  # items per epoch (windows, for the sliding-window dataset)
        self.seed, self.batch_size = seed, batch_size
        self.world_size, self.grad_accum = world_size, grad_accum
        self._orders: dict[int, np.ndarray] = {}

    @property
    def rows(self) -> int:
        """Samples of one micro-step, all ranks together."""
        return self.batch_size * self.world_size

    @property
    def global_batch(self) -> int:
        """Samples of one optimizer step, all ranks and micro-steps together."""
        return self.rows * self.grad_accum

    def order(self, epoch: int) -> np.ndarray:
        """Item indices of ``epoch`` in visiting order: a permutation seeded by (seed, epoch)."""
        if epoch not in self._orders:
            if len(self._orders) >= 2:  # batches move forward: the oldest epoch is done with
                del self._orders[min(self._orders)]
            self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.windows)
        return self._orders[epoch]

    def positions(self, step: int, micro: int = 0, rank: int = 0) -> np.ndarray:
        """Global sample positions of ``rank``'s share of micro-step ``micro`` of ``step``."""
        if not 0 <= rank < self.world_size or not 0 <= micro < self.grad_accum:
            raise ValueError(f"rank {rank} / micro-step {micro} outside world_size {self.world_size} / "
                             f"grad_accum {self.grad_accum}")
        first = (step * self.grad_accum + micro) * self.rows + rank * self.batch_size
        return np.arange(first, first + self.batch_size, dtype=np.int64)

    def indices(self, step: int, micro: int = 0, rank: int = 0) -> np.ndarray:
        """Item indices of ``rank``'s share of micro-step ``micro`` of ``step``."""
        pos = self.positions(step, micro, rank)
        epochs, index = np.divmod(pos, self.windows)
        items = np.empty_like(pos)
        for e in np.unique(epochs):  # ascending: the tail of one epoch, then the head of the next
            mask = epochs == e
            items[mask] = self.order(int(e))[index[mask]]
        return items

    def epoch_at(self, step: int) -> float:
        """Fractional epoch after ``step`` optimizer steps: samples seen / items per epoch."""
        return step * self.global_batch / self.windows

    def steps_for(self, epochs: int) -> int:
        return steps_for_epochs(epochs, self.windows, self.global_batch)


class EpochSampler(EpochOrder):
    """Window starts of epoch sampling over a token split (see the module docstring)."""

    def __init__(self, n_tokens: int, block_size: int, stride: int, seed: int, batch_size: int,
                 world_size: int = 1, grad_accum: int = 1) -> None:
        if min(block_size, stride, batch_size, world_size, grad_accum) < 1 or seed < 0:
            raise ValueError("block_size, stride, batch_size, world_size and grad_accum must be >= 1 and seed >= 0")
        windows = window_count(n_tokens, block_size, stride)
        if windows == 0:
            raise DataError(f"train.sampling = \"epoch\": the train split has {n_tokens} tokens, fewer than "
                            f"block_size + 1 = {block_size + 1}, so not one window fits")
        super().__init__(windows, seed, batch_size, world_size, grad_accum)
        self.stride = stride

    def starts(self, step: int, micro: int = 0, rank: int = 0) -> np.ndarray:
        """Token offsets of the windows of ``rank``'s share of micro-step ``micro`` of ``step``."""
        return self.indices(step, micro, rank) * self.stride


def epoch_sampler(t, n_tokens: int, block_size: int, world_size: int) -> EpochSampler | None:
    """The sampler of a TrainConfig ``t`` with ``sampling = "epoch"`` (stride unset = block_size); else None."""
    if t.sampling != "epoch":
        return None
    return EpochSampler(n_tokens, block_size, t.stride or block_size, t.seed, t.batch_size, world_size, t.grad_accum)


def describe_length(s: EpochSampler, epochs: int, steps: int) -> str:
    """The line that says how ``train.epochs`` became a step count."""
    return (f"train.epochs = {epochs}: {s.windows} windows per epoch (stride {s.stride}), {s.global_batch} per step "
            f"-> {steps} steps (ceil({epochs} x {s.windows} / {s.global_batch}))")

