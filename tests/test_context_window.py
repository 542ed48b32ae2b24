"""Generation past the context window: exact crop-and-rerun by default, ``window_shift`` re-prefills every N."""

from __future__ import annotations

import pytest
import torch

from tritongpt.engine import GPT, generate, stream
from tritongpt.engine.generation.sampling import apply_repetition_penalty

BLOCK = 16
PROMPT = [5, 17, 3, 60, 2]
PEN = 50.0  # a random model's greedy output collapses to one token; the penalty keeps it varied


def tiny(block_size: int = BLOCK) -> GPT:
    torch.manual_seed(0)
    m = GPT.from_preset("tiny", block_size=block_size).eval()
    with torch.no_grad():  # sharper logits than the 0.02-std init (as in test_generation)
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
        m.transformer.wpe.weight.mul_(5.0)
    return m


def naive(model: GPT, prompt: list[int], n: int, *, shift: int = 1, penalty: float | None = None,
          eos: int | None = None) -> list[int]:
    """Reference: a full forward over the window for every token. Once the sequence outgrows the window it
    restarts ``block_size - shift + 1`` tokens from the end (shift 1: always the last ``block_size``); the
    repetition penalty sees the whole sequence."""
    block = model.config.block_size
    seq, out = list(prompt), []
    start = max(0, len(seq) - block)
    with torch.no_grad():
        for _ in range(n):
            if len(seq) - start > block:
                start = len(seq) - (block - shift + 1)
            logits = model(torch.tensor([seq[start:]]))[0, -1].float()
            if penalty is not None:
                seen = torch.zeros_like(logits, dtype=torch.bool)
                seen[seq] = True
                logits = apply_repetition_penalty(logits, seen, penalty)
            out.append(int(logits.argmax()))
            seq.append(out[-1])
            if out[-1] == eos:
                break
    return out


def prefill_spy(monkeypatch, model: GPT) -> list[int]:
    """Records the prompt length of every ``forward_prefill`` call."""
    calls, real = [], model.forward_prefill

    def spy(idx, cache, last):
        calls.append(idx.shape[1])
        return real(idx, cache, last)

    monkeypatch.setattr(model, "forward_prefill", spy)
    return calls


@pytest.mark.parametrize("penalty", [None, PEN])
def test_greedy_past_the_window_equals_the_naive_loop(penalty):
    m = tiny()
    ref = naive(m, PROMPT, 40, penalty=penalty)
    if penalty is not None:
        assert len(set(ref[BLOCK:])) > 16, "degenerate reference"
    assert generate(m, [PROMPT], 40, temperature=0, repetition_penalty=penalty) == [ref]
    assert generate(m, [PROMPT], 40, temperature=0, repetition_penalty=penalty, window_shift=1) == [ref]


def test_triton_backend_past_the_window():
    m = tiny(block_size=8)
    ref = naive(m, PROMPT[:3], 12, penalty=PEN)
    m.backend = "triton"
    assert generate(m, [PROMPT[:3]], 12, temperature=0, repetition_penalty=PEN) == [ref]


def test_ragged_batch_reaches_the_window_at_different_steps():
    m = tiny()
    prompts = [[1, 2, 3], list(range(20, 34)), [42], list(range(40, 60))]  # the last is longer than the window
    want = [naive(m, p, 30, penalty=PEN) for p in prompts]
    assert generate(m, prompts, 30, temperature=0, repetition_penalty=PEN) == want
    got: list[list[int]] = [[] for _ in prompts]
    for r, t in stream(m, prompts, 30, temperature=0, repetition_penalty=PEN):
        got[r].append(t)
    assert got == want


def test_finished_rows_stay_finished_past_the_window():
    m = tiny()
    prompts = [[1, 2, 3], [7, 8, 9, 10, 11, 12]]
    full = naive(m, prompts[1], 30, penalty=PEN)
    # EOS that row 1 produces right as it reaches the window (token 10: its length is then BLOCK + 1),
    # so the finished row's length points past the cache while row 0 goes on decoding.
    eos = full[BLOCK - len(prompts[1])]
    want = [naive(m, p, 30, penalty=PEN, eos=eos) for p in prompts]
    assert len(want[1]) == BLOCK - len(prompts[1]) + 1 and len(want[0]) > len(want[1])
    assert generate(m, prompts, 30, temperature=0, repetition_penalty=PEN, eos_token_id=eos) == want
    got: list[list[int]] = [[], []]
    for r, t in stream(m, prompts, 30, temperature=0, repetition_penalty=PEN, eos_token_id=eos):
        got[r].append(t)
    assert got == want


@pytest.mark.parametrize("shift", [4, 5, BLOCK])
def test_window_shift_reprefills_every_n_tokens(monkeypatch, shift):
    m = tiny()
    want = naive(m, PROMPT, 40, shift=shift, penalty=PEN)
    calls = prefill_spy(monkeypatch, m)
    out = generate(m, [PROMPT], 40, temperature=0, repetition_penalty=PEN, window_shift=shift)
    assert out == [want] and len(out[0]) == 40 and all(0 <= t < m.config.vocab_size for t in out[0])
    first = BLOCK - len(PROMPT) + 1  # tokens produced before the window is full
    keep = BLOCK - shift
    refills = -(-(40 - first) // shift)
    # A context of 0 tokens needs no prefill: the pending token alone is fed at position 0.
    assert calls == [len(PROMPT)] + ([keep] * refills if keep else [])


def test_exact_mode_reprefills_every_token_past_the_window(monkeypatch):
    m = tiny()
    calls = prefill_spy(monkeypatch, m)
    generate(m, [PROMPT], 40, temperature=0)
    assert calls == [len(PROMPT)] + [BLOCK - 1] * (40 - (BLOCK - len(PROMPT) + 1))


def test_requests_inside_the_window_prefill_once(monkeypatch):
    m = tiny()
    calls = prefill_spy(monkeypatch, m)
    generate(m, [PROMPT, [1]], BLOCK - len(PROMPT) + 1, temperature=0)  # the last token is never fed
    assert calls == [len(PROMPT)]


def test_long_prompt_keeps_its_last_block_size_tokens():
    m = tiny()
    long = list(range(1, 41))
    assert generate(m, [long], 20, temperature=0) == generate(m, [long[-BLOCK:]], 20, temperature=0)
    assert generate(m, [long], 20, temperature=0, repetition_penalty=PEN) == [naive(m, long, 20, penalty=PEN)]
    assert generate(m, [long], 1, temperature=0) == [naive(m, long, 1)]


@pytest.mark.parametrize("shift", [0, BLOCK + 1, 2.5, True, "4"])
def test_window_shift_validation(shift):
    with pytest.raises(ValueError, match=r"window_shift: expected an integer in \[1, 16\]"):
        generate(tiny(), [PROMPT], 40, window_shift=shift)
