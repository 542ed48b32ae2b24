"""The model's forward over a paged KV cache: prompt chunks (prefill) and one-token steps (decode).

Same layers, weights and op seam as ``GPT.forward_prefill`` / ``forward_decode``; only where keys and
values live differs. A prefill chunk of one sequence writes its keys/values into the sequence's pages
and attends to every cached position before it (``ops.attention_tail``), so a long prompt can be taken
a chunk at a time between decode steps. A decode step advances every running sequence by one token:
the attention kernel appends each new key/value into its page and reads through the block tables.
"""

from __future__ import annotations

import torch

from ...model import ops
from .paged_cache import PagedKVPool


def _head(model, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    x, _ = model.transformer.ln_f(x, residual)
    logits = ops.decode_linear(x, ops.weight_of(model.lm_head), None, backend=model.backend)
    return logits[..., : model.config.vocab_size]


def prefill_chunk(model, tokens: list[int], start: int, pages: list[int], pool: PagedKVPool, *,
                  last: int = 1) -> torch.Tensor:
    """Run ``tokens`` at positions [start, start + len(tokens)) of one sequence; returns the logits
    (last, vocab) after each of its last ``last`` tokens (a prompt chunk needs one; a speculative
    verification, every guess's)."""
    dev = model.transformer.wte.weight.device
    n = len(tokens)
    idx = torch.tensor(tokens, dtype=torch.long, device=dev)[None]
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(start, start + n, device=dev))
    residual = None
    for i, block in enumerate(model.transformer.h):
        a, h = block.ln_1(x, residual)
        attn = block.attn
        C = a.shape[-1]
        q, k, v = (t.view(1, n, attn.n_head, attn.head_dim).transpose(1, 2) for t in attn.c_attn(a).split(C, dim=2))
        pool.write(i, pages, start, k[0], v[0])
        keys, values = pool.read(i, pages, start + n)
        y = ops.attention_tail(q, keys[None], values[None], backend=model.backend)
        a, h = block.ln_2(attn.c_proj(y.transpose(1, 2).reshape(1, n, C)), h)
        x, residual = block.mlp(a), h
    return _head(model, x[0, -last:], residual[0, -last:])


def prefill_prompts(model, prompts: list[list[int]], page_lists: list[list[int]], pool: PagedKVPool) -> torch.Tensor:
    """Whole prompts from position 0, several in one forward (right-padded: causal attention keeps the
    padding out of every real token, as ``GPT.forward_prefill``); their keys/values go to their pages.
    Returns the logits (B, vocab) after each prompt's last token."""
    dev = model.transformer.wte.weight.device
    B, T = len(prompts), max(len(p) for p in prompts)
    idx = torch.tensor([p + [0] * (T - len(p)) for p in prompts], dtype=torch.long, device=dev)
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(T, device=dev))
    residual = None
    for i, block in enumerate(model.transformer.h):
        a, h = block.ln_1(x, residual)
        attn = block.attn
        C = a.shape[-1]
        q, k, v = (t.view(B, T, attn.n_head, attn.head_dim).transpose(1, 2) for t in attn.c_attn(a).split(C, dim=2))
        for b, (p, pages) in enumerate(zip(prompts, page_lists, strict=True)):
            pool.write(i, pages, 0, k[b, :, : len(p)], v[b, :, : len(p)])
        y = ops.attention(q, k, v, backend=model.backend)
        a, h = block.ln_2(attn.c_proj(y.transpose(1, 2).reshape(B, T, C)), h)
        x, residual = block.mlp(a), h
    rows = torch.arange(B, device=dev)
    last = torch.tensor([len(p) - 1 for p in prompts], device=dev)
    return _head(model, x[rows, last], residual[rows, last])


def decode_step(model, tokens: torch.Tensor, lengths: torch.Tensor, tables: torch.Tensor,
                pool: PagedKVPool) -> torch.Tensor:
    """One token per sequence: ``tokens`` (B,) at positions ``lengths - 1`` (``lengths`` counts them), block
    tables (B, pages). Returns logits (B, vocab)."""
    be = model.backend
    x = model.transformer.wte(tokens) + model.transformer.wpe(lengths - 1)
    residual = None
    B = tokens.shape[0]
    for i, block in enumerate(model.transformer.h):
        a, h = block.ln_1(x, residual)
        attn = block.attn
        qkv = ops.decode_linear(a, ops.weight_of(attn.c_attn), attn.c_attn.bias, backend=be)
        q, k, v = qkv.reshape(B, 3, attn.n_head, attn.head_dim).unbind(1)
        y = ops.paged_decode_attention(q, pool.k[i], pool.v[i], tables, lengths, k, v, backend=be)
        y = ops.decode_linear(y.reshape(B, -1), ops.weight_of(attn.c_proj), attn.c_proj.bias, backend=be)
        a, h = block.ln_2(y, h)
        x, residual = block.mlp.forward_decode(a), h
    return _head(model, x, residual)
