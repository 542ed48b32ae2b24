"""Incremental detokenisation: split multi-byte characters, stop strings across tokens."""

from __future__ import annotations

import pytest

from tritongpt.engine.data.tokenizer import CharTokenizer, GPT2Tokenizer
from tritongpt.engine.generation.textstream import TextStream

TEXT = "Caf\u00e9 \U0001f642 \u4e16\u754c \u2014 na\u00efve \U0001f468\u200d\U0001f469\u200d\U0001f467 end"


@pytest.fixture(scope="module")
def gpt2() -> GPT2Tokenizer:
    return GPT2Tokenizer()


def test_multibyte_characters_split_across_tokens(gpt2):
    ids = gpt2.encode(TEXT)
    assert any("\ufffd" in gpt2.decode([t]) for t in ids), "the text must split a character across tokens"
    ts = TextStream(gpt2)
    pieces = [ts.push(t) for t in ids]
    assert "".join(pieces) + ts.finish() == TEXT
    assert not any("\ufffd" in p for p in pieces)


def test_incomplete_character_at_the_end_is_replaced(gpt2):
    ids = gpt2.encode("\U0001f642")
    ts = TextStream(gpt2)
    out = "".join(ts.push(t) for t in ids[:-1])
    assert out == "" and ts.finish() == "\ufffd"


@pytest.mark.parametrize("stop", ["\u4e16\u754c", " na", "\U0001f642", "end"])
def test_stop_string_across_tokens(gpt2, stop):
    ids = gpt2.encode(TEXT)
    ts = TextStream(gpt2, stop=[stop, "never-there"])
    out = ""
    for t in ids:
        out += ts.push(t)
        if ts.stopped:
            break
    out += ts.finish()
    assert ts.stopped
    assert out == TEXT[: TEXT.index(stop)]


def test_prefix_of_stop_string_is_released_when_it_diverges():
    tok = CharTokenizer("abcdefgh")
    ts = TextStream(tok, stop=["cde"])
    assert [ts.push(t) for t in tok.encode("abcdf")] == ["a", "b", "", "", "cdf"]
    assert not ts.stopped and ts.finish() == ""


def test_skip_tokens_and_validation(gpt2):
    ts = TextStream(gpt2, skip_tokens=[gpt2.eot_token])
    assert ts.push(gpt2.eot_token) == ""
    with pytest.raises(ValueError, match="stop"):
        TextStream(gpt2, stop=[""])
