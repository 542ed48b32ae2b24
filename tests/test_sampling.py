"""Sampling: frequencies match softmax(logits / T) (and the filtered, renormalised distributions);
filters agree with Hugging Face's logits processors."""

from __future__ import annotations

import math

import pytest
import torch

from tritongpt.engine.generation.sampling import (
    SamplingParams,
    apply_min_p,
    apply_repetition_penalty,
    apply_top_k,
    apply_top_p,
    draw_noise,
    process_logits,
    sample,
)

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
N = 60_000


def frequencies(params: SamplingParams, seed: int = 0) -> torch.Tensor:
    logits = LOGITS.expand(N, -1).contiguous()
    g = torch.Generator().manual_seed(seed)
    noise = draw_noise(torch.empty(N, LOGITS.numel()), g)
    tok = sample(logits, params, noise=noise)
    return torch.bincount(tok, minlength=LOGITS.numel()).double() / N


def assert_matches(freq: torch.Tensor, expected: torch.Tensor) -> None:
    """Per-token binomial z-scores; |z| < 4.5 holds for a correct sampler except with ~1e-5 odds."""
    expected = expected.double()
    for i, (f, p) in enumerate(zip(freq.tolist(), expected.tolist(), strict=True)):
        if p == 0:
            assert f == 0, f"token {i} was filtered out but drawn {f * N:.0f} times"
            continue
        z = (f - p) / math.sqrt(p * (1 - p) / N) if p < 1 else 0.0
        assert abs(z) < 4.5, f"token {i}: frequency {f:.4f} vs probability {p:.4f} (z={z:.1f})"


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_frequencies_match_softmax(temperature):
    assert_matches(frequencies(SamplingParams(temperature=temperature)), torch.softmax(LOGITS / temperature, -1))


def test_sampler_catches_a_biased_distribution():
    # The statistical check is not vacuous: temperature 1.2 samples fail against T=1 probabilities.
    with pytest.raises(AssertionError):
        assert_matches(frequencies(SamplingParams(temperature=1.2)), torch.softmax(LOGITS, -1))


def renormalised(keep: list[bool], temperature: float = 1.0) -> torch.Tensor:
    p = torch.softmax(LOGITS / temperature, -1) * torch.tensor(keep)
    return p / p.sum()


def test_top_k_top_p_min_p_frequencies():
    assert_matches(frequencies(SamplingParams(top_k=3)), renormalised([1, 1, 1, 0, 0, 0]))
    p = torch.softmax(LOGITS, -1)  # [0.55, 0.20, 0.12, 0.07, 0.03, 0.003]
    assert_matches(frequencies(SamplingParams(top_p=0.8)), renormalised([1, 1, 1, 0, 0, 0]))
    assert float(p[:2].sum()) < 0.8 < float(p[:3].sum())
    assert_matches(frequencies(SamplingParams(min_p=0.1)), renormalised([1, 1, 1, 1, 0, 0]))
    assert_matches(frequencies(SamplingParams(temperature=0.5, top_k=2)), renormalised([1, 1, 0, 0, 0, 0], 0.5))


def test_greedy_is_exact_argmax_and_needs_no_noise():
    logits = torch.randn(7, 50)
    assert torch.equal(sample(logits, SamplingParams(temperature=0)), logits.argmax(-1))
    with pytest.raises(ValueError, match="noise"):
        sample(logits, SamplingParams(temperature=1.0))


def test_zero_noise_draw_is_safe():
    logits = torch.tensor([[0.0, 1.0, float("-inf")]])
    tok = sample(logits, SamplingParams(), noise=torch.zeros(1, 3))
    assert tok.item() in (0, 1)


transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("k", [1, 5, 40])
def test_top_k_matches_hf(k):
    logits = torch.randn(4, 64)
    want = transformers.TopKLogitsWarper(top_k=k)(None, logits.clone())
    assert torch.equal(apply_top_k(logits, k), want)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 0.99])
def test_top_p_matches_hf(p):
    logits = torch.randn(6, 64) * 3
    want = transformers.TopPLogitsWarper(top_p=p)(None, logits.clone())
    assert torch.equal(torch.isinf(apply_top_p(logits, p)), torch.isinf(want))


@pytest.mark.parametrize("p", [0.01, 0.2, 0.7])
def test_min_p_matches_hf(p):
    logits = torch.randn(6, 64) * 3
    want = transformers.MinPLogitsWarper(min_p=p)(None, logits.clone())
    assert torch.equal(torch.isinf(apply_min_p(logits, p)), torch.isinf(want))


def test_repetition_penalty_matches_hf():
    logits = torch.randn(3, 30)
    seen = torch.randint(0, 30, (3, 8))
    want = transformers.RepetitionPenaltyLogitsProcessor(penalty=1.7)(seen, logits.clone())
    presence = torch.zeros(3, 30, dtype=torch.bool).scatter_(1, seen, True)
    torch.testing.assert_close(apply_repetition_penalty(logits, presence, 1.7), want)
    with pytest.raises(ValueError, match="presence"):
        process_logits(logits, SamplingParams(repetition_penalty=1.7))
