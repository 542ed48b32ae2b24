"""Token shards written by ``tritongpt prepare``: the file format and a memory-mapped reader.
Training draws its windows from them by (seed, step) (``train_setup.batch_rows``, ``Windows``).

Shard format (version 1), little-endian::

    offset  size  field
    0       8     magic  b"TGPTTOK\\0"
    8       4     format version (uint32) = 1
    12      2     token dtype code (uint16): 2 = uint16, 4 = uint32 (the item size in bytes)
    14      2     reserved, 0
    16      8     token count (uint64)
    24      232   zero padding up to HEADER_SIZE = 256
    256     ...   the tokens, count x item size bytes

uint16 holds vocabularies of up to 65,536 tokens (GPT-2's 50,257), uint32 anything larger. A shard
is only trusted when its file size equals ``256 + count * itemsize`` and ``meta.json`` lists it
with that count: a shard written halfway (the header is completed last) or left over from an
interrupted run is refused, never read as data.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..fsutil import atomic_path, temp_file

MAGIC = b"TGPTTOK\0"
FORMAT_VERSION = 1
HEADER_SIZE = 256
_HEADER = struct.Struct("<8sIHHQ")
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


class DataError(ValueError):
    """Prepared data that is missing, damaged, incomplete, or too small for the request."""


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest shard dtype holding ids ``0 .. vocab_size - 1``."""
    return _DTYPES[2] if vocab_size <= 1 << 16 else _DTYPES[4]


def encode_header(dtype: np.dtype, count: int) -> bytes:
    dtype = np.dtype(dtype)
    if dtype not in _DTYPES.values():
        raise ValueError(f"dtype: shards hold uint16 or uint32 tokens, not {dtype}")
    return _HEADER.pack(MAGIC, FORMAT_VERSION, dtype.itemsize, 0, count).ljust(HEADER_SIZE, b"\0")


def read_header(path: str | Path) -> tuple[np.dtype, int]:
    """(dtype, token count) of a shard, after checking magic, version and that the size matches."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise DataError(f"{path}: shard missing") from None
    if len(head) < HEADER_SIZE:
        raise DataError(f"{path}: {size} bytes, shorter than the {HEADER_SIZE}-byte header (damaged shard)")
    magic, version, code, _, count = _HEADER.unpack_from(head)
    if magic != MAGIC:
        raise DataError(f"{path}: not a tritongpt token shard (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise DataError(f"{path}: shard format version {version}; this tritongpt reads version {FORMAT_VERSION} "
                        "(run `tritongpt prepare` again)")
    if code not in _DTYPES:
        raise DataError(f"{path}: unknown token dtype code {code} (2 = uint16, 4 = uint32)")
    if size != HEADER_SIZE + count * code:
        raise DataError(f"{path}: the header says {count} tokens ({HEADER_SIZE + count * code} bytes) but the file "
                        f"has {size} bytes: damaged or incompletely written")
    return _DTYPES[code], count


def open_shard(path: str | Path) -> np.memmap | np.ndarray:
    """A validated shard's tokens, memory-mapped (never read whole)."""
    dtype, count = read_header(path)
    if count == 0:  # np.memmap refuses empty maps
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_SIZE, shape=(count,))


def write_shard(path: str | Path, tokens: np.ndarray, dtype: np.dtype) -> Path:
    """Write one whole shard atomically (small shards and tests; prepare streams with ``ShardWriter``)."""
    if len(tokens) and not 0 <= int(np.min(tokens)) <= int(np.max(tokens)) <= np.iinfo(dtype).max:
        raise ValueError(f"tokens: values outside the range of {np.dtype(dtype)}")
    tokens = np.ascontiguousarray(tokens, dtype=np.dtype(dtype).newbyteorder("<"))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(encode_header(dtype, len(tokens)))
        f.write(tokens.tobytes())
    return Path(path)


class ShardWriter:
    """Append tokens to a temporary shard in ``folder``; ``close()`` completes the header and fsyncs.

    The header says 0 tokens until ``close()``, so a half-written file never validates. The file keeps
    its temporary name: ``prepare`` renames all shards together, just before writing meta.json.
    """

    def __init__(self, folder: str | Path, dtype: np.dtype, prefix: str = ".shard_") -> None:
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.path = temp_file(folder, prefix)
        self.count = 0
        self._f = open(self.path, "wb")  # open until close() / discard()
        self._f.write(encode_header(self.dtype, 0))

    def write(self, tokens: np.ndarray) -> None:
        self._f.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self.count += len(tokens)

    def close(self) -> None:
        self._f.seek(0)
        self._f.write(encode_header(self.dtype, self.count))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def truncate(self, count: int) -> None:
        """Keep only the first ``count`` tokens of a closed shard."""
        with open(self.path, "r+b") as f:
            f.truncate(HEADER_SIZE + count * self.dtype.itemsize)
            f.write(encode_header(self.dtype, count))
            os.fsync(f.fileno())
        self.count = count

    def discard(self) -> None:
        self._f.close()
        self.path.unlink(missing_ok=True)


class ShardSequence:
    """Tokens written across consecutive temporary shards (``ShardWriter``) of at most ``cap`` tokens each."""

    def __init__(self, folder: str | Path, dtype: np.dtype, cap: int, prefix: str) -> None:
        self.folder, self.dtype, self.cap, self.prefix = folder, dtype, cap, prefix
        self.writers: list[ShardWriter] = []

    def write(self, ids: np.ndarray) -> None:
        pos = 0
        while pos < len(ids):
            if not self.writers or self.writers[-1].count == self.cap:
                if self.writers:
                    self.writers[-1].close()
                self.writers.append(ShardWriter(self.folder, self.dtype, self.prefix))
            take = min(self.cap - self.writers[-1].count, len(ids) - pos)
            self.writers[-1].write(ids[pos: pos + take])
            pos += take

    def close(self) -> None:
        if self.writers:
            self.writers[-1].close()

    @property
    def count(self) -> int:
        return sum(w.count for w in self.writers)


def load_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "meta.json"
    if not path.exists():
        raise DataError(f"{folder}: no meta.json, so no complete prepared data (never prepared, or the prepare was "
                        "interrupted): run `tritongpt prepare --out` on it")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format version {meta.get('format_version')!r}; this tritongpt reads "
                        f"{FORMAT_VERSION} (run `tritongpt prepare` again)")
    return meta


class TokenDataset:
    """One split (``train`` or ``val``) of a prepared folder: its shards memory-mapped end to end."""

    def __init__(self, folder: str | Path, split: str) -> None:
        self.folder, self.split = Path(folder), split
        self.meta = load_meta(folder)
        if split not in self.meta["splits"]:
            raise DataError(f"{folder}: no split {split!r} (have {sorted(self.meta['splits'])})")
        self.dtype = np.dtype(self.meta["dtype"])
        self.shards: list[np.ndarray] = []
        self.paths: list[Path] = []
        for entry in self.meta["splits"][split]["shards"]:
            name = entry["file"]
            if Path(name).name != name:  # meta.json only ever names files inside the folder
                raise DataError(f"{folder}/meta.json: bad shard name {name!r}")
            dtype, count = read_header(self.folder / name)
            if dtype != self.dtype or count != entry["tokens"]:
                raise DataError(f"{self.folder / name}: {count} {dtype} tokens, but meta.json lists "
                                f"{entry['tokens']} {self.dtype} (shard from another run?)")
            self.shards.append(open_shard(self.folder / name))
            self.paths.append(self.folder / name)
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])  # shard i holds [offsets[i], offsets[i+1])
        if len(self) == 0:
            raise DataError(f"{folder}: the {split} split is empty (prepared with --val-fraction 0?)")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def vocab_needed(self) -> int:
        """Ids a model must cover: meta.json's vocab_size, or the tokenizer's size if that is larger."""
        tok = self.meta.get("tokenizer")
        chars = tok.get("chars") if isinstance(tok, dict) and tok.get("type") == "char" else None
        sizes = [self.vocab_size, len(chars) if isinstance(chars, (str, list)) else 0]
        if isinstance(tok, dict) and isinstance(tok.get("vocab_size"), int):
            sizes.append(tok["vocab_size"])
        return max(sizes)

    def check_vocab(self, vocab_size: int, model: str = "the model") -> None:
        """Refuse a model whose vocabulary is smaller than the data's, and shard ids >= ``vocab_size``
        (a damaged shard, or one made with another tokenizer): on a GPU either would end in a
        device-side assert that kills the process. ``model`` names where the model's vocab_size comes from."""
        need = self.vocab_needed
        if vocab_size < need:
            raise DataError(f"{model}: vocab_size {vocab_size} is smaller than the data's vocabulary of {need} "
                            f"tokens ({self.folder / 'meta.json'}): use a vocab_size >= {need}")
        # Ids past the data's own vocabulary are damage even where the model is larger.
        if np.iinfo(self.dtype).max < need:
            return  # no id this dtype can hold is out of range
        for path, shard in zip(self.paths, self.shards, strict=True):
            check_shard_ids(path, shard, need)

    @property
    def tokenizer_meta(self) -> dict[str, Any]:
        return dict(self.meta["tokenizer"])

    @property
    def tokenizer(self):
        from .tokenizer import tokenizer_from_dict

        return tokenizer_from_dict(self.meta["tokenizer"])

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the split, across shard boundaries (a copy)."""
        if start < 0 or length < 0 or start + length > len(self):
            raise IndexError(f"window [{start}, {start + length}) outside the {self.split} split's {len(self)} tokens")
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        parts, pos, end = [], start, start + length
        while pos < end:
            lo = pos - int(self.offsets[i])
            take = min(end - pos, len(self.shards[i]) - lo)
            parts.append(self.shards[i][lo: lo + take])
            pos += take
            i += 1
        return np.concatenate(parts) if parts else np.zeros(0, self.dtype)


def check_shard_ids(path: Path, tokens: np.ndarray, limit: int, chunk: int = 1 << 24) -> None:
    """Raise naming ``path``, the offending id and its position if any token is >= ``limit``. The
    memmap is scanned in chunks, so memory stays flat whatever the shard's size."""
    for lo in range(0, len(tokens), chunk):
        part = tokens[lo: lo + chunk]
        if int(part.max()) >= limit:
            pos = lo + int(np.argmax(part >= limit))
            raise DataError(f"{path}: token {pos} has id {int(tokens[pos])}, outside the vocabulary [0, {limit}): a "
                            "damaged shard or one prepared with another tokenizer (run `tritongpt prepare` again)")
