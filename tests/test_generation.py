"""KV-cache generation: cache vs full recompute, Hugging Face parity, ragged batches, sampling, validation."""

from __future__ import annotations

import pytest
import torch

from tritongpt.engine import GPT, generate, stream
from tritongpt.engine.generation import DecodeRunner, batch_bucket, cpu_decode_layout, validate_request
from tritongpt.engine.generation.kv_cache import KVCache
from tritongpt.engine.generation.sampling import SamplingParams


def tiny(block_size: int = 96, **kw) -> GPT:
    torch.manual_seed(0)
    m = GPT.from_preset("tiny", block_size=block_size, **kw).eval()
    with torch.no_grad():  # sharper logits than the 0.02-std init and position-driven variety, so
        for p in m.parameters():  # greedy output is not one repeated token (random models collapse)
            if p.dim() == 2:
                p.mul_(4.0)
        m.transformer.wpe.weight.mul_(5.0)
    return m


def recompute_greedy(model: GPT, prompt: list[int], n: int) -> list[int]:
    """Reference: the full forward over the whole sequence for every new token (no cache)."""
    x = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            x.append(int(model(torch.tensor([x]))[0, -1].argmax()))
    return x[len(prompt):]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_kv_cache_greedy_equals_full_recompute(backend):
    m = tiny(block_size=80)
    prompt = [5, 17, 3, 60, 2, 41, 9]
    ref = recompute_greedy(m, prompt, 64)
    assert len(set(ref)) > 16, "degenerate reference"
    m.backend = backend
    assert generate(m, [prompt], 64, temperature=0) == [ref]


def test_ragged_batch_equals_unbatched():
    m = tiny()
    prompts = [[1, 2, 3], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11], [42], [7, 7]]
    batched = generate(m, prompts, 24, temperature=0)
    assert batched == [generate(m, [p], 24, temperature=0)[0] for p in prompts]
    assert batched[1] == recompute_greedy(m, prompts[1], 24)


def test_padded_bucket_rows_do_not_change_real_rows():
    # The GPU path pads a batch of 3 up to the bucket of 4; run that runner on the CPU.
    m = tiny()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9]]
    req = validate_request(m, prompts, 12, temperature=0)
    runner = DecodeRunner(m, batch_bucket(3), 32, req.params, cuda_graph=False)
    assert runner.bucket == 4
    with torch.inference_mode():
        runner.start(req, torch.Generator())
        cols = [runner.next[:3].clone()]
        for _ in range(11):
            runner.step()
            cols.append(runner.next[:3].clone())
    assert torch.stack(cols, 1).tolist() == generate(m, prompts, 12, temperature=0)
    assert runner.done[3].item() and int(runner.lengths[3]) == 1  # the padding row never advanced



def test_cached_runner_does_not_keep_its_model_alive():
    # GPU runners are cached in a WeakKeyDictionary keyed by the model: a runner holding the model
    # (or its bound forward) strongly would make every model used on CUDA immortal.
    import gc
    import weakref

    from tritongpt.engine.generation import decoding

    m = tiny()
    req = validate_request(m, [[1, 2, 3]], 4, temperature=0)
    runner = DecodeRunner(m, 1, 16, req.params, cuda_graph=False)
    with torch.inference_mode():
        runner.start(req, torch.Generator())
        runner.step()
    decoding._RUNNERS.setdefault(m, {})["key"] = runner
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None and not any(r is runner for v in decoding._RUNNERS.values() for r in v.values())
    with pytest.raises(ReferenceError):
        runner.step()


def test_interleaved_streams_keep_inference_mode_local():
    # Inference mode is thread-local: held across yields it covered the consumer's code, and streams
    # closed out of order left the thread in inference mode (and crashed the other stream).
    m = tiny()
    a = stream(m, [[1, 2, 3]], 3, temperature=0)
    b = stream(m, [[4, 5]], 8, temperature=0)
    got_b = []
    for _ in a:
        got_b.append(next(b)[1])
        assert not torch.is_inference_mode_enabled()
    got_b += [t for _, t in b]
    assert not torch.is_inference_mode_enabled()
    assert got_b == generate(m, [[4, 5]], 8, temperature=0)[0]
    pairs = list(zip(stream(m, [[1, 2]], 4, temperature=0), stream(m, [[3]], 4, temperature=0), strict=False))
    assert len(pairs) == 4 and not torch.is_inference_mode_enabled()


def test_generate_under_autocast_uses_the_weights_dtype():
    # The cache holds the weights' dtype; a caller's autocast (e.g. an eval loop) must not reach the
    # decode step (on CUDA the Triton decode attention rejects bf16 queries over an fp32 cache).
    m = tiny()
    want = generate(m, [[1, 2, 3], [4]], 6, temperature=0)
    with torch.autocast("cpu", torch.bfloat16):
        assert generate(m, [[1, 2, 3], [4]], 6, temperature=0) == want

def test_greedy_matches_hugging_face(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=211, n_positions=96, n_embd=48, n_layer=3, n_head=4)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # scale the random init up so the greedy path is not a constant token
        for p in hf.parameters():
            if p.dim() == 2:
                p.mul_(6.0)
    hf.save_pretrained(tmp_path)
    m = GPT.from_pretrained(tmp_path)
    for prompt in ([3, 1, 4, 1, 5, 9, 2, 6], [100]):
        ids = torch.tensor([prompt])
        want = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, min_new_tokens=32,
                           do_sample=False, pad_token_id=0)[0, len(prompt):].tolist()
        assert len(set(want)) > 3, "degenerate reference"
        assert generate(m, [prompt], 32, temperature=0) == [want]


def test_stream_matches_generate_and_is_lazy():
    m = tiny()
    prompts = [[1, 2, 3], [4, 5]]
    got: list[list[int]] = [[], []]
    it = stream(m, prompts, 10, temperature=0.9, top_k=20, seed=7)
    first = next(it)
    assert first[0] == 0
    got[first[0]].append(first[1])
    for r, t in it:
        got[r].append(t)
    assert got == generate(m, prompts, 10, temperature=0.9, top_k=20, seed=7)


def test_seed_reproducible_and_no_global_rng_side_effects():
    m = tiny()
    state = torch.get_rng_state()
    a = generate(m, [[1, 2, 3]], 20, temperature=1.0, seed=123)
    b = generate(m, [[1, 2, 3]], 20, temperature=1.0, seed=123)
    c = generate(m, [[1, 2, 3]], 20, temperature=1.0, seed=124)
    generate(m, [[1, 2, 3]], 5, temperature=1.0)  # unseeded: must not draw from the global RNG either
    assert torch.equal(torch.get_rng_state(), state)
    assert a == b and a != c


def test_top_k_one_is_greedy():
    m = tiny()
    prompts = [[3, 4, 5], [6]]
    assert generate(m, prompts, 16, temperature=1.3, top_k=1, seed=0) == generate(m, prompts, 16, temperature=0)


def test_rows_stop_independently_at_eos():
    m = tiny()
    prompts = [[1, 2, 3], [50, 51, 52, 53]]
    full = generate(m, prompts, 20, temperature=0)
    eos = next(t for t in full[0][3:] if t not in full[1])  # ends row 0 early, never row 1
    out = generate(m, prompts, 20, temperature=0, eos_token_id=eos)
    cut = full[0].index(eos)
    assert out[0] == full[0][: cut + 1]  # EOS included, nothing after it
    assert out[1] == full[1]
    assert generate(m, prompts, 20, temperature=0, eos_token_id=[eos, 0])[0][-1] in (eos, 0)


def test_all_rows_at_eos_stop_early():
    m = tiny()
    full = generate(m, [[1, 2, 3]], 40, temperature=0)
    out = generate(m, [[1, 2, 3]], 40, temperature=0, eos_token_id=full[0][0])
    assert out == [[full[0][0]]]


def test_zero_new_tokens_and_training_mode_restored():
    m = tiny(dropout=0.5)
    m.train()
    assert generate(m, [[1], [2, 3]], 0) == [[], []]
    a = generate(m, [[1, 2]], 8, temperature=0)
    assert m.training  # restored
    m.eval()
    assert a == generate(m, [[1, 2]], 8, temperature=0)  # dropout was off while generating


def test_repetition_penalty_runs_and_discourages_repeats():
    m = tiny()
    plain = generate(m, [[1, 2, 3]], 30, temperature=0)[0]
    pen = generate(m, [[1, 2, 3]], 30, temperature=0, repetition_penalty=50.0)[0]
    assert len(set(pen)) > len(set(plain))


def test_single_flat_prompt_and_tensor_prompts():
    m = tiny()
    want = generate(m, [[4, 5, 6]], 5, temperature=0)
    assert generate(m, [4, 5, 6], 5, temperature=0) == want
    assert generate(m, torch.tensor([[4, 5, 6]]), 5, temperature=0) == want


# ---- validation: every rule raises ValueError naming the problem before any work ----------------------
BAD = [
    (dict(prompts=[[]]), "prompts[0]: empty prompt"),
    (dict(prompts=[]), "prompts: expected at least one"),
    (dict(prompts="hello"), "prompts: expected a list"),
    (dict(prompts=[[1, 2], "ab"]), "prompts[1]"),
    (dict(prompts=[[1, 97]]), "prompts[0][1]: token id 97 outside the vocabulary"),
    (dict(prompts=[[1, -1]]), "outside the vocabulary"),
    (dict(prompts=[[1, 2.0]]), "prompts[0][1]: expected an integer"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(max_new_tokens=True), "max_new_tokens"),
    (dict(window_shift=0), "window_shift"),
    (dict(window_shift=97), "window_shift"),
    (dict(temperature=-0.1), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(min_p=-0.1), "min_p"),
    (dict(min_p=1.1), "min_p"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(repetition_penalty=float("inf")), "repetition_penalty"),
    (dict(seed=-1), "seed"),
    (dict(seed="abc"), "seed"),
    (dict(eos_token_id=97), "eos_token_id"),
    (dict(eos_token_id=[]), "eos_token_id"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[m for _, m in BAD])
def test_validation(monkeypatch, kwargs, message):
    m = tiny()

    def no_work(*a, **k):
        raise AssertionError("work started before validation finished")

    monkeypatch.setattr(m, "forward_prefill", no_work)
    args = dict(prompts=[[1, 2, 3]], max_new_tokens=4)
    args.update(kwargs)
    prompts, n = args.pop("prompts"), args.pop("max_new_tokens")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        generate(m, prompts, n, **args)
    with pytest.raises(ValueError):
        stream(m, prompts, n, **args)  # raises on the call, not on the first next()


def test_unconditional_generation_starts_from_the_end_of_text_token():
    m = GPT.from_preset("tiny", vocab_size=50257).eval()  # GPT-2's vocabulary: <|endoftext|> is 50256
    out = generate(m, [[50256]], 6, temperature=0)
    assert len(out) == 1 and len(out[0]) == 6
    assert generate(m, [50256], 6, temperature=0) == out  # a flat one-token prompt
    with pytest.raises(ValueError, match=r"prompts: expected at least one prompt"):
        generate(m, [], 6)
    with pytest.raises(ValueError, match=r"prompts\[0\]: empty prompt .*end-of-text token, e\.g\. \[\[50256\]\]"):
        generate(m, [[]], 6)


def test_model_type_checked():
    with pytest.raises(TypeError, match="model"):
        generate(torch.nn.Linear(2, 2), [[1]], 2)


def test_kv_cache_layout():
    cfg = tiny().config
    c = KVCache.allocate(cfg, 4, 20, dtype=torch.float16, device="cpu")
    assert c.k[0].shape == (4, cfg.n_head, 20, cfg.head_dim) and len(c.v) == cfg.n_layer
    assert c.nbytes == 2 * cfg.n_layer * 4 * cfg.n_head * 20 * cfg.head_dim * 2
    view = c.rows(2)
    view.k[1].fill_(1.0)
    assert c.k[1][:2].eq(1).all() and c.k[1][2:].eq(0).all()  # a view, not a copy
    with pytest.raises(ValueError, match="capacity"):
        KVCache.allocate(cfg, 1, cfg.block_size + 1, dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match="batch"):
        KVCache.allocate(cfg, 0, 8, dtype=torch.float32, device="cpu")
    assert [batch_bucket(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]


def test_sampling_params_greedy_flag():
    assert SamplingParams(temperature=0).validate().greedy
    assert not SamplingParams(repetition_penalty=1.0).uses_presence


def test_compiled_decode_step_matches_eager():
    m = tiny()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    assert generate(m, prompts, 10, temperature=0, compile=True) == generate(m, prompts, 10, temperature=0)


def test_cpu_decode_layout_is_read_from_the_weights():
    # One CPU row decodes on column-major c_attn / c_fc / wte, more rows on row-major; the layout is whatever the
    # strides say, and a move off the CPU leaves every matrix row-major (what the kernels and checkpoints expect).
    m = tiny().eval()
    moved = [m.transformer.h[0].attn.c_attn.weight, m.transformer.h[0].mlp.c_fc.weight, m.transformer.wte.weight]
    ref = generate(m, [[1, 2, 3], [4, 5]], 6, temperature=0)
    assert all(w.is_contiguous() for w in moved)
    one = generate(m, [[1, 2, 3]], 6, temperature=0)
    assert one == ref[:1] and all(w.t().is_contiguous() and not w.is_contiguous() for w in moved)
    cpu_decode_layout(m, column_major=True)  # already so: nothing changes
    assert all(w.t().is_contiguous() for w in moved)
    assert generate(m, [[1, 2, 3], [4, 5]], 6, temperature=0) == ref and all(w.is_contiguous() for w in moved)
    generate(m, [[1, 2, 3]], 2, temperature=0)
    m.to("meta")
    assert all(p.is_contiguous() for p in m.parameters() if p.dim() == 2)
