import pytest

from tritongpt.engine import assets
from tritongpt.engine.data.tokenizer import CharTokenizer, GPT2Tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def gpt2():
    if not assets.gpt2_ranks_path().exists():
        pytest.fail(f"GPT-2 ranks not provisioned at {assets.gpt2_ranks_path()}: run `tritongpt assets --gpt2` "
                    "(make test does this before pytest)")
    return GPT2Tokenizer()


def test_hello_world(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.vocab_size == 50257
    assert gpt2.eot_token == 50256


@pytest.mark.parametrize("text", ["héllo wörld", "日本語のテキスト", "emoji 🤖🚀 and\ttabs\n\nnewlines",
                                  "  leading spaces", "Ünïcödé ∑∫√ ≠ ≤", ""])
def test_round_trip(gpt2, text):
    assert gpt2.decode(gpt2.encode(text)) == text


def test_endoftext_is_text_unless_allowed(gpt2):
    assert gpt2.encode("<|endoftext|>", allow_special=True) == [50256]
    assert 50256 not in gpt2.encode("<|endoftext|>")


def test_split_multibyte_bytes(gpt2):
    ids = gpt2.encode("🤖")
    assert len(ids) > 1  # split across tokens
    assert gpt2.decode_bytes(ids).decode("utf-8") == "🤖"


def test_offline_without_ranks_explains_how_to_provision(monkeypatch, tmp_path):
    import tiktoken

    monkeypatch.setenv("TRITONGPT_HOME", str(tmp_path))
    monkeypatch.delenv("TRITONGPT_GPT2_RANKS", raising=False)

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(assets.AssetError, match="tritongpt assets --gpt2"):
        GPT2Tokenizer()


def test_bad_ranks_file_is_rejected(monkeypatch, tmp_path):
    bad = tmp_path / "r.tiktoken"
    bad.write_bytes(b"not ranks")
    monkeypatch.setenv("TRITONGPT_GPT2_RANKS", str(bad))
    with pytest.raises(assets.AssetError, match="sha256"):
        assets.fetch_gpt2_ranks()
    with pytest.raises(ValueError):
        GPT2Tokenizer(ranks_path=bad)


def test_char_round_trip_and_unknowns(tmp_path):
    tok = CharTokenizer.from_text("hello wörld ✓")
    assert tok.decode(tok.encode("wörld ✓ hello")) == "wörld ✓ hello"
    with pytest.raises(ValueError, match="not in the"):
        tok.encode("hello Z")
    tok_unk = CharTokenizer.from_text("abc ?", unk="?")
    assert tok_unk.decode(tok_unk.encode("abZc")) == "ab?c"
    with pytest.raises(ValueError, match="unk"):
        CharTokenizer.from_text("abc", unk="?")
    with pytest.raises(ValueError, match="outside"):
        tok.decode([tok.vocab_size])
    tok.save(tmp_path / "tok.json")
    again = load_tokenizer(tmp_path / "tok.json")
    assert again.chars == tok.chars
