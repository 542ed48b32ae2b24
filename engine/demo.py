"""``make demo``: what exists end to end, on whatever machine this is.

Environment report -> a model from a preset and its parameter count -> real text (Shakespeare,
GPT-2 BPE) -> a forward pass and the loss, timed.
"""

from __future__ import annotations

import math
import time

import torch

from . import assets
from .config import GPTConfig
from .envinfo import environment, format_environment
from .model import GPT
from .tokenizer import GPT2Tokenizer


def count_preset(name: str) -> int:
    """Parameter count of a preset without allocating its weights (meta device)."""
    with torch.device("meta"):
        return GPT(GPTConfig.from_preset(name)).num_parameters()


def run_demo(preset: str = "cpu-demo", batch: int = 4, seed: int = 1337) -> dict:
    print("== environment")
    print(format_environment(environment()))

    print("\n== model presets (parameters, tied LM head counted once)")
    for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"):
        print(f"  {name:<12} {count_preset(name):>14,}")

    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = GPT.from_preset(preset).to(device)
    cfg = model.config
    print(f"\n== model '{preset}': {model.num_parameters():,} parameters, {cfg.n_layer} layers, "
          f"{cfg.n_head} heads, width {cfg.n_embd}, context {cfg.block_size}, backend {model.backend}, {device}")

    print("\n== data: Shakespeare (verified), GPT-2 BPE")
    text = assets.fetch_shakespeare().read_text(encoding="utf-8")
    tok = GPT2Tokenizer()
    sample = text[:200_000]
    ids = tok.encode(sample)
    print(f"  {len(text):,} characters in the corpus; first {len(sample):,} -> {len(ids):,} tokens")
    print(f"  'Hello world' -> {tok.encode('Hello world')}")

    T = cfg.block_size
    g = torch.Generator().manual_seed(seed)
    data = torch.tensor(ids, dtype=torch.long)
    starts = torch.randint(0, len(data) - T - 1, (batch,), generator=g)
    x = torch.stack([data[s: s + T] for s in starts]).to(device)
    y = torch.stack([data[s + 1: s + T + 1] for s in starts]).to(device)

    model.eval()
    with torch.no_grad():
        model(x[:1, :8])  # warm-up
        t0 = time.perf_counter()
        logits, loss = model(x, y)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    print(f"\n== forward pass: batch {batch} x {T} tokens -> logits {tuple(logits.shape)} in {dt * 1e3:.1f} ms "
          f"({batch * T / dt:,.0f} tokens/s, {device.upper()})")
    print(f"  loss {loss.item():.4f} (an untrained model should be near ln({cfg.vocab_size}) = "
          f"{math.log(cfg.vocab_size):.4f})")

    # The same weights through the hand-written kernels (natively on a GPU; on the Triton CPU
    # interpreter otherwise, which is slow, so a shorter slice there).
    other = "torch" if model.backend == "triton" else "triton"
    n = T if device == "cuda" else min(T, 64)
    print(f"\n== backend '{other}' vs '{model.backend}', same weights, 1 x {n} tokens"
          + ("" if device == "cuda" else " (Triton interpreter on CPU: correctness, not speed)"))
    with torch.no_grad():
        ref_logits, ref_loss = model(x[:1, :n], y[:1, :n])
        model.backend = other
        t0 = time.perf_counter()
        alt_logits, alt_loss = model(x[:1, :n], y[:1, :n])
        dt = time.perf_counter() - t0
        model.backend = "auto"
    diff = (alt_logits.float() - ref_logits.float()).abs().max().item()
    print(f"  loss {alt_loss.item():.6f} vs {ref_loss.item():.6f}; max |logit difference| {diff:.2e}; "
          f"{dt * 1e3:.0f} ms")
    return {"loss": loss.item(), "params": model.num_parameters(), "backend_max_diff": diff}
