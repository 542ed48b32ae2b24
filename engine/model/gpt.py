"""GPT-2, exactly: learned token + position embeddings, pre-LN blocks, tied LM head (by default:
``GPTConfig.tie_embeddings`` and ``qkv_bias`` give the untied / bias-free-attention variants).

Every compute op goes through ``engine/model/ops.py`` so the ``triton`` backend can swap in the
hand-written kernels. The residual stream is carried lazily: each block hands the next one its
branch output ``x`` and the stream ``h`` before the add, so the add is fused into the following
LayerNorm (``(LN(x + h), x + h)`` in one pass) and dropout on the branch stays possible.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ops, weights
from .config import GPTConfig


def check_token_ids(ids: torch.Tensor, vocab_size: int, name: str, low: int | None = 0) -> None:
    """Refuse ids outside [low, vocab_size) before an embedding lookup turns them into an IndexError
    (CPU) or a device-side assert that kills the process (CUDA); ``low=None`` checks the upper bound
    only (targets, where every negative id means "ignored"). On CUDA the check is asynchronous, so it
    costs no host sync; it is skipped while compiling or capturing a CUDA graph."""
    if ids.numel() == 0 or torch.compiler.is_compiling():
        return
    span = f"[{0 if low is None else low}, {vocab_size})"
    if ids.is_cuda:
        if not torch.cuda.is_current_stream_capturing():
            ok = ids < vocab_size if low is None else (ids >= low) & (ids < vocab_size)
            torch._assert_async(ok.all(), f"{name}: token id outside the vocabulary {span}")
        return
    lo, hi = (int(v) for v in torch.aminmax(ids))
    if (low is not None and lo < low) or hi >= vocab_size:
        bad = hi if hi >= vocab_size else lo
        note = "; negative ids are ignored" if low is None else ""
        raise ValueError(f"{name}: token id {bad} is outside the model's vocabulary {span} "
                         f"(vocab_size = {vocab_size}){note}")


def _ignore_negative(targets: torch.Tensor) -> torch.Tensor:
    """Every negative target (PyTorch's -100, the loaders' -1) becomes the ops' one ignore index."""
    return targets.masked_fill(targets < 0, ops.IGNORE_INDEX)


class LayerNorm(nn.Module):
    """LayerNorm whose forward optionally fuses the residual add: returns ``(y, h)``."""

    def __init__(self, n: int, eps: float, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None
        self.backend = "torch"

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return ops.layer_norm(x, self.weight, self.bias, self.eps, residual, backend=self.backend)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.head_dim
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.has_qkv_bias)  # fused q, k, v
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.backend = "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.c_attn(x)  # (B, T, 3C)
        # Views into the packed projection; the kernels take these strides without a copy.
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in qkv.split(C, dim=2))
        p = self.dropout if self.training else 0.0
        y = ops.attention(q, k, v, dropout_p=p, backend=self.backend)  # (B, nh, T, hd)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def forward_prefill(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        """Causal attention over the (right-padded) prompts; their keys/values fill cache[:B, :, :T]."""
        B, T, C = x.shape
        qkv = self.c_attn(x)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in qkv.split(C, dim=2))
        k_cache[:B, :, :T].copy_(k)
        v_cache[:B, :, :T].copy_(v)
        y = ops.attention(q, k, v, backend=self.backend)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))

    def forward_decode(
        self, x: torch.Tensor, lengths: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
        kv_bound: int | None = None, meta=None,
    ) -> torch.Tensor:
        """One token per row: its key/value is appended at ``lengths - 1`` and it attends to [0, lengths)."""
        B, C = x.shape
        qkv = ops.decode_linear(x, ops.weight_of(self.c_attn), self.c_attn.bias, backend=self.backend)
        q, k, v = qkv.reshape(B, 3, self.n_head, self.head_dim).unbind(1)  # (B, nh, hd)
        y = ops.decode_attention(q, k_cache, v_cache, lengths, k, v, backend=self.backend, kv_bound=kv_bound,
                                 meta=meta)
        return ops.decode_linear(y.reshape(B, C), ops.weight_of(self.c_proj), self.c_proj.bias,
                                 backend=self.backend)

    def forward_extend(self, x: torch.Tensor, start: int, k_cache: torch.Tensor, v_cache: torch.Tensor
                       ) -> torch.Tensor:
        """Tokens at positions [start, start + T) of every row: their keys/values fill cache[:B, :, start:start + T]
        and token i attends to cache positions [0, start + i] (draft tokens after a KV cache)."""
        B, T, C = x.shape
        qkv = self.c_attn(x)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in qkv.split(C, dim=2))
        end = start + T
        k_cache[:B, :, start:end].copy_(k)
        v_cache[:B, :, start:end].copy_(v)
        y = ops.attention_tail(q, k_cache[:B, :, :end], v_cache[:B, :, :end], backend=self.backend)  # (B, nh, T, hd)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.backend = "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = ops.gelu_linear(x, ops.weight_of(self.c_fc), self.c_fc.bias, backend=self.backend)  # (B, T, 4C)
        return self.dropout(ops.linear(a, ops.weight_of(self.c_proj), self.c_proj.bias, backend=self.backend))

    def forward_decode(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend != "torch":
            return self.forward(x)  # fused Triton GEMM epilogues
        a = F.gelu(ops.decode_linear(x, ops.weight_of(self.c_fc), self.c_fc.bias), approximate="tanh")
        return ops.decode_linear(a, ops.weight_of(self.c_proj), self.c_proj.bias)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, cfg.layer_norm_eps, cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg.n_embd, cfg.layer_norm_eps, cfg.bias)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Stream before this block is x + residual; returns (branch output, stream before it).
        a, h = self.ln_1(x, residual)
        a, h = self.ln_2(self.attn(a), h)
        return self.mlp(a), h

    def forward_prefill(self, x, residual, k_cache, v_cache):
        a, h = self.ln_1(x, residual)
        a, h = self.ln_2(self.attn.forward_prefill(a, k_cache, v_cache), h)
        return self.mlp(a), h

    def forward_decode(self, x, residual, lengths, k_cache, v_cache, kv_bound=None, meta=None):
        a, h = self.ln_1(x, residual)
        a, h = self.ln_2(self.attn.forward_decode(a, lengths, k_cache, v_cache, kv_bound, meta), h)
        return self.mlp.forward_decode(a), h

    def forward_extend(self, x, residual, start, k_cache, v_cache):
        a, h = self.ln_1(x, residual)
        a, h = self.ln_2(self.attn.forward_extend(a, start, k_cache, v_cache), h)
        return self.mlp(a), h


class GPT(nn.Module):
    """GPT-2 language model. ``model(idx)`` -> logits (B, T, vocab);
    ``model(idx, targets)`` -> ``(logits, loss)``, the mean cross-entropy over the positions whose
    target is >= 0: every negative target (PyTorch's -100, the data loaders' -1) is ignored, and a batch
    whose targets are all ignored has loss 0 with zero gradients. ``return_logits=False`` returns
    ``(None, loss)``: training and evaluation take it, and on the triton backend the head and the loss
    run as one fused op that never materialises the logits (``kernels.linear_cross_entropy``)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        V = config.padded_vocab_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(V, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, config.layer_norm_eps, config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, V, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) (two adds per block).
        std = 0.02 / math.sqrt(2 * config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=std)
        with torch.no_grad():
            for w in self._vocab_matrices():
                w[config.vocab_size:].zero_()  # padding rows
        self.backend = config.backend

    def _vocab_matrices(self) -> list[nn.Parameter]:
        """The distinct matrices with a row per (padded) vocabulary entry: wte, and the head when untied."""
        wte, head = self.transformer.wte.weight, self.lm_head.weight
        return [wte] if head is wte else [wte, head]

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    # ---- backend -------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        """``"torch"``, ``"triton"`` or ``"auto"`` (triton when the weights are on CUDA)."""
        if name not in ("auto", *ops.BACKENDS):
            raise ValueError(f"backend: expected 'auto', 'torch' or 'triton', got {name!r}")
        self._requested_backend = name
        resolved = ops.resolve_backend(name, self.transformer.wte.weight.device)
        self._backend = resolved
        for m in self.modules():
            if m is not self and hasattr(m, "backend"):
                m.backend = resolved

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        if self.transformer.wte.weight.device.type != "cpu":
            # Off the CPU every matrix is row-major, whatever layout it had there: the kernels and the
            # checkpoint writers expect the (out, in) nn.Linear layout.
            with torch.no_grad():
                for p in self.parameters():
                    if p.dim() == 2 and not p.is_contiguous():
                        p.data = p.data.contiguous()
        if getattr(self, "_requested_backend", None) == "auto":
            self.backend = "auto"  # re-resolved for the device the weights are on now
        return out

    # ---- forward -------------------------------------------------------------------------
    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, return_logits: bool = True
    ) -> torch.Tensor | tuple[torch.Tensor | None, torch.Tensor]:
        if targets is not None:
            check_token_ids(targets, self.config.vocab_size, "targets", low=None)
            if targets.shape != idx.shape:
                raise ValueError(f"targets: expected shape {tuple(idx.shape)}, got {tuple(targets.shape)}")
        h = self.hidden_states(idx)
        V = self.config.vocab_size
        if targets is not None and not return_logits:
            # The head and the loss in one op: on the triton backend the (B*T, V) logits never exist.
            # Padded vocabulary rows stay out of the log-sum-exp and get no gradient.
            flat = _ignore_negative(targets.reshape(-1))
            return None, ops.lm_loss(h.reshape(-1, h.size(-1)), ops.weight_of(self.lm_head)[:V], flat,
                                     backend=self.backend)
        logits = self.lm_head(h)
        if self.config.padded_vocab_size != V:
            logits = logits[..., :V]  # padded rows never count
        if targets is None:
            return logits
        return logits, ops.mean_cross_entropy(logits.reshape(-1, V), _ignore_negative(targets.reshape(-1)))

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm's output (B, T, n_embd): what the LM head (or a task head) reads."""
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx: expected an integer tensor of shape (B, T), got {idx.dtype} {tuple(idx.shape)}")
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"idx: sequence length {T} exceeds the context window {self.config.block_size}")
        check_token_ids(idx, self.config.vocab_size, "idx")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        residual = None
        for block in self.transformer.h:
            x, residual = block(x, residual)
        return self.transformer.ln_f(x, residual)[0]

    # ---- KV-cache inference (see engine/generation/decoding.py) ----------------------------------
    def _logits(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x, _ = self.transformer.ln_f(x, residual)
        return self.lm_head(x)[..., : self.config.vocab_size]

    def forward_prefill(self, idx: torch.Tensor, cache, last: torch.Tensor) -> torch.Tensor:
        """Prompts ``idx`` (B, T), right-padded; fills ``cache`` positions [0, T) and returns the logits
        (B, vocab) at each row's last real position ``last`` (B,). Padding sits after every real token,
        so causal attention keeps it out of the real rows."""
        B, T = idx.shape
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(T, device=idx.device))
        residual = None
        for block, k_cache, v_cache in zip(self.transformer.h, cache.k, cache.v, strict=True):
            x, residual = block.forward_prefill(x, residual, k_cache, v_cache)
        rows = torch.arange(B, device=idx.device)
        return self._logits(x[rows, last], residual[rows, last])  # LM head on B rows, not B*T

    def forward_decode(
        self, tokens: torch.Tensor, lengths: torch.Tensor, cache, kv_bound: int | None = None
    ) -> torch.Tensor:
        """One fixed-shape decode step: ``tokens`` (B,) sit at positions ``lengths - 1`` (B,); their
        keys/values are appended to ``cache`` in place. Returns logits (B, vocab). ``kv_bound`` (eager
        torch backend only) caps the cache positions the reference attention reads."""
        x = self.transformer.wte(tokens) + self.transformer.wpe(lengths - 1)  # (B, C)
        meta = None
        if self.backend == "torch":  # index tensors shared by every layer's reference attention
            meta = ops.decode_meta(lengths, kv_bound or cache.k[0].shape[2])
        residual = None
        for block, k_cache, v_cache in zip(self.transformer.h, cache.k, cache.v, strict=True):
            x, residual = block.forward_decode(x, residual, lengths, k_cache, v_cache, kv_bound, meta)
        x, _ = self.transformer.ln_f(x, residual)
        logits = ops.decode_linear(x, ops.weight_of(self.lm_head), None, backend=self.backend)
        return logits[..., : self.config.vocab_size]

    def forward_extend(self, idx: torch.Tensor, start: int, cache, *, last: int | None = None) -> torch.Tensor:
        """Tokens ``idx`` (B, Tn) at positions [start, start + Tn) after ``start`` cached ones: their
        keys/values are written into ``cache`` there and token i attends causally to cache positions
        [0, start + i]. Returns logits (B, Tn, vocab), or of the last ``last`` positions only (the LM head
        then skips the rest: a prompt fed with draft tokens needs no logits of its own). Speculative
        decoding verifies draft tokens in one call; a rejected tail needs no undo, since the next call
        overwrites its positions."""
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx: expected an integer tensor of shape (B, Tn), got {idx.dtype} {tuple(idx.shape)}")
        B, T = idx.shape
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start: expected an integer >= 0, got {start!r}")
        if T == 0 or start + T > cache.capacity or B > cache.batch:
            raise ValueError(f"idx: {B} rows of {T} tokens at positions [{start}, {start + T}); expected Tn >= 1, "
                             f"start + Tn <= {cache.capacity} (the cache's capacity) and B <= {cache.batch}")
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= T):
            raise ValueError(f"last: expected an integer in [1, {T}] (the tokens given) or None, got {last!r}")
        check_token_ids(idx, self.config.vocab_size, "idx")
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))
        residual = None
        for block, k_cache, v_cache in zip(self.transformer.h, cache.k, cache.v, strict=True):
            x, residual = block.forward_extend(x, residual, start, k_cache, v_cache)
        if last is not None:
            x, residual = x[:, T - last:], residual[:, T - last:]
        return self._logits(x, residual)  # (B, last or Tn, vocab)

    # ---- bookkeeping ---------------------------------------------------------------------
    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Parameters counted once (a tied head shares wte), padded vocabulary rows excluded from every
        matrix that has them. ``exclude_embeddings`` drops the tables that are only looked up: wpe, and
        wte when the head has its own weight (a tied wte is also the head's matmul, so it stays)."""
        cfg = self.config
        vocab = self._vocab_matrices()
        n = sum(p.numel() for p in self.parameters())
        n -= (cfg.padded_vocab_size - cfg.vocab_size) * cfg.n_embd * len(vocab)
        if exclude_embeddings:
            n -= self.transformer.wpe.weight.numel()
            n -= cfg.vocab_size * cfg.n_embd * (len(vocab) - 1)  # an untied wte
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward): 6N + 6*L*T*C (attention scores)."""
        cfg = self.config
        T = seq_len or cfg.block_size
        return 6 * self.num_parameters(exclude_embeddings=True) + 6 * cfg.n_layer * T * cfg.n_embd

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides) -> GPT:
        """Build a freshly initialised model from ``configs/<name>.toml`` (or a .toml path)."""
        return cls(GPTConfig.from_preset(name, **overrides))

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides) -> GPT:
        """Load a Hugging Face GPT-2 folder (config.json + model.safetensors or
        pytorch_model.bin) or a tritongpt checkpoint folder."""
        cfg, sd, src = weights.read_pretrained(path, **overrides)
        model = cls(cfg)
        weights.load_state(model, sd, src)
        return model

    def save(self, path: str | Path) -> Path:
        """Write ``path/model.safetensors`` + ``path/config.json`` atomically."""
        return weights.save_checkpoint(self, path)
