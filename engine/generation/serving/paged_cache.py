"""Paged KV cache: fixed-size pages from one pool, a page list (block table) per sequence.

A contiguous cache gives every sequence ``block_size`` positions whether it uses them or not, so the
number of concurrent sequences is set by the longest one. Here keys and values live in pages of
``page_size`` positions, all layers in one allocation (2, L, num_pages, H, page_size, D); a sequence
holds just the pages its prompt and its token budget need and returns them the moment it ends, so the
pool serves as many sequences as their real lengths allow. Position p of a sequence lives in page
``table[p // page_size]`` at slot ``p % page_size``; the decode attention kernel reads through the table
(``kernels.paged_decode_attention``).

Pages are reserved up front for prompt + max_tokens, so a running sequence never waits for memory and
nothing is ever preempted; a request that does not fit waits in the queue until pages return.
"""

from __future__ import annotations

import threading

import torch

from ...model.config import GPTConfig


class OutOfPages(RuntimeError):
    """The pool has fewer free pages than asked for (the caller keeps the request queued)."""


class PagedKVPool:
    def __init__(self, config: GPTConfig, num_pages: int, page_size: int = 16, *, dtype: torch.dtype,
                 device: torch.device | str) -> None:
        if num_pages < 1:
            raise ValueError(f"num_pages: expected >= 1, got {num_pages}")
        if page_size < 16 or page_size & (page_size - 1):
            raise ValueError(f"page_size: expected a power of two >= 16, got {page_size}")
        shape = (2, config.n_layer, num_pages, config.n_head, page_size, config.head_dim)
        self.storage = torch.zeros(shape, dtype=dtype, device=device)
        self.k = list(self.storage[0].unbind(0))  # per layer (num_pages, H, page_size, D)
        self.v = list(self.storage[1].unbind(0))
        self.page_size, self.num_pages = page_size, num_pages
        self._free = list(range(num_pages - 1, -1, -1))  # a stack: recently freed pages are reused first
        self._lock = threading.Lock()

    @property
    def free_pages(self) -> int:
        return len(self._free)

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()

    def pages_for(self, positions: int) -> int:
        return -(-positions // self.page_size)

    def allocate(self, n: int) -> list[int]:
        """``n`` free pages, or ``OutOfPages`` with none taken."""
        with self._lock:
            if n > len(self._free):
                raise OutOfPages(f"{n} pages asked for, {len(self._free)} free")
            taken = self._free[-n:] if n else []
            del self._free[len(self._free) - n:]
            return taken[::-1]

    def release(self, pages: list[int]) -> None:
        with self._lock:
            self._free.extend(reversed(pages))

    def tables(self, page_lists: list[list[int]], width: int | None = None) -> torch.Tensor:
        """(B, width) int32 block tables on the pool's device; short rows are padded with page 0, which
        the kernels never read for them (every position past a row's length is masked)."""
        width = width or max(len(p) for p in page_lists)
        rows = [p + [0] * (width - len(p)) for p in page_lists]
        return torch.tensor(rows, dtype=torch.int32).to(self.storage.device, non_blocking=True)

    def write(self, layer: int, pages: list[int], start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k, v (H, n, D) at positions [start, start + n) of the sequence with these pages."""
        n = k.shape[1]
        pos = torch.arange(start, start + n)
        page = torch.tensor(pages, dtype=torch.long)[pos // self.page_size].to(k.device)
        slot = (pos % self.page_size).to(k.device)
        self.k[layer][page, :, slot] = k.transpose(0, 1).to(self.storage.dtype)
        self.v[layer][page, :, slot] = v.transpose(0, 1).to(self.storage.dtype)

    def read(self, layer: int, pages: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (H, length, D) at positions [0, length) of the sequence with these pages."""
        used = torch.tensor(pages[: self.pages_for(length)], dtype=torch.long, device=self.storage.device)
        H, D = self.k[layer].shape[1], self.k[layer].shape[3]

        def gather(pool: torch.Tensor) -> torch.Tensor:
            return pool.index_select(0, used).transpose(0, 1).reshape(H, -1, D)[:, :length]

        return gather(self.k[layer]), gather(self.v[layer])
