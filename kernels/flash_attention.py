"""Fused scaled-dot-product attention: FlashAttention-2 forward (this file) and backward
(``flash_attention_bwd.py``) in Triton.

Algorithm (Dao, "FlashAttention-2", 2023): each program owns BLOCK_M query rows of one (batch,
head) and streams BLOCK_N keys at a time through an online softmax kept in fp32 (running max
``m``, running sum ``l``, un-normalised output ``acc``); the Tq x Tk score matrix is never
materialised. The softmax scale is folded into ``exp2`` (scores are multiplied by
``sm_scale * log2(e)``). The forward also saves the row log-sum-exp (natural log, fp32,
(B, H, Tq)) so the backward can recompute probabilities without a second softmax pass.

Scope:
- q: (B, H, Tq, D), k/v: (B, H, Tk, D), any strides with a unit last stride (views of a packed
  qkv projection work without copies); fp16, bf16, fp32; 1 <= D <= 128 (padded to the next
  power of two, BLOCK_D, and masked); any Tq, Tk >= 1. Output: fresh contiguous (B, H, Tq, D).
- ``causal`` aligns the mask to the end: query i sees keys j <= Tk - Tq + i, so a prefill of
  Tq new tokens over a KV cache of Tk - Tq old ones works; it requires Tq <= Tk. Non-causal
  accepts any Tq, Tk.
- The key loop has two stages: blocks that every row of the query block sees (no mask work at
  all), then the diagonal / ragged-tail blocks with the mask, which sets scores of keys past Tk
  to -inf (so a row's tail never adds exp(0 - m) terms, however small its LSE). Rows past Tq are
  computed on zero queries and never stored. ``EVEN_M``/``EVEN_D`` heuristics drop the bounds
  masks on loads and stores for aligned shapes.
- Grid: one axis of B*H*ceil(Tq/BLOCK_M) programs, (batch, head) major, so B*H is not held to
  CUDA's 65535 limit on the other grid axes.

Block sizes: on a GPU each kernel autotunes over a short config list pruned to the architecture of
the tensors' device (sm_80 or sm_90a table; other parts use the sm_80 one), the head dim, the dtype,
causality and raggedness, keyed on (power-of-two buckets of Tq and Tk, D, causal, dtypes) so a new T
rarely re-tunes. Every shipped form (causal and non-causal, even and ragged) compiles spill-free for
sm_80 and sm_90a, within 245 registers on Triton 3.9 (``variants()``, checked by
tests/test_attention.py). Under the interpreter one fixed config runs (autotuning there is far too
slow). Launches run under ``device_guard(q)``, so tensors on a non-current GPU work.

Limits and differences from the reference:
- fp32 inputs: every ``tl.dot`` pins ``input_precision="ieee"`` so fp32 is exact on GPUs too
  (no tf32; no tensor cores, so fp32 is a correctness path, not a fast path). fp16/bf16 use
  tensor cores with fp32 accumulation.
- D > 128 raises ValueError (no config for it is checked spill-free). No dropout, no GQA, no
  attention bias. Offsets inside one (batch, head) slice are int32: (T-1)*stride_t + (D-1)*stride_d
  of q, k, v (and dO) and T*D of the outputs must stay below 2**31 elements, checked before
  launch (ValueError naming the argument); batch/head offsets are int64.
- sm_scale must be positive and finite, with sm_scale * log2(e) finite in fp32 (checked by the
  launcher too: under torch.compile a traced scale is only known at run time).
- The returned LSE is not differentiable (its gradient is ignored).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import flash_attention_bwd_tma as bwd_tma
from . import flash_attention_tma as fwd_tma
from . import launch, tma
from .attention_config import TunedConfig, tune_bucket
from .device_functions import head_program, load_kv, load_tile, store_tile
from .flash_attention_bwd import ConfigTables, attention_bwd_launch, bwd_variants, variant_choices
from .interpreter import interpreter_enabled
from .kernel_variant import KernelVariant, align_bucket, signature
from .launch import LOG2E
from .online_softmax import finish_rows, key_range, mask_scores, softmax_step
from .validate import (
    INT32_MAX,
    check_offsets,
    check_same,
    check_scale,
    check_sm_scale,
    check_tensor,
    device_guard,
    slice_extent,
)

MAX_HEAD_DIM = 128


@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q,  # (BLOCK_M, BLOCK_D) fp32, (BLOCK_M,), (BLOCK_M,), (BLOCK_M, BLOCK_D)
    K, V,  # base pointers of this (batch, head)
    stride_kn, stride_kd, stride_vn, stride_vd,
    offs_m, offs_n, offs_d,
    lo, hi, TK, D, OFF, qk_scale,
    BLOCK_N: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k, v = load_kv(K, V, cols, offs_d, stride_kn, stride_kd, stride_vn, stride_vd, TK, D, MASKED, EVEN_D)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        if MASKED:
            s = mask_scores(s, offs_m, cols, TK, OFF, CAUSAL)
        # Only the causal mask can leave a row with nothing visible so far (the tail block always holds
        # a key < TK): guard its -inf max there.
        p, m_i, l_i, acc = softmax_step(s, m_i, l_i, acc, MASKED and CAUSAL)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision="ieee")
    return acc, l_i, m_i


@triton.heuristics(
    {
        "EVEN_M": lambda a: bool(a["ALIGN"]) and a["TQ"] % a["BLOCK_M"] == 0,
        "EVEN_D": lambda a: bool(a["ALIGN"]) and a["D"] == a["BLOCK_D"],
    }
)
@triton.jit(do_not_specialize=["ALIGN"])
def _attn_fwd_kernel(
    Q,  # (B, H, TQ, D)
    K,  # (B, H, TK, D)
    V,  # (B, H, TK, D)
    O,  # (B, H, TQ, D)
    LSE,  # (B, H, TQ) fp32, contiguous
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    H, TQ, TK, D,
    qk_scale,  # sm_scale * log2(e)
    TQ_BUCKET, TK_BUCKET, ALIGN,  # autotune keys only (tune_bucket of TQ, TK; align_bucket: unaligned -> masked form)
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    EVEN_M: tl.constexpr, EVEN_D: tl.constexpr,
):
    # (batch * head, query block), query block minor
    pid_m, pid_bh, b, h = head_program((TQ + BLOCK_M - 1) // BLOCK_M, H, True)
    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    O += b * stride_ob + h * stride_oh
    LSE += pid_bh * TQ

    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    MASK_QD = not (EVEN_M and EVEN_D)
    q = load_tile(Q + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd, offs_m, offs_d, TQ, D, MASK_QD,
                  MASK_QD)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    OFF = TK - TQ  # end-aligned causal mask: row i sees cols <= i + OFF
    hi_full, hi = key_range(m0, TQ, TK, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
                               offs_m, offs_n, offs_d, 0, hi_full, TK, D, OFF, qk_scale,
                               BLOCK_N, False, CAUSAL, EVEN_D)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, stride_kn, stride_kd, stride_vn, stride_vd,
                               offs_m, offs_n, offs_d, hi_full, hi, TK, D, OFF, qk_scale,
                               BLOCK_N, True, CAUSAL, EVEN_D)

    acc, lse = finish_rows(acc, l_i, m_i)
    store_tile(O + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od, acc.to(O.dtype.element_ty), offs_m,
               offs_d, TQ, D, MASK_QD)
    if EVEN_M:
        tl.store(LSE + offs_m, lse)
    else:
        tl.store(LSE + offs_m, lse, mask=offs_m < TQ)


# Forward configs (BLOCK_M, BLOCK_N, warps, stages) with the largest BLOCK_D each is shipped for, per
# target (80: sm_80/sm_89, 90: sm_90a, 100: sm_100a) and form. Every shipped form compiles without
# spills and fits shared memory, in the specialisation real launches get (tests/test_attention.py, the
# inspect gate). Registers (Triton 3.9, fp16, causal/non-causal, even/ragged) in the comments.
# Aligned inputs: wgmma/tcgen05-sized 128-row tiles on sm_90a/sm_100a (the Triton tutorial's Hopper
# config is 128x128 w8 s3), 128x64 w8 s3 on sm_80. Left out: 128-row tiles with 4 warps at D=128 (255 +
# 170-780 B of spills everywhere) and at D=64 on sm_100a (34 B); 128x128 at D=128 on sm_80 (60-1270 B),
# ragged 128x128 at D=64 and ragged 128x64 at D=128 on sm_80 (24-48 B); 128x64 w8 s2 at D=64 on sm_100a
# (non-causal even: 12 B). fp32 (IEEE dots on FMA units) only gets the small tiles at the end.
_BIG = {80: 64, 90: 64, 100: 64}  # min_d of the 128-row tiles: they serve D >= 64 (every GPT-2 size);
# smaller head dims get the 64-row tiles (fewer variants to compile; such heads are rare).
_D128 = {80: 128, 90: 128, 100: 128}
_NO_B200 = {80: 128, 90: 128}  # small tiles: sm_100a takes sm_90a's (STAND_IN)
_HOPPER_UP = {90: 128, 100: 128}
_FWD_ALIGNED: list[TunedConfig] = [
    # D=128: sm_90a 230-239 regs, 229 KB smem even (fits 227 KB); sm_100a 213-243. D=64: sm_80 191-204.
    TunedConfig(128, 128, 8, 3, max_d={80: 64, **_HOPPER_UP}, ragged_max_d=_HOPPER_UP, min_d=_BIG),
    # D=128: sm_80 207-211 even, sm_90a 172-179, sm_100a 137-183. D=64: sm_80 155-183.
    TunedConfig(128, 64, 8, 3, max_d=_D128, ragged_max_d={80: 64, **_HOPPER_UP}, min_d=_BIG),
    TunedConfig(128, 64, 8, 4, max_d=_D128, ragged_max_d={80: 64, **_HOPPER_UP}, min_d=_BIG),
    TunedConfig(128, 128, 8, 4, max_d={80: 64, 90: 64, 100: 64}, ragged_max_d={90: 64, 100: 64}, min_d=_BIG),
    TunedConfig(128, 64, 4, 3, max_d={80: 64, 90: 64}, min_d=_BIG),  # sm_80 248-255, sm_90a 210-253
    TunedConfig(128, 32, 4, 2, max_d={80: 64, 90: 64}, min_d=_BIG),  # sm_80 183-216
    # sm_90a 110-190. (sm_80 D=128 ragged: 46 B; sm_100a non-causal even D=64: 128 regs + 10 B.)
    TunedConfig(64, 64, 4, 3, max_d={90: 128}),
    # The ragged D=128 tile on sm_80 (causal even D=128 spills 16 B there; 128x64 takes that form).
    TunedConfig(64, 32, 8, 2, max_d={80: 128}, skip=frozenset({(80, 128, True, False, False)})),
    TunedConfig(64, 32, 4, 2, max_d={80: 64, 90: 128}),
    TunedConfig(32, 32, 4, 2, fp32_max_d={80: 64, 90: 64}, min_d={80: 64}),  # nc D=32: 96 regs + 16 B
    TunedConfig(16, 16, 4, 2, fp32_max_d=_NO_B200),
]
# Unaligned inputs (scalar loads, always the masked form): the small tiles that stay spill-free there.
_FWD_UNALIGNED: list[TunedConfig] = [
    TunedConfig(64, 64, 4, 3, max_d={90: 128}),
    TunedConfig(64, 32, 8, 2, max_d=_NO_B200),
    TunedConfig(64, 32, 4, 2, max_d={80: 64, 90: 128}),
    TunedConfig(32, 32, 4, 2, fp32_max_d={80: 64, 90: 64}, min_d={80: 64}),
    TunedConfig(16, 16, 4, 2, fp32_max_d=_NO_B200),
]
FWD_TABLES = ConfigTables(_FWD_ALIGNED, _FWD_UNALIGNED)
_FWD_INTERPRET = TunedConfig(64, 32, 4, 1)  # under the interpreter: one config, BM != BN on purpose

# On a GPU, autotune over the short list above, pruned to this device's architecture, head dim, dtype
# and raggedness; the key buckets T to powers of two so a new sequence length rarely re-tunes.
_attn_fwd_tuned = FWD_TABLES.tuned(_attn_fwd_kernel)


def attention_fwd_launch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, sm_scale: float,
    config: TunedConfig | None = None, path: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel on validated inputs; returns (out, lse). ``config`` forces blocks;
    ``path`` forces the memory path ("pointer" or "tma", see flash_attention_tma.fwd_path; None chooses)."""
    path = tma.check_path("path", path)
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    check_offsets(q=q, k=k, v=v)
    sm_scale = check_scale(sm_scale)
    out = launch.alloc((B, H, Tq, D), q.dtype, q.device)
    lse = launch.alloc((B, H, Tq), torch.float32, q.device)
    if out.numel() == 0:
        return out, lse
    block_d = launch.block_d(D)
    if fwd_tma.fwd_path(q, k, v, out, causal, block_d, path, config) == tma.TMA:
        fwd_tma.attention_fwd_tma_launch(q, k, v, out, lse, causal, sm_scale * LOG2E, block_d, config)
        return out, lse
    args = (q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            H, Tq, Tk, D, sm_scale * LOG2E, tune_bucket(Tq), tune_bucket(Tk), align_bucket(q, k, v))
    meta = {"CAUSAL": causal, "BLOCK_D": block_d}
    if config is None and interpreter_enabled():
        config = _FWD_INTERPRET
    with device_guard(q):  # Triton launches on the current GPU: make it the tensors' one
        if config is None:
            _attn_fwd_tuned[lambda m: (B * H * triton.cdiv(Tq, m["BLOCK_M"]),)](*args, **meta)
        else:
            grid = (B * H * triton.cdiv(Tq, config.block_m),)
            _attn_fwd_kernel[grid](*args, **meta, **config.kwargs())
    return out, lse


@torch.library.custom_op("tritongpt::attention_fwd", mutates_args=())
def _attention_fwd_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, sm_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return attention_fwd_launch(q, k, v, causal, sm_scale)


@_attention_fwd_op.register_fake
def _(q, k, v, causal, sm_scale):
    B, H, Tq, D = q.shape
    return q.new_empty((B, H, Tq, D)), q.new_empty((B, H, Tq), dtype=torch.float32)


@torch.library.custom_op("tritongpt::attention_bwd", mutates_args=())
def _attention_bwd_op(
    do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
    lse: torch.Tensor, causal: bool, sm_scale: float, compute_dq: bool, compute_dkdv: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv); a gradient not asked for (``compute_*`` False) is an empty (0,) tensor."""
    return attention_bwd_launch(do, q, k, v, o, lse, causal, sm_scale,
                                compute_dq=compute_dq, compute_dkdv=compute_dkdv)


@_attention_bwd_op.register_fake
def _(do, q, k, v, o, lse, causal, sm_scale, compute_dq, compute_dkdv):
    # Distinct tensors even when empty: a custom op's outputs may not alias each other.
    return (q.new_empty(q.shape if compute_dq else (0,)), k.new_empty(k.shape if compute_dkdv else (0,)),
            v.new_empty(v.shape if compute_dkdv else (0,)))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, causal, sm_scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.causal = causal
    ctx.sm_scale = sm_scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, d_out, d_lse):
    q, k, v, out, lse = ctx.saved_tensors
    need_q, need_k, need_v = ctx.needs_input_grad[:3]
    if not (need_q or need_k or need_v):
        return None, None, None, None, None
    if d_out is None:
        d_out = torch.zeros_like(out)
    elif slice_extent(d_out) > INT32_MAX:  # e.g. a broadcast dO with a huge stride: the kernels need int32
        d_out = d_out.contiguous()
    dq, dk, dv = _attention_bwd_op(d_out, q, k, v, out, lse, ctx.causal, ctx.sm_scale,
                                   need_q, need_k or need_v)
    return dq if need_q else None, dk if need_k else None, dv if need_v else None, None, None


_attention_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool"):  # numpy.bool_
        return bool(value)
    raise TypeError(f"{name}: expected a bool (True or False), got {type(value).__name__}")


def _validate(q: object, k: object, v: object, causal: object, sm_scale: object) -> tuple[bool, float]:
    """Check the public arguments (before anything runs); returns (causal, sm_scale) normalised."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    for name, t in (("k", k), ("v", v)):  # first, so a device mix-up is reported as such
        if t.device != q.device:
            raise ValueError(f"{name}: device {t.device} does not match q device {q.device}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, ndim=4)
    check_same("k", k, "q", q)
    check_same("v", v, "q", q)
    B, H, Tq, D = q.shape
    if k.shape[:2] != (B, H) or v.shape[:2] != (B, H):
        raise ValueError(f"k, v: expected (B, H) = {(B, H)} like q, got k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"v: expected the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    if k.shape[3] != D:
        raise ValueError(f"k: expected head dim D={D} like q, got {k.shape[3]}")
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"q: head dim D must be in [1, {MAX_HEAD_DIM}], got {D}")
    if k.shape[2] < 1:
        raise ValueError(f"k: expected at least one key (Tk >= 1), got shape {tuple(k.shape)}")
    causal = _as_bool("causal", causal)
    if causal and Tq > k.shape[2]:
        raise ValueError(f"causal attention needs Tq <= Tk (end-aligned mask), got Tq={Tq}, Tk={k.shape[2]}")
    check_offsets(q=q, k=k, v=v)
    return causal, check_sm_scale(sm_scale, D)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, sm_scale: float | None = None
) -> torch.Tensor:
    """softmax(q @ k^T * sm_scale + mask) @ v for q (B, H, Tq, D), k/v (B, H, Tk, D).

    ``causal`` masks with the end-aligned convention (query i sees keys j <= Tk - Tq + i);
    ``sm_scale`` (a positive real, numpy scalars accepted) defaults to 1/sqrt(D). Returns a
    contiguous (B, H, Tq, D) tensor in q's dtype; differentiable in q, k, v.
    """
    causal, scale = _validate(q, k, v, causal, sm_scale)
    out, _ = _attention_fwd_op(q, k, v, causal, scale)
    return out


def fwd_variants() -> list[KernelVariant]:
    """Every shipped forward config x representative head dim / dtype / evenness / causality (see
    variant_choices)."""
    out = []
    for form in variant_choices(FWD_TABLES):
        cfg, d, dtype = form.cfg, form.d, form.dtype
        sig = signature(("Q K V O", "*" + dtype), ("stride_qb stride_qh stride_qm stride_kb stride_kh stride_kn "
                        "stride_vb stride_vh stride_vn stride_ob stride_oh stride_om H TQ TK D", "i32"),
                        ("LSE", "*fp32"), ("qk_scale", "fp32"), ("TQ_BUCKET TK_BUCKET ALIGN", "i32"))
        consts = dict(stride_qd=1, stride_kd=1, stride_vd=1, stride_od=1, CAUSAL=form.causal,
                      BLOCK_D=d, EVEN_M=form.even, EVEN_D=form.even, **cfg.kwargs())
        out.append(KernelVariant(
            name=f"attention_fwd[D={d},BM={cfg.block_m},BN={cfg.block_n},w={cfg.num_warps},"
                 f"s={cfg.num_stages},{form.suffix}]",
            fn=_attn_fwd_kernel, signature=sig, constexprs=consts, num_warps=cfg.num_warps,
            num_stages=cfg.num_stages, archs=form.archs, expect_mma=dtype != "fp32",
            tags=form.tags("fwd", sig, "O LSE"),
        ))
    return out


def variants() -> list[KernelVariant]:
    """Forward and backward variants (pointer and TMA) for ahead-of-time compile checks."""
    return fwd_variants() + fwd_tma.tma_fwd_variants() + bwd_variants() + bwd_tma.tma_bwd_variants()
