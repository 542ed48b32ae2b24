"""`tritongpt generate`: checkpoints and HF folders, streaming, batches from files, stop strings, errors."""

from __future__ import annotations

import json
import re

import pytest
import torch
from cli_checkpoint import run, save_char_checkpoint

from tritongpt.engine import GPT, assets, generate
from tritongpt.engine.generation import decoding

STATS = re.compile(r"TTFT [\d.]+ ms \| [\d.]+ ms/token \| [\d.]+ tokens/s \| \d+ tokens")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = GPT.from_preset("tiny", block_size=64).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
        m.transformer.wpe.weight.mul_(5.0)
    d, tok = save_char_checkpoint(m, tmp_path_factory.mktemp("ckpt") / "tiny")
    return d, m, tok


def test_stream_prints_greedy_text_and_stats(ckpt, capsys):
    d, m, tok = ckpt
    want = tok.decode(generate(m, [tok.encode("Hello")], 20, temperature=0)[0])
    code, out, err = run(capsys, "--checkpoint", d, "--prompt", "Hello", "--max-new-tokens", 20,
                         "--temperature", 0, "--stream")
    assert code == 0
    assert out == "Hello" + want + "\n"
    assert STATS.search(err.strip().splitlines()[-1]), err


def test_stop_string_cuts_the_output(ckpt, capsys):
    d, m, tok = ckpt
    text = tok.decode(generate(m, [tok.encode("Hello")], 20, temperature=0)[0])
    stop = text[5:7]
    code, out, _ = run(capsys, "--checkpoint", d, "--prompt", "Hello", "--max-new-tokens", 20, "--temperature", 0,
                       "--stop", stop, "--stream")
    assert code == 0 and out == "Hello" + text[: text.index(stop)] + "\n"


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_prompt_file_batch(ckpt, capsys, tmp_path, suffix):
    d, m, tok = ckpt
    prompts = ["abc", "The quick brown", "z"]
    f = tmp_path / f"prompts{suffix}"
    lines = [json.dumps({"prompt": p}) if suffix == ".jsonl" else p for p in prompts]
    f.write_text("\n".join(lines) + "\n\n")
    code, out, err = run(capsys, "--checkpoint", d, "--prompt-file", f, "--max-new-tokens", 8, "--temperature", 0)
    assert code == 0
    outs = generate(m, [tok.encode(p) for p in prompts], 8, temperature=0)
    for p, o in zip(prompts, outs, strict=True):
        assert p + tok.decode(o) + "\n" in out
    assert "24 tokens" in err


def test_hf_dir_with_gpt2_tokenizer(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_positions=64, n_embd=16, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    code, out, err = run(capsys, "--hf-dir", tmp_path, "--prompt", "Hello \u4e16\u754c", "--max-new-tokens", 6,
                         "--seed", 1, "--top-k", 50, "--top-p", 0.9, "--stream")
    assert code == 0 and out.startswith("Hello \u4e16\u754c"), (out, err)
    assert STATS.search(err)


@pytest.mark.parametrize("argv,message", [
    (["--prompt", "\u00e9"], "not in the 97-character vocabulary"),
    (["--prompt", "ab", "--max-new-tokens", 100, "--window-shift", 0], "window_shift"),
    (["--prompt", ""], "no end-of-text token"),
    (["--prompt", "ab", "--temperature", -1], "temperature"),
    (["--prompt", "ab", "--top-p", 2], "top_p"),
    (["--prompt", "ab", "--stop", ""], "--stop"),
    (["--prompt-file", "/nonexistent/prompts.txt"], "--prompt-file"),
])
def test_errors_exit_2_with_a_message(ckpt, capsys, argv, message):
    d, _, _ = ckpt
    code, out, err = run(capsys, "--checkpoint", d, "--max-new-tokens", 8, *argv)
    assert code == 2 and message in err and out == ""


def test_missing_checkpoint(capsys, tmp_path):
    code, _, err = run(capsys, "--checkpoint", tmp_path / "nope", "--prompt", "a")
    assert code == 2 and "not a folder" in err


def test_past_the_context_window(ckpt, capsys):
    d, m, tok = ckpt  # block_size 64
    for extra in ([], ["--window-shift", 8]):
        kw = dict(window_shift=8) if extra else {}
        want = tok.decode(generate(m, [tok.encode("Hello")], 100, temperature=0, **kw)[0])
        code, out, err = run(capsys, "--checkpoint", d, "--prompt", "Hello", "--max-new-tokens", 100,
                             "--temperature", 0, "--stream", *extra)
        assert code == 0 and out == "Hello" + want + "\n", err
        assert "100 tokens" in err


def test_long_prompt_is_cropped_with_a_note(ckpt, capsys):
    d, m, tok = ckpt
    prompt = "The quick brown fox jumps over the lazy dog. " * 2  # 90 characters: 26 over the window
    want = tok.decode(generate(m, [tok.encode(prompt)[-64:]], 10, temperature=0)[0])
    code, out, err = run(capsys, "--checkpoint", d, "--prompt", prompt, "--max-new-tokens", 10, "--temperature", 0)
    assert code == 0 and out == prompt + want + "\n", err
    note = err.strip().splitlines()[0]
    assert note.startswith("note: --prompt: prompt 1: 90 tokens") and "last 64 tokens (26 dropped)" in note


def test_empty_prompt_without_an_end_of_text_token_is_one_error_line(ckpt, capsys):
    d, _, _ = ckpt
    code, out, err = run(capsys, "--checkpoint", d, "--prompt", "", "--max-new-tokens", 4)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip().splitlines() == [
        "error: --prompt: prompt 1: empty prompt, and the char tokenizer has no end-of-text token to start "
        "unconditional generation from; give the prompt some text"]


@pytest.fixture(scope="module")
def gpt2_ckpt(tmp_path_factory):
    """A tiny model over GPT-2's vocabulary; its checkpoint names no tokenizer, so GPT-2's is used."""
    if not assets.gpt2_ranks_path().exists():
        pytest.skip("GPT-2 ranks not provisioned (`tritongpt assets --gpt2`)")
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("gpt2") / "tiny"
    GPT.from_preset("tiny", vocab_size=50257).save(d)
    return d


def test_empty_prompt_starts_from_end_of_text(gpt2_ckpt, capsys, monkeypatch):
    seen, real = [], decoding.stream

    def spy(model, prompts, *args, **kwargs):  # records the token ids the CLI hands to generation
        seen.append(prompts)
        return real(model, prompts, *args, **kwargs)

    monkeypatch.setattr(decoding, "stream", spy)  # generate_cli reads it there, per call
    code, out, err = run(capsys, "--checkpoint", gpt2_ckpt, "--prompt", "", "--prompt", "Hi<|endoftext|>",
                         "--max-new-tokens", 5, "--seed", 0)
    assert code == 0 and STATS.search(err), err
    assert seen[0][0] == [50256]  # the empty prompt
    assert seen[0][1][-1] == 50256 and len(seen[0][1]) == 2  # "Hi", then the special token, not its text
    assert re.search(r"\| (\d+) tokens", err).group(1) != "0"
