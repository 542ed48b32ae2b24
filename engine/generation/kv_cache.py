"""Static KV cache: one preallocated (B_max, H, T_max, D) key and value buffer per layer.

Written in place at per-row positions (``lengths - 1`` during decode, [0, T) during prefill), never
reallocated or concatenated, so a decode step has fixed shapes and can be captured in a CUDA graph.
All layers live in one allocation (2, L, B_max, H, T_max, D); ``k[i]``/``v[i]`` are views into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.config import GPTConfig


@dataclass
class KVCache:
    k: list[torch.Tensor]  # per layer (B, H, T_max, D)
    v: list[torch.Tensor]
    storage: torch.Tensor  # (2, L, B_max, H, T_max, D): the one allocation behind k and v

    @classmethod
    def allocate(
        cls, config: GPTConfig, batch: int, capacity: int, *, dtype: torch.dtype, device: torch.device | str
    ) -> KVCache:
        if batch < 1:
            raise ValueError(f"batch: expected >= 1, got {batch}")
        if not 1 <= capacity <= config.block_size:
            raise ValueError(f"capacity: expected 1..{config.block_size} (the context window), got {capacity}")
        shape = (2, config.n_layer, batch, config.n_head, capacity, config.head_dim)
        storage = torch.zeros(shape, dtype=dtype, device=device)
        return cls(list(storage[0].unbind(0)), list(storage[1].unbind(0)), storage)

    @property
    def batch(self) -> int:
        return self.storage.shape[2]

    @property
    def capacity(self) -> int:
        return self.storage.shape[4]

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()

    def rows(self, n: int) -> KVCache:
        """A view of the first ``n`` rows (shares memory)."""
        if not 1 <= n <= self.batch:
            raise ValueError(f"n: expected 1..{self.batch}, got {n}")
        s = self.storage[:, :, :n]
        return KVCache(list(s[0].unbind(0)), list(s[1].unbind(0)), s)

    def bytes_per_position(self) -> int:
        """Key + value bytes one position of one row occupies across all layers."""
        _, L, _, H, _, D = self.storage.shape
        return 2 * L * H * D * self.storage.element_size()
