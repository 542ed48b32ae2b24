"""Speculative decoding: GPT.forward_extend, greedy equality with generate, the target distribution kept by
speculative sampling (a verification step alone and end to end), seeds, bad input and the CLI flags."""

from __future__ import annotations

import re

import pytest
import torch
from cli_checkpoint import run, save_char_checkpoint

from tritongpt.engine import GPT, GPTConfig, KVCache, generate, speculative_generate
from tritongpt.engine.generation.speculative import verify

SPEC = re.compile(r"speculative: (\d+) draft tokens/step, (\d+)/(\d+) accepted \([\d.]+%\), (\d+) target forwards "
                  r"for (\d+) tokens")


def tiny(seed: int, vocab: int = 97, scale: float = 4.0, **kw) -> GPT:
    """A random tiny GPT; weights scaled up so its next-token distributions are peaked (greedy near-ties
    between logits, which rounding could flip, become unlikely)."""
    torch.manual_seed(seed)
    m = GPT(GPTConfig(**{**dict(vocab_size=vocab, block_size=64, n_layer=2, n_head=2, n_embd=32), **kw})).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    return m


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Every tensor here is tiny: a second intra-op thread only adds wake-ups, and on a shared CPU a small
    # softmax then took milliseconds instead of microseconds.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def target() -> GPT:
    return tiny(0)


@pytest.fixture(scope="module")
def draft() -> GPT:
    return tiny(1)


PROMPT = [5, 17, 42, 8, 3, 61]


# ---- GPT.forward_extend ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_forward_extend_matches_the_full_forward(backend):
    m = tiny(0, block_size=32)
    m.backend = backend
    idx = torch.randint(0, 97, (2, 13))
    cache = KVCache.allocate(m.config, 2, 16, dtype=torch.float32, device="cpu")
    with torch.no_grad():
        full = m(idx)
        # Chunks of 5, 1 (a decode step), 7 (odd); then a rejected tail rolled back: positions 6..12 are
        # first written with other tokens, and the rerun over them must not see the stale keys.
        first = m.forward_extend(idx[:, :5], 0, cache)
        one = m.forward_extend(idx[:, 5:6], 5, cache)
        m.forward_extend(torch.randint(0, 97, (2, 7)), 6, cache)
        rest = m.forward_extend(idx[:, 6:], 6, cache)
    got = torch.cat([first, one, rest], dim=1)
    assert got.shape == (2, 13, 97)
    torch.testing.assert_close(got, full, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        tail = m.forward_extend(idx[:, 6:], 6, cache, last=3)  # the LM head on the last 3 positions only
    torch.testing.assert_close(tail, full[:, -3:], atol=1e-4, rtol=1e-4)


def test_forward_extend_bad_input(target):
    cache = KVCache.allocate(target.config, 1, 8, dtype=torch.float32, device="cpu")
    idx = torch.tensor([[1, 2, 3]])
    for kwargs, message in [(dict(idx=idx, start=6), "capacity"), (dict(idx=idx, start=-1), "start"),
                            (dict(idx=idx, start=1.0), "start"), (dict(idx=idx[:, :0], start=0), "Tn >= 1"),
                            (dict(idx=idx[0], start=0), "idx"), (dict(idx=torch.tensor([[97]]), start=0), "idx"),
                            (dict(idx=idx, start=0, last=4), "last"), (dict(idx=idx, start=0, last=0), "last")]:
        with pytest.raises(ValueError, match=message):
            target.forward_extend(kwargs["idx"], kwargs["start"], cache, last=kwargs.get("last"))


# ---- greedy: the same tokens as generate -------------------------------------------------------------

def test_greedy_draft_model_equals_generate(target, draft):
    want = generate(target, [PROMPT], 40, temperature=0)[0]
    r = speculative_generate(target, PROMPT, 40, draft_model=draft, num_draft_tokens=4, temperature=0)
    assert r.tokens == want
    assert 0 < r.accepted < r.proposed  # a different model: some guesses are rejected (measured 19/75)
    assert r.target_forwards < 40


def test_greedy_self_draft_accepts_everything(target):
    want = generate(target, [PROMPT], 40, temperature=0)[0]
    r = speculative_generate(target, PROMPT, 40, draft_model=target, num_draft_tokens=4, temperature=0)
    assert r.tokens == want
    assert r.acceptance_rate == 1.0 and r.target_forwards == 8  # 5 tokens per target forward


def test_greedy_on_the_triton_backend(target):
    # The kernels (interpreted here) under both models; few tokens, the interpreter is slow.
    want = generate(target, [PROMPT], 6, temperature=0)[0]
    t, d = tiny(0), tiny(1)
    t.backend = d.backend = "triton"
    r = speculative_generate(t, PROMPT, 6, draft_model=d, num_draft_tokens=2, temperature=0)
    assert r.tokens == want and r.proposed > 0


@pytest.mark.parametrize("k", [1, 3, 7])
def test_greedy_prompt_lookup_equals_generate(target, k):
    prompt = [10, 11, 12, 13, 14] * 4 + [10, 11]  # repetitive: the 2-gram (10, 11) has occurred before
    want = generate(target, [prompt], 30, temperature=0)[0]
    r = speculative_generate(target, prompt, 30, prompt_lookup=2, num_draft_tokens=k, temperature=0)
    assert r.tokens == want
    assert r.accepted > 0 and r.target_forwards < 30


def test_greedy_stops_at_eos_with_a_vocab_limit(target, draft):
    full = generate(target, [PROMPT], 30, temperature=0, vocab_limit=90)[0]
    eos = full[11]
    want = generate(target, [PROMPT], 30, temperature=0, vocab_limit=90, eos_token_id=eos)[0]
    assert want[-1] == eos and len(want) <= 12
    r = speculative_generate(target, PROMPT, 30, draft_model=draft, temperature=0, vocab_limit=90, eos_token_id=eos)
    assert r.tokens == want
    assert speculative_generate(target, PROMPT, 0, draft_model=draft).tokens == []


def test_prompt_lookup_without_a_match_takes_plain_steps(target):
    prompt = [1, 2, 3, 4, 5]  # no token repeats: nothing to copy until the output repeats one
    r = speculative_generate(target, prompt, 10, prompt_lookup=3, temperature=0)
    assert r.tokens == generate(target, [prompt], 10, temperature=0)[0]
    assert r.target_forwards + r.accepted == 10


# ---- sampling: the target distribution is kept -------------------------------------------------------

def chi2(counts: torch.Tensor, probs: torch.Tensor) -> float:
    n = counts.sum()
    keep = probs > 0
    assert counts[~keep].sum() == 0, "a token the target never samples was emitted"
    expected = n * probs[keep]
    return float(((counts[keep] - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("point_mass", [False, True], ids=["draft", "lookup"])
def test_one_verification_step_emits_the_target_distribution(point_mass):
    # Target distributions that do not depend on the context: the token at every output position j of a
    # step must then be distributed as p[j], whatever the guesses were and however many were accepted.
    V, k, n = 8, 2, 4000
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(k + 1, V, generator=g) * 1.5
    scores[0, 6:] = float("-inf")  # filtered tokens (top-k): p = 0 where q > 0
    p = torch.softmax(scores, dim=-1)
    q = torch.softmax(torch.randn(k, V, generator=g) * 1.5, dim=-1)
    counts = torch.zeros(k + 1, V)
    gen = torch.Generator().manual_seed(1)
    for _ in range(n):
        if point_mass:
            drafts = [1, 2]  # prompt lookup: always the same guesses
        else:
            drafts = torch.multinomial(q, 1, generator=gen).view(-1).tolist()
        m, nxt = verify(scores, drafts, None if point_mass else q, False, gen)
        for j, t in enumerate(drafts[:m] + [nxt]):
            counts[j, t] += 1
    for j in range(k + 1):
        # 7 degrees of freedom: 30 is far in the tail (p ~ 1e-4); a sampler that kept the guesses' own
        # distribution instead (no rejection) scores in the hundreds here.
        assert chi2(counts[j], p[j]) < 30, (j, counts[j], p[j])
    assert counts[k].sum() > 0  # the bonus token was drawn


def test_greedy_verify_accepts_the_argmax_prefix():
    scores = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0], [0.0, 0.0, 5.0]])
    assert verify(scores, [1, 0], None, True, None) == (2, 2)
    assert verify(scores, [1, 2], None, True, None) == (1, 0)
    assert verify(scores, [0, 0], None, True, None) == (0, 1)


def test_speculative_sampling_end_to_end_keeps_the_target_distribution():
    # Two new tokens, one guess per step: the first step verifies one draft token (the bonus token or a
    # correction follows), the second (if any) is a plain step. Marginals of both tokens against the
    # target's exact ones, with temperature and top-k applied to p and q alike.
    V, n = 8, 1500
    tgt, dft = tiny(2, vocab=V, scale=3.0), tiny(3, vocab=V, scale=3.0)
    prompt = [1, 2, 3]
    kw = dict(temperature=0.8, top_k=6)
    with torch.no_grad():
        from tritongpt.engine.generation.sampling import SamplingParams, process_logits

        params = SamplingParams(temperature=0.8, top_k=6)
        p1 = torch.softmax(process_logits(tgt(torch.tensor([prompt]))[:, -1], params), -1)[0]
        nxt = torch.tensor([prompt + [t] for t in range(V)])
        p2_given = torch.softmax(process_logits(tgt(nxt)[:, -1], params), -1)  # (V, V)
        p2 = p1 @ p2_given
    counts = torch.zeros(2, V)
    accepted = proposed = 0
    for seed in range(n):
        r = speculative_generate(tgt, prompt, 2, draft_model=dft, num_draft_tokens=1, seed=seed, **kw)
        counts[0, r.tokens[0]] += 1
        counts[1, r.tokens[1]] += 1
        accepted, proposed = accepted + r.accepted, proposed + r.proposed
    assert chi2(counts[0], p1) < 30 and chi2(counts[1], p2) < 30, (counts, p1, p2)
    assert 0 < accepted < proposed == n


def test_seeded_runs_are_reproducible(target, draft):
    for proposer in (dict(draft_model=draft), dict(prompt_lookup=2)):
        kw = dict(num_draft_tokens=3, temperature=0.9, top_p=0.95, **proposer)
        a = speculative_generate(target, PROMPT, 24, seed=7, **kw)
        b = speculative_generate(target, PROMPT, 24, seed=7, **kw)
        c = speculative_generate(target, PROMPT, 24, seed=8, **kw)
        assert a.tokens == b.tokens and (a.accepted, a.target_forwards) == (b.accepted, b.target_forwards)
        assert len(a.tokens) == 24 and a.tokens != c.tokens


def test_training_mode_is_restored(draft):
    m = tiny(0)
    m.train()
    speculative_generate(m, PROMPT, 4, draft_model=draft, temperature=0)
    assert m.training and not draft.training


# ---- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,error,message", [
    (dict(), ValueError, "exactly one proposer"),
    (dict(draft_model="d", prompt_lookup=2), ValueError, "both"),
    (dict(draft_model=object()), TypeError, "draft_model"),
    (dict(prompt_lookup=0), ValueError, "prompt_lookup"),
    (dict(prompt_lookup=True), ValueError, "prompt_lookup"),
    (dict(prompt_lookup=2, num_draft_tokens=0), ValueError, "num_draft_tokens"),
    (dict(prompt_lookup=2, num_draft_tokens=2.0), ValueError, "num_draft_tokens"),
    (dict(prompt_lookup=2, max_new_tokens=56), ValueError, r"max_new_tokens: .* = 66 exceeds the model's"),
    (dict(prompt_lookup=2, prompt=[[1, 2], [3, 4]]), ValueError, "one prompt"),
    (dict(prompt_lookup=2, prompt=[]), ValueError, "prompt"),
    (dict(prompt_lookup=2, temperature=-1), ValueError, "temperature"),
    (dict(prompt_lookup=2, seed=-1), ValueError, "seed"),
    (dict(draft_model=tiny(4, vocab=96)), ValueError, "vocab_size 96"),
    (dict(draft_model=tiny(4, block_size=32), max_new_tokens=30), ValueError, "= 40 exceeds the draft_model's"),
])
def test_bad_input(target, kwargs, error, message):
    kw = {"prompt": PROMPT, "max_new_tokens": 8, **kwargs}
    with pytest.raises(error, match=message):
        speculative_generate(target, kw.pop("prompt"), kw.pop("max_new_tokens"), **kw)


# ---- the CLI -----------------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    m = tiny(0)
    d, tok = save_char_checkpoint(m, tmp_path_factory.mktemp("ckpt") / "tiny")
    return d, m, tok


@pytest.mark.parametrize("extra,rate", [
    (["--prompt-lookup", 2], None), (["--draft-checkpoint", "SELF"], 1.0), (["--draft-preset", "tiny"], None),
    (["--prompt-lookup", 1, "--stream"], None),
])
def test_cli_greedy_speculation(ckpt, capsys, extra, rate):
    d, m, tok = ckpt
    prompt = "abcabcabcab"
    want = tok.decode(generate(m, [tok.encode(prompt)], 16, temperature=0)[0])
    extra = [d if a == "SELF" else a for a in extra]
    code, out, err = run(capsys, "--checkpoint", d, "--prompt", prompt, "--max-new-tokens", 16, "--temperature", 0,
                         "--speculate", 3, *extra)
    assert code == 0, err
    assert out == prompt + want + "\n"
    found = SPEC.search(err.strip().splitlines()[-1])
    assert found, err
    k, acc, prop, forwards, n = map(int, found.groups())
    assert k == 3 and n == 16 and acc <= prop
    if rate is not None:
        assert acc == prop > 0


@pytest.mark.parametrize("proposer", [["--prompt-lookup", 1], ["--draft-checkpoint", "SELF"]])
def test_cli_sampling_with_a_seed_is_reproducible(ckpt, capsys, proposer):
    # (not --draft-preset: its random weights differ from run to run, like --preset's)
    d, _, _ = ckpt
    argv = ["--checkpoint", d, "--prompt", "hello", "--max-new-tokens", 12, "--seed", 3, "--top-k", 20,
            "--speculate", 2, *[d if a == "SELF" else a for a in proposer]]
    first, second = run(capsys, *argv), run(capsys, *argv)
    assert first[0] == 0 and first[1] == second[1] and len(first[1]) > len("hello\n")


@pytest.mark.parametrize("argv,message", [
    (["--prompt-lookup", 2], "--prompt-lookup: only used with --speculate"),
    (["--draft-preset", "tiny"], "--draft-preset: only used with --speculate"),
    (["--speculate", 2], "--speculate: expected one of"),
    (["--speculate", 0, "--prompt-lookup", 2], "--speculate: expected a number"),
    (["--speculate", 2, "--prompt-lookup", 2, "--draft-preset", "tiny"], "got --draft-preset and --prompt-lookup"),
    (["--speculate", 2, "--prompt-lookup", 0], "--prompt-lookup: expected"),
    (["--speculate", 2, "--prompt-lookup", 2, "--prompt", "xy"], "one prompt, got 2"),
    (["--speculate", 2, "--prompt-lookup", 2, "--repetition-penalty", 1.2], "--repetition-penalty: not supported"),
    (["--speculate", 2, "--prompt-lookup", 2, "--max-new-tokens", 61], "= 65 exceeds the model's context window"),
    (["--speculate", 2, "--draft-preset", "nope"], "--draft-preset: unknown preset"),
    (["--speculate", 2, "--draft-checkpoint", "/nonexistent/draft"], "--draft-checkpoint: /nonexistent/draft"),
    (["--speculate", 2, "--draft-preset", "shakespeare-char"], "--draft-preset: a vocabulary of 50257"),
])
def test_cli_errors(ckpt, capsys, argv, message):
    d, _, _ = ckpt
    code, out, err = run(capsys, "--checkpoint", d, "--prompt", "ab", "--max-new-tokens", 8, *argv)
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
