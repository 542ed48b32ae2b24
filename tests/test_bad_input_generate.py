"""Wrong inputs to generation, tokenizers and `tritongpt prepare`/`generate`: clear one-line errors, no lost files,
and a tokenizer smaller than the model's vocabulary never sees an id it cannot decode."""

from __future__ import annotations

import json
import string

import pytest
import torch

from tritongpt.engine import GPT, GPTConfig, assets, generate, stream
from tritongpt.engine.cli import main
from tritongpt.engine.data.tokenizer import CharTokenizer, GPT2Tokenizer, TokenizerError, load_tokenizer
from tritongpt.engine.generation import validate_request
from tritongpt.engine.generation.sampling import SamplingParams, sample

CHARS = string.ascii_lowercase[:20]  # the tokenizer: 20 ids, under a model of 80
SAMPLED = [dict(temperature=1.0), dict(temperature=0.7, top_k=50), dict(top_p=0.95, repetition_penalty=1.3),
           dict(temperature=2.0, min_p=0.0)]


def biased_model(vocab: int = 80, high: int = 60) -> GPT:
    """Logits of ids >= ``high`` beat the rest by ~n_embd: unmasked, only those ids are ever produced."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=vocab)).eval()
    with torch.no_grad():
        m.transformer.wte.weight.normal_(0.0, 0.1)  # tied LM head: varied logits among the low ids
        m.transformer.wte.weight[high:] += 1.0
        m.transformer.ln_f.bias.fill_(1.0)
    return m


@pytest.fixture(scope="module")
def model():
    return biased_model()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("ckpt") / "small-tok"
    model.save(d)
    meta = json.loads((d / "config.json").read_text())
    meta["tokenizer"] = CharTokenizer(CHARS).to_dict()
    (d / "config.json").write_text(json.dumps(meta))
    return d


@pytest.fixture
def gpt2_ranks():
    if not assets.gpt2_ranks_path().exists():
        pytest.skip("GPT-2 ranks not provisioned (`tritongpt assets --gpt2`)")


def cli(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# ---- a tokenizer smaller than the model: masking ---------------------------------------------------------
def test_unmasked_model_prefers_ids_the_tokenizer_lacks(model):
    out = generate(model, [[1, 2, 3]], 12, temperature=0)[0] + generate(model, [[1, 2, 3]], 12, seed=0)[0]
    assert min(out) >= 60


@pytest.mark.parametrize("kw", [dict(temperature=0), dict(temperature=0, repetition_penalty=1.5), *SAMPLED])
def test_vocab_limit_keeps_every_id_below_it(model, kw):
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    for seed in range(2):
        outs = generate(model, prompts, 20, seed=seed, vocab_limit=20, **kw)
        assert all(len(o) == 20 and max(o) < 20 for o in outs), outs
    streamed = [t for _, t in stream(model, prompts, 10, seed=1, vocab_limit=20, **kw)]
    assert len(streamed) == 30 and max(streamed) < 20


def test_vocab_limit_variety_and_no_op_at_model_size(model):
    out = generate(model, [[1]], 30, seed=3, vocab_limit=20)[0]
    assert len(set(out)) > 3  # sampling among the allowed ids, not a single fallback id
    assert generate(model, [[1]], 8, temperature=0, vocab_limit=80) == generate(model, [[1]], 8, temperature=0)


def test_sample_with_vocab_limit_directly():
    logits = torch.arange(10, dtype=torch.float32).repeat(3, 1)  # the largest logit is the last id
    params = SamplingParams(temperature=0, vocab_limit=4).validate()
    assert sample(logits, params).tolist() == [3, 3, 3]
    noise = torch.empty(3, 10).exponential_(generator=torch.Generator().manual_seed(0))
    assert max(sample(logits, SamplingParams(vocab_limit=4), noise=noise).tolist()) < 4
    assert torch.equal(logits, torch.arange(10, dtype=torch.float32).repeat(3, 1))  # input left as it was


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph runner needs a GPU")
def test_vocab_limit_inside_the_cuda_graph(model):
    m = biased_model().cuda()
    for kw in [dict(temperature=0), *SAMPLED]:
        outs = generate(m, [[1, 2, 3], [4, 5]], 20, seed=0, cuda_graph=True, vocab_limit=20, **kw)
        assert all(max(o) < 20 for o in outs), (kw, outs)


@pytest.mark.parametrize("kw,message", [
    (dict(vocab_limit=0), "vocab_limit"), (dict(vocab_limit=81), "vocab_limit"), (dict(vocab_limit=2.5), "vocab_limit"),
    (dict(vocab_limit=True), "vocab_limit"), (dict(vocab_limit=20, eos_token_id=30), "eos_token_id"),
])
def test_vocab_limit_validation(model, kw, message):
    with pytest.raises(ValueError, match=message):
        validate_request(model, [[1, 2]], 4, **kw)
    with pytest.raises(ValueError, match=r"prompts\[0\]\[1\]: token id 25 outside the vocabulary \[0, 20\)"):
        validate_request(model, [[1, 25]], 4, vocab_limit=20)


@pytest.mark.parametrize("extra", [["--temperature", 0], ["--seed", 1], ["--seed", 2, "--top-k", 70, "--stream"]])
def test_cli_small_tokenizer_generates_decodable_text(ckpt, capsys, extra):
    code, out, err = cli(capsys, "generate", "--checkpoint", ckpt, "--prompt", "abc", "--max-new-tokens", 16, *extra)
    assert code == 0, err
    text = out.rstrip("\n")
    assert text.startswith("abc") and len(text) == 3 + 16 and set(text) <= set(CHARS), out


def test_default_gpt2_under_a_padded_vocab_decodes(tmp_path, capsys, gpt2_ranks):
    # GPT-2's 50257 tokens under a model of 50304 ids (nanoGPT's padded size): 50257.. are never drawn.
    m = biased_model(vocab=50304, high=50257)
    m.save(tmp_path / "padded")
    code, out, err = cli(capsys, "generate", "--checkpoint", tmp_path / "padded", "--prompt", "Hello",
                         "--max-new-tokens", 8, "--seed", 0)
    assert code == 0 and out.startswith("Hello"), err


# ---- a tokenizer larger than the model: an error in every command form -------------------------------------
def big_tokenizer(tmp_path):
    path = tmp_path / "big.json"
    CharTokenizer([chr(0x100 + i) for i in range(100)]).save(path)
    return path


def test_larger_tokenizer_via_flag_or_checkpoint(ckpt, tmp_path, capsys):
    big = big_tokenizer(tmp_path)
    for argv in (["--checkpoint", ckpt, "--tokenizer", big], ["--preset", "tiny", "--tokenizer", big]):
        code, out, err = cli(capsys, "generate", *argv, "--prompt", "\u0101", "--max-new-tokens", 2)
        assert code == 2 and out == "" and "100 tokens" in err and str(big) in err, err
    d = tmp_path / "ck"
    biased_model().save(d)
    meta = json.loads((d / "config.json").read_text())
    meta["tokenizer"] = json.loads(big.read_text())
    (d / "config.json").write_text(json.dumps(meta))
    code, out, err = cli(capsys, "generate", "--checkpoint", d, "--prompt", "\u0101", "--max-new-tokens", 2)
    assert code == 2 and "100 tokens" in err and "vocabulary only 80" in err and "config.json" in err, err


def test_larger_default_gpt2_via_preset_and_hf_dir(tmp_path, capsys, gpt2_ranks):
    code, _, err = cli(capsys, "generate", "--preset", "tiny", "--prompt", "a", "--max-new-tokens", 2)
    assert code == 2 and "50257 tokens" in err and "gpt2" in err, err
    transformers = pytest.importorskip("transformers")
    # Its log handler may hold an earlier test's closed stderr: a warning would print "Logging error".
    transformers.logging.set_verbosity_error()
    cfg = transformers.GPT2Config(vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "hf")
    code, _, err = cli(capsys, "generate", "--hf-dir", tmp_path / "hf", "--prompt", "a", "--max-new-tokens", 2)
    assert code == 2 and "50257 tokens" in err and "only 300" in err, err


# ---- GPT-2 ranks named by TRITONGPT_GPT2_RANKS ------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    import tiktoken

    def refuse(name):
        raise AssertionError("fell through to tiktoken's download")

    monkeypatch.setattr(tiktoken, "get_encoding", refuse)


def test_ranks_variable_pointing_at_a_missing_file(monkeypatch, tmp_path, capsys, ckpt, no_network):
    missing = tmp_path / "nope" / "r50k_base.tiktoken"
    monkeypatch.setenv("TRITONGPT_GPT2_RANKS", str(missing))
    with pytest.raises(assets.AssetFileError, match=f"TRITONGPT_GPT2_RANKS={missing}: no such file"):
        GPT2Tokenizer()
    with pytest.raises(assets.AssetError, match="no such file"):
        assets.fetch_gpt2_ranks()
    code, _, err = cli(capsys, "generate", "--checkpoint", ckpt, "--tokenizer", "gpt2", "--prompt", "a")
    assert code == 2 and f"TRITONGPT_GPT2_RANKS={missing}: no such file" in err and "set TRITONGPT" not in err


@pytest.mark.parametrize("content", [b"not ranks\n", b"", None])
def test_ranks_variable_pointing_at_wrong_content(monkeypatch, tmp_path, capsys, content, no_network):
    bad = tmp_path / "r.tiktoken"
    bad.mkdir() if content is None else bad.write_bytes(content)
    monkeypatch.setenv("TRITONGPT_GPT2_RANKS", str(bad))
    message = "cannot read" if content is None else "sha256 mismatch"
    with pytest.raises(assets.AssetFileError, match=message) as e:
        GPT2Tokenizer()
    assert f"TRITONGPT_GPT2_RANKS={bad}" in str(e.value)
    code, _, err = cli(capsys, "prepare", "--source", __file__, "--out", tmp_path / "out", "--quiet")
    assert code == 2 and str(bad) in err and message in err and not (tmp_path / "out").exists()


# ---- tokenizer files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,message", [
    ('{"type": "char"}', "needs 'chars'"),
    ('{"type": "char", "chars": 5}', "'chars' must be a non-empty string"),
    ('{"type": "char", "chars": {"a": 0}}', "'chars' must be a non-empty string"),
    ('{"type": "char", "chars": ["a", "bc"]}', "'chars' must be a non-empty string"),
    ('{"type": "char", "chars": ""}', "'chars' must be a non-empty string"),
    ('{"type": "char", "chars": "abca"}', "['a'] more than once"),
    ('{"type": "char", "chars": "abc", "unk": "?"}', "'unk' '?'"),
    ('{"type": "char", "chars": "abc", "unk": "ab"}', "'unk' 'ab'"),
    ('{"type": "bpe"}', "unknown type 'bpe'"),
    ('["a", "b"]', "expected a JSON object"),
    ('{"type": "char", chars: "ab"}', "invalid JSON"),
])
def test_bad_tokenizer_files(tmp_path, capsys, ckpt, text, message):
    path = tmp_path / "tok.json"
    path.write_text(text)
    with pytest.raises(TokenizerError, match=f"{path}: .*{message}".replace("[", r"\[").replace("(", r"\(")):
        load_tokenizer(path)
    code, out, err = cli(capsys, "generate", "--checkpoint", ckpt, "--tokenizer", path, "--prompt", "a")
    assert code == 2 and out == "" and f"--tokenizer: {path}" in err and message in err, err


def test_list_chars_still_load(tmp_path):
    (tmp_path / "t.json").write_text('{"type": "char", "chars": ["x", "y"]}')
    assert load_tokenizer(tmp_path / "t.json").decode([1, 0]) == "yx"


@pytest.mark.parametrize("make,message", [
    (lambda p: None, "no such tokenizer file"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.write_bytes(b'{"type": "char", "chars": "\xe9"}'), "not UTF-8"),
])
def test_tokenizer_path_errors(tmp_path, capsys, ckpt, make, message):
    path = tmp_path / "tok.json"
    make(path)
    code, _, err = cli(capsys, "generate", "--checkpoint", ckpt, "--tokenizer", path, "--prompt", "a")
    assert code == 2 and f"--tokenizer: {path}" in err and message in err, err


# ---- generate: files and flags -----------------------------------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    # A char tokenizer has no end-of-text token to start an empty (unconditional) prompt from.
    (["--prompt", ""], "--prompt: prompt 1: empty prompt, and the char tokenizer has no end-of-text token"),
    (["--prompt", "ab", "--prompt", ""], "--prompt: prompt 2: empty prompt"),
    (["--prompt", "ab", "--window-shift", 0], "window_shift"),
    (["--prompt", "ab", "--max-new-tokens", -1], "max_new_tokens"),
    (["--prompt", "ab", "--top-p", 2], "top_p"),
    (["--prompt", "ab", "--top-k", 0], "top_k"),
    (["--prompt", "ab", "--seed", -1], "seed"),
    (["--prompt", "ab", "--repetition-penalty", 0], "repetition_penalty"),
])
def test_generate_flag_errors(ckpt, capsys, argv, message):
    code, out, err = cli(capsys, "generate", "--checkpoint", ckpt, "--max-new-tokens", 4, *argv)
    assert code == 2 and out == "" and message in err, err


@pytest.mark.parametrize("name,make,message", [
    ("missing.txt", lambda p: None, "No such file"),
    ("folder", lambda p: p.mkdir(), "Is a directory"),
    ("latin1.txt", lambda p: p.write_bytes(b"caf\xe9\n"), "not UTF-8 text (byte 3)"),
    ("p.jsonl", lambda p: p.write_text('{"prompt": ""}\n'), ":1: empty prompt, and the char tokenizer has no end"),
])
def test_prompt_file_errors(ckpt, capsys, tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    code, _, err = cli(capsys, "generate", "--checkpoint", ckpt, "--prompt-file", path)
    assert code == 2 and "--prompt-file" in err and str(path) in err and message in err, err


def test_model_folder_errors(capsys, tmp_path, ckpt):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    for flag, name, message in [("--checkpoint", "missing", "does not exist"), ("--checkpoint", "file", "is a file"),
                                ("--checkpoint", "empty", "no config.json"), ("--hf-dir", "empty", "no config.json"),
                                ("--hf-dir", "missing", "does not exist")]:
        code, _, err = cli(capsys, "generate", flag, tmp_path / name, "--prompt", "a")
        assert code == 2 and f"{flag}: {tmp_path / name}" in err and message in err, err


# ---- prepare: corrupt inputs and --out ---------------------------------------------------------------------
def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def prepared(tmp_path):
    src = tmp_path / "good.txt"
    src.write_text("to be or not to be, that is the question\n" * 20)
    out = tmp_path / "data"
    assert main(["prepare", "--source", str(src), "--tokenizer", "char", "--out", str(out), "--quiet",
                 "--workers", "1"]) == 0
    return out, snapshot(out)


def zst(*frames: bytes) -> bytes:
    import zstandard

    return b"".join(zstandard.ZstdCompressor().compress(f) for f in frames)


DOCS = b"".join(b'{"text": "document %d: %s"}\n' % (i, b"abc" * i) for i in range(200))


@pytest.mark.parametrize("data,message", [
    (b"\x28\xb5\x2f\xfd garbage garbage", "corrupt zstd data"),
    (b'{"text": "plain, not compressed"}\n', "corrupt zstd data"),
    (zst(DOCS)[:-7], "truncated"),
    (zst(DOCS) + b"trailing", "corrupt zstd data"),
])
@pytest.mark.parametrize("tokenizer", ["char", "gpt2"])
def test_corrupt_zst_leaves_prepared_data_intact(prepared, capsys, tmp_path, data, message, tokenizer):
    if tokenizer == "gpt2" and not assets.gpt2_ranks_path().exists():
        pytest.skip("GPT-2 ranks not provisioned")
    out, before = prepared
    bad = tmp_path / "pile.jsonl.zst"
    bad.write_bytes(data)
    code, _, err = cli(capsys, "prepare", "--source", bad, "--tokenizer", tokenizer, "--out", out, "--quiet",
                       "--workers", 1)
    assert code == 2 and f"{bad}: " in err and message in err, err
    assert snapshot(out) == before


def test_multi_frame_zst_reads_every_frame(tmp_path):
    from tritongpt.engine.data.prepare import prepare

    src = tmp_path / "docs.jsonl.zst"
    src.write_bytes(zst(DOCS[: len(DOCS) // 3], DOCS[len(DOCS) // 3:]))  # a frame boundary inside a line
    meta, _ = prepare([str(src)], tmp_path / "out", tokenizer="char", workers=1, quiet=True)
    assert meta["sources"][0]["documents"] == 200


def test_prepare_out_and_source_errors(prepared, capsys, tmp_path):
    out, before = prepared
    src = next(iter(tmp_path.glob("*.txt")))
    (tmp_path / "afile").write_text("x")
    for target, message in [(tmp_path / "afile" / "sub", "afile is a file, not a folder"),
                            (tmp_path / "afile", "exists and is not a folder"),
                            (out / "meta.json", "exists and is not a folder")]:
        code, _, err = cli(capsys, "prepare", "--source", src, "--tokenizer", "char", "--out", target, "--quiet")
        assert code == 2 and f"--out: {target}" in err and message in err, err
    code, _, err = cli(capsys, "prepare", "--source", tmp_path / "nonexistent", "--out", out, "--quiet")
    assert code == 2 and "nonexistent: no such file or folder" in err
    (tmp_path / "empty.txt").write_text("")
    code, _, err = cli(capsys, "prepare", "--source", tmp_path / "empty.txt", "--tokenizer", "char", "--out",
                       tmp_path / "new", "--quiet")
    assert code == 2 and "no text" in err and not (tmp_path / "new").exists()
    assert (tmp_path / "afile").read_text() == "x" and snapshot(out) == before
