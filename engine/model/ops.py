"""The one seam between the model and its kernels.

Every op the GPT uses goes through a function here with a ``backend`` argument:
``"torch"`` is the reference path (PyTorch ops, attention through
``scaled_dot_product_attention``); ``"triton"`` calls the hand-written kernels in
``tritongpt.kernels``. ``resolve_backend("auto")`` picks triton on CUDA, torch elsewhere
(on CPU the Triton kernels only run under ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

BACKENDS = ("torch", "triton")


def resolve_backend(backend: str, device: torch.device | str | None = None) -> str:
    """Map ``"auto"`` to a concrete backend for ``device``; validate the name."""
    if backend == "auto":
        dev = torch.device(device) if device is not None else None
        if dev is not None and dev.type == "cuda":
            return "triton"
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected 'auto', 'torch' or 'triton', got {backend!r}")
    return backend


def _kernels():
    # Imported lazily: the torch path must work where Triton is absent (macOS, Windows).
    try:
        from tritongpt import kernels
    except ImportError as e:  # pragma: no cover - depends on the platform
        raise RuntimeError(
            "backend='triton' needs Triton (Linux x86_64); use backend='torch' on this platform"
        ) from e
    return kernels


def _autocast_dtype(t: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would compute a matmul in, or None outside autocast. The custom ops are
    opaque to autocast, so the seam applies its casting rules itself."""
    kind = t.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


def _cast(dtype: torch.dtype, *ts: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [t if t is None or t.dtype == dtype else t.to(dtype) for t in ts]


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, dropout_p: float = 0.0, backend: str = "torch"
) -> torch.Tensor:
    """Causal attention, q/k/v (B, H, T, D) -> (B, H, T, D). Scale 1/sqrt(D)."""
    if backend == "triton" and dropout_p == 0.0:
        dt = _autocast_dtype(q)
        if dt is not None:
            q, k, v = _cast(dt, q, k, v)
        return _kernels().attention(q, k, v, causal=True)
    # The Triton kernel has no attention-probability dropout; training with dropout > 0
    # takes the reference path for this op only.
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)


def attention_tail(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str = "torch") -> torch.Tensor:
    """Causal attention of the last Tq of Tk positions: q (B, H, Tq, D) against k, v (B, H, Tk, D), Tq <= Tk,
    query i seeing keys j <= Tk - Tq + i (a prompt chunk or draft tokens after a KV cache). Scale 1/sqrt(D)."""
    Tq, Tk = q.shape[2], k.shape[2]
    if Tq > Tk:
        raise ValueError(f"q: {Tq} queries after {Tk} keys; the queries must be the last of the keys (Tq <= Tk)")
    if backend == "triton":
        return _kernels().attention(q, k, v, causal=True)  # the kernel aligns the mask to the end
    if Tq == Tk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    # SDPA's is_causal aligns to the start when Tq != Tk: the end-aligned mask is explicit.
    keep = torch.arange(Tk, device=q.device)[None, :] <= torch.arange(Tk - Tq, Tk, device=q.device)[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    residual: torch.Tensor | None = None,
    *,
    backend: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(LN(h), h)`` with ``h = x + residual`` (or ``x`` when residual is None)."""
    if backend == "triton":
        k = _kernels()
        # Autocast runs layer_norm in fp32 (inputs and parameters), like F.layer_norm under it.
        if _autocast_dtype(x) is not None:
            x, weight, bias, residual = _cast(torch.float32, x, weight, bias, residual)
        elif residual is not None and x.dtype != residual.dtype:
            x = x.to(residual.dtype)
        if residual is None:
            return k.layer_norm(x, weight, bias, eps), x
        return k.layer_norm(x, weight, bias, eps, residual=residual)
    h = x if residual is None else x + residual
    return F.layer_norm(h, (h.shape[-1],), weight, bias, eps), h


@dataclass(frozen=True)
class Int8Weight:
    """A weight-only int8 matrix: ``data`` (N, K) int8 and fp32 per-output-channel ``scale`` (N,), the
    float weight being ``data * scale[:, None]`` (``engine/generation/quantize.py`` makes them). The linear seams
    (``linear``, ``gelu_linear``, ``decode_linear``, ``lm_loss``) take one wherever they take a weight."""

    data: torch.Tensor
    scale: torch.Tensor

    def __getitem__(self, rows: slice) -> Int8Weight:
        """Output channels, as slicing the float weight would (``weight_of(lm_head)[:V]``)."""
        return Int8Weight(self.data[rows], self.scale[rows])

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.data * self.scale[:, None]).to(dtype)  # int8 * fp32 -> fp32: one rounding to dtype


def weight_of(m: torch.nn.Module) -> torch.Tensor | Int8Weight:
    """What the seams take as ``m``'s weight: ``m.weight``, or the ``Int8Weight`` of a quantized layer."""
    w = getattr(m, "int8", None)
    return w if isinstance(w, Int8Weight) else m.weight


def _int8_linear(x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None, *, backend: str) -> torch.Tensor:
    if backend == "triton":  # the weight is read as int8: half the bytes of fp16 per decode step
        dt = _autocast_dtype(x)
        if dt is not None:
            x, bias = _cast(dt, x, bias)
        return _kernels().int8_linear(x, weight.data, weight.scale, bias)
    # Dequantized per call, then a float GEMM: an int-valued GEMM scaled afterwards could overflow fp16.
    return F.linear(x, weight.dequantize(x.dtype), bias)


def gelu_linear(
    x: torch.Tensor, weight: torch.Tensor | Int8Weight, bias: torch.Tensor | None, *, backend: str = "torch"
) -> torch.Tensor:
    """``gelu_tanh(x @ weight.T + bias)``: the MLP's ``c_fc``."""
    if isinstance(weight, Int8Weight):
        return F.gelu(_int8_linear(x, weight, bias, backend=backend), approximate="tanh")
    if backend == "triton":
        dt = _autocast_dtype(x)
        if dt is not None:
            x, weight, bias = _cast(dt, x, weight, bias)
        return _kernels().gelu_linear(x, weight, bias)
    return F.gelu(F.linear(x, weight, bias), approximate="tanh")


def linear(
    x: torch.Tensor,
    weight: torch.Tensor | Int8Weight,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None = None,
    *,
    backend: str = "torch",
) -> torch.Tensor:
    """``x @ weight.T + bias (+ residual)``: the MLP's ``c_proj``."""
    if isinstance(weight, Int8Weight):
        y = _int8_linear(x, weight, bias, backend=backend)
        return y if residual is None else y + residual
    if backend == "triton":
        dt = _autocast_dtype(x)
        if dt is not None:
            x, weight, bias, residual = _cast(dt, x, weight, bias, residual)
        return _kernels().linear(x, weight, bias, residual=residual)
    y = F.linear(x, weight, bias)
    return y if residual is None else y + residual


IGNORE_INDEX = -100


def mean_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean fp32 cross-entropy over the rows whose target is not ``IGNORE_INDEX``; 0 (with zero gradients)
    when every row is ignored, where ``F.cross_entropy``'s mean would be 0/0."""
    total = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (targets != IGNORE_INDEX).sum().clamp_min(1)


def lm_loss(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, backend: str = "torch"
            ) -> torch.Tensor:
    """The LM head and its loss in one: mean cross-entropy of ``x @ weight.T`` (x (N, C), weight (V, C),
    targets (N,) with ``IGNORE_INDEX`` for ignored rows). ``"triton"`` never materialises the (N, V)
    logits (``kernels.linear_cross_entropy``); ``"torch"`` does, and so does an ``Int8Weight`` head."""
    if isinstance(weight, Int8Weight):  # inference only (evaluation): the fused op has no int8 form
        return mean_cross_entropy(_int8_linear(x, weight, None, backend=backend), targets)
    if backend == "triton":
        dt = _autocast_dtype(x)
        if dt is not None:
            x, weight = _cast(dt, x, weight)
        return _kernels().linear_cross_entropy(x, weight, targets, ignore_index=IGNORE_INDEX)
    return mean_cross_entropy(F.linear(x, weight), targets)


SMALL_BATCH = 16  # decode rows up to which the CPU weight-streaming GEMM form below wins


def decode_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, backend: str = "torch"
                  ) -> torch.Tensor:
    """A decode step's ``x @ weight.T + bias`` for x (M, K) with few rows. On CPU with 2..16 rows it
    is computed as ``(weight @ x.T).T``: MKL then streams the (N, K) weight once instead of packing it
    first (measured 1.5x faster at M = 8 on the project's 2-core CPU). Otherwise ``F.linear``.
    An ``Int8Weight`` runs ``kernels.int8_linear`` on triton and is dequantized on torch."""
    if isinstance(weight, Int8Weight):
        if backend == "triton":
            return _int8_linear(x, weight, bias, backend=backend)
        weight = weight.dequantize(x.dtype)
    M = x.shape[0]
    if backend == "torch" and x.device.type == "cpu" and x.dim() == 2 and 1 < M <= SMALL_BATCH \
            and weight.is_contiguous():
        out = torch.mm(weight, x.t()) if bias is None else torch.addmm(bias[:, None], weight, x.t())
        return out.t()
    return F.linear(x, weight, bias)


def decode_meta(lengths: torch.Tensor, kv_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-step index tensors the torch decode path shares across layers: rows, append positions and
    the (B, kv_len) mask of positions each row may not see."""
    rows = torch.arange(lengths.shape[0], device=lengths.device)
    masked = torch.arange(kv_len, device=lengths.device) >= lengths[:, None]
    return rows, lengths - 1, masked


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    lengths: torch.Tensor,
    k_new: torch.Tensor | None = None,
    v_new: torch.Tensor | None = None,
    *,
    backend: str = "torch",
    kv_bound: int | None = None,
    meta: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One query token per row over a KV cache: q (B, H, D), caches (B, H, T, D), lengths (B,).
    ``k_new``/``v_new`` (B, H, D) are first written at position ``lengths - 1``. Row b attends to
    positions [0, lengths[b]). The engine validated ``lengths`` already, so no host sync here.
    ``meta`` (torch backend) is ``decode_meta(lengths, kv_bound or T)``, computed once per step."""
    if backend == "triton":
        return _kernels().decode_attention(q, k_cache, v_cache, lengths, k_new=k_new, v_new=v_new, check_lengths=False)
    D = q.shape[-1]
    kv_len = kv_bound if kv_bound is not None else k_cache.shape[2]  # eager: skip positions nobody reached
    rows, pos, masked = meta if meta is not None else decode_meta(lengths, kv_len)
    if k_new is not None:
        k_cache[rows, :, pos] = k_new  # advanced indices around a slice: (B, H, D) on both sides
        v_cache[rows, :, pos] = v_new
    k_cache, v_cache = k_cache[:, :, :kv_len], v_cache[:, :, :kv_len]
    scores = torch.matmul(q.unsqueeze(2), k_cache.transpose(2, 3)).squeeze(2)  # (B, H, T)
    scores = scores.masked_fill_(masked[:, None, :], float("-inf")).mul_(D**-0.5)
    p = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v_cache.dtype)
    return torch.matmul(p.unsqueeze(2), v_cache).squeeze(2)  # (B, H, D)


def paged_decode_attention(
    q: torch.Tensor,
    k_pool: torch.Tensor,
    v_pool: torch.Tensor,
    block_tables: torch.Tensor,
    lengths: torch.Tensor,
    k_new: torch.Tensor | None = None,
    v_new: torch.Tensor | None = None,
    *,
    backend: str = "torch",
) -> torch.Tensor:
    """One query token per row over a paged KV cache: q (B, H, D), pools (num_pages, H, page_size, D),
    block_tables (B, max_pages), lengths (B,). Row b's position p is slot p % page_size of page
    block_tables[b, p // page_size]. ``k_new``/``v_new`` (B, H, D) are first written at position
    ``lengths - 1``. The engine validated ``lengths`` and the tables already, so the kernel skips its host
    check; the torch path reads the batch's max length once (free on CPU, its target)."""
    if backend == "triton":
        return _kernels().paged_decode_attention(q, k_pool, v_pool, block_tables, lengths, k_new=k_new,
                                                 v_new=v_new, check_lengths=False)
    B, H, D = q.shape
    page_size = k_pool.shape[2]
    tables = block_tables.long()
    if k_new is not None:
        pos = lengths.long() - 1
        pages = tables.gather(1, (pos // page_size)[:, None]).squeeze(1)  # (B,)
        k_pool[pages, :, pos % page_size] = k_new  # advanced indices around a slice: (B, H, D) on both sides
        v_pool[pages, :, pos % page_size] = v_new
    n_pages = -(-int(lengths.max()) // page_size) if B else 0
    used = torch.arange(n_pages, device=q.device) < ((lengths[:, None] + page_size - 1) // page_size)
    ids = torch.where(used, tables[:, :n_pages], 0).reshape(-1)  # entries past a row's pages may hold -1

    def gather(pool: torch.Tensor) -> torch.Tensor:  # (B, H, n_pages * page_size, D)
        return pool.index_select(0, ids).view(B, n_pages, H, page_size, D).transpose(1, 2).reshape(B, H, -1, D)

    k, v = gather(k_pool), gather(v_pool)
    masked = torch.arange(k.shape[2], device=q.device) >= lengths[:, None]  # (B, T)
    scores = torch.matmul(q.unsqueeze(2), k.transpose(2, 3)).squeeze(2)  # (B, H, T)
    scores = scores.masked_fill_(masked[:, None, :], float("-inf")).mul_(D**-0.5)
    p = torch.softmax(scores, dim=-1, dtype=torch.float32).nan_to_num_(0.0).to(v.dtype)  # length 0: zeros
    return torch.matmul(p.unsqueeze(2), v).squeeze(2)  # (B, H, D)
