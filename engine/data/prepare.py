"""``tritongpt prepare``: tokenize a corpus into the token shards that ``data.TokenDataset`` reads.

Sources, each ``--source`` argument one of:
- ``shakespeare``: the built-in corpus (``assets.fetch_shakespeare``), one document per work. The keyword
  wins over a file of that name; write ``./shakespeare`` for the file.
- a ``.jsonl`` or ``.jsonl.zst`` file (the Pile's format): one document per line, from its string
  ``text`` field; blank lines are skipped, anything else without a string ``text`` is an error naming
  ``file:line``, and so is a corrupt or truncated zstd stream (any number of frames is fine).
- any other file: plain UTF-8 text, the whole file one document (line endings kept as they are).
- a folder: every file below it, recursively, in sorted relative-path order, each read as above;
  names starting with "." (``.git``, editor files) and the output folder are skipped.

Documents are concatenated in that order. GPT-2 BPE appends ``<|endoftext|>`` (50256) after each
document (a literal "<|endoftext|>" inside a text stays ordinary text). The char tokenizer's vocabulary
is every character of the corpus, sorted by code point (a first streaming pass), with no separator:
documents are joined as-is, so a single file or the Shakespeare corpus is exactly its characters.
Empty documents are skipped.

Validation split: the last ``ceil(n * val_fraction)`` tokens of the whole stream, as nanoGPT does (the
Shakespeare "first 90% train, last 10% val"); both splits need at least 2 tokens.

Streaming: files are read in blocks and jsonl line by line; a long document is cut into pieces of
about ``chunk_chars`` characters, only where a line that starts with a non-space character follows
a newline preceded by a non-space character: GPT-2's pre-tokenizer always makes such a "\\n" a token
of its own, so the pieces encode to exactly the tokens of the whole document. (Without such a place
within 4 pieces' length, a piece is cut at a newline, or anywhere, and BPE may differ at that cut.)
Pieces are grouped into tasks, encoded by a process pool with at most 2 tasks per worker in flight,
and written in task order: the output is the same for any worker count.

Atomicity: tokens go to hidden temporary shards; after they are split, truncated and fsynced, the old
meta.json is removed, the shards are renamed to ``train_NNNNNN.bin`` / ``val_NNNNNN.bin``, stale
shards are deleted, and meta.json is written last (atomically). Interrupted before that point, the
previous prepared data is untouched; during it, the folder has no meta.json and readers refuse it.
meta.json's ``fingerprint`` (inputs' sha256 + settings) makes a re-run with the same inputs a no-op.
"""

from __future__ import annotations

import argparse
import codecs
import collections
import hashlib
import json
import math
import os
import re
import signal
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .. import assets
from ..fsutil import atomic_write_text, fsync_dir
from .shards import (
    FORMAT_VERSION,
    HEADER_SIZE,
    DataError,
    ShardSequence,
    ShardWriter,
    load_meta,
    open_shard,
    read_header,
    token_dtype,
)
from .tokenizer import CharTokenizer, GPT2Tokenizer, tokenizer_from_dict

SHAKESPEARE = "shakespeare"
CHUNK_CHARS = 1 << 20  # ~1 MB of text per task: large enough to amortise IPC, small enough to stream
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB per uint16 shard
_SHARD_NAME = re.compile(r"(train|val)_\d{6}\.bin")
_TEMP_PREFIX = ".prepare-"


class PrepareError(ValueError):
    """Bad input or settings; the message names the file (and line) and what was expected."""


@dataclass(frozen=True)
class InputFile:
    source: str  # the --source argument it came from
    path: Path
    kind: str  # "shakespeare" | "jsonl" | "jsonl.zst" | "text"
    name: str  # path relative to the source argument: part of the fingerprint, so order changes count
    sha256: str
    size: int


def _kind(path: Path) -> str:
    name = path.name.lower()
    return "jsonl.zst" if name.endswith(".jsonl.zst") else "jsonl" if name.endswith(".jsonl") else "text"


def resolve_sources(sources: list[str], exclude: Path | None = None) -> list[InputFile]:
    """Every input file in reading order, hashed (sha256, streamed)."""
    if not sources:
        raise PrepareError("--source: give at least one source (shakespeare, a file or a folder)")
    files = []
    for src in sources:
        if src == SHAKESPEARE:
            path = assets.fetch_shakespeare(quiet=True)  # verifies the corpus sha256
            files.append(InputFile(src, path, SHAKESPEARE, SHAKESPEARE, assets.SHAKESPEARE_SHA256, path.stat().st_size))
            continue
        root = Path(src)
        if root.is_dir():
            found = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(root).parts)
                           and not (exclude and p.resolve().is_relative_to(exclude.resolve())))
            if not found:
                raise PrepareError(f"{src}: no input files in this folder")
            pairs = [(root / rel, rel.as_posix()) for rel in found]
        elif root.is_file():
            pairs = [(root, root.name)]
        else:
            raise PrepareError(f"{src}: no such file or folder (and not the keyword {SHAKESPEARE!r})")
        files += [InputFile(src, p, _kind(p), name, assets.sha256_file(p), p.stat().st_size) for p, name in pairs]
    return files


# ---- reading: documents as streams of text pieces ---------------------------------------------------------
def _safe_cut(buf: str, lo: int, hi: int) -> int | None:
    """The last i in (lo, hi] with buf[i-2:i+1] = non-space, "\\n", non-space: a BPE-neutral cut."""
    i = buf.rfind("\n", lo, hi)
    while i > 0:
        if i + 1 < len(buf) and not buf[i - 1].isspace() and not buf[i + 1].isspace():
            return i + 1
        i = buf.rfind("\n", lo, i)
    return None


def _pieces(blocks: Iterable[tuple[str, int]], n: int) -> Iterator[tuple[str, int]]:
    """Re-cut (text, pos) blocks of one document into pieces of about ``n`` characters (see the docstring)."""
    buf, pos = "", 0
    for block, pos in blocks:
        buf += block
        while len(buf) > n:
            cut = _safe_cut(buf, 0, n) or _safe_cut(buf, 0, len(buf))
            if cut is None:
                if len(buf) < 4 * n:
                    break  # read more: a clean cut may come
                cut = buf.rfind("\n", 0, n) + 1 or n
            yield buf[:cut], pos
            buf = buf[cut:]
    if buf:
        yield buf, pos


def _text_blocks(path: Path, n: int) -> Iterator[tuple[str, int]]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    pos = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(n)
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise PrepareError(f"{path}: not UTF-8 text (byte {pos + e.start}); plain-text sources must be "
                                   "UTF-8, and .jsonl/.jsonl.zst need those suffixes") from None
            pos += len(raw)
            if text:
                yield text, pos
            if not raw:
                return


def _zstd_lines(raw: BinaryIO, path: Path) -> Iterator[bytes]:
    """Lines of a zstd stream of any number of frames. A corrupt stream, or one that ends inside a frame
    (a truncated download), is a ``PrepareError``: zstandard's stream reader would return the truncated
    text as if it were all."""
    try:
        import zstandard
    except ImportError as e:
        from ..errors import missing_extra

        raise missing_extra(e, "data", f"{path}: reading .zst") from None

    dctx = zstandard.ZstdDecompressor(max_window_size=2**31)  # the Pile's long-range windows need up to 2 GiB
    obj, inside, parts = dctx.decompressobj(), False, []
    try:
        for block in iter(lambda: raw.read(1 << 16), b""):
            while block:
                *lines, tail = obj.decompress(block).split(b"\n")
                inside, block = not obj.eof, obj.unused_data if obj.eof else b""
                if obj.eof:
                    obj = dctx.decompressobj()  # the next frame
                if lines:
                    lines[0] = b"".join([*parts, lines[0]])
                    parts = []
                    yield from (line + b"\n" for line in lines)
                parts.append(tail)
    except zstandard.ZstdError as e:
        raise PrepareError(f"{path}: corrupt zstd data near byte {raw.tell()} ({e}); expected a .jsonl.zst "
                           "file") from None
    if inside:
        raise PrepareError(f"{path}: the zstd stream ends inside a frame: the file is truncated")
    yield b"".join(parts)


def _jsonl_texts(path: Path, compressed: bool) -> Iterator[tuple[str, int]]:
    with open(path, "rb") as raw:
        lines: Iterable[bytes] = _zstd_lines(raw, path) if compressed else raw
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                raise PrepareError(f"{path}:{lineno}: not a JSON line ({e})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                got = type(record.get("text")).__name__ if isinstance(record, dict) and "text" in record else "none"
                raise PrepareError(f"{path}:{lineno}: expected an object with a string 'text' field (text: {got})")
            yield record["text"], raw.tell()


def _documents(f: InputFile, n: int) -> Iterator[Iterable[tuple[str, int]]]:
    if f.kind == SHAKESPEARE:
        pos = 0
        for doc in assets.shakespeare_documents():
            pos += len(doc.encode("utf-8"))
            yield [(doc, pos)]
    elif f.kind == "text":
        yield _text_blocks(f.path, n)
    else:
        yield from ([item] for item in _jsonl_texts(f.path, f.kind == "jsonl.zst"))


def read_documents(f: InputFile, n: int = CHUNK_CHARS) -> Iterator[tuple[str, bool, int]]:
    """(piece, ends a document, bytes of ``f`` read so far), lazily; empty documents yield nothing."""
    for blocks in _documents(f, n):
        prev = None
        for piece, pos in _pieces(blocks, n):
            if prev is not None:
                yield prev[0], False, prev[1]
            prev = (piece, pos)
        if prev is not None:
            yield prev[0], True, prev[1]


def _tasks(files: list[InputFile], n: int, docs: list[int]) -> Iterator[tuple[list[tuple[str, bool]], int]]:
    """Pieces grouped into tasks of about ``n`` characters, each with the input bytes read once it is done."""
    task, chars, base = [], 0, 0
    for i, f in enumerate(files):
        for piece, end, pos in read_documents(f, n):
            task.append((piece, end))
            chars += len(piece)
            docs[i] += end
            if chars >= n:
                yield task, base + pos
                task, chars = [], 0
        base += f.size
    if task:
        yield task, base


# ---- tokenizing on all cores ------------------------------------------------------------------------------
_TOKENIZER: Any = None


def _init_worker(tokenizer: dict) -> None:
    global _TOKENIZER
    _TOKENIZER = tokenizer_from_dict(tokenizer)


def _init_pool_worker(tokenizer: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it terminates the pool and cleans up
    _init_worker(tokenizer)


def _encode_task(pieces: list[tuple[str, bool]]) -> np.ndarray:
    eot, ids = _TOKENIZER.eot_token, []
    for text, end in pieces:
        ids.extend(_TOKENIZER.encode(text))
        if end and eot is not None:
            ids.append(eot)
    return np.asarray(ids, dtype=np.uint32)


def _ordered_map(tasks: Iterator[tuple[Any, int]], workers: int, tokenizer: dict) -> Iterator[tuple[np.ndarray, int]]:
    """Like ``Pool.imap`` (results in task order), but reading ahead at most 2 tasks per worker: imap would
    pull the whole input into its queue."""
    if workers <= 1:
        _init_worker(tokenizer)
        yield from ((_encode_task(t), mark) for t, mark in tasks)
        return
    import multiprocessing

    with multiprocessing.Pool(workers, _init_pool_worker, (tokenizer,)) as pool:
        pending: collections.deque = collections.deque()
        for task, mark in tasks:
            pending.append((pool.apply_async(_encode_task, (task,)), mark))
            if len(pending) >= 2 * workers:
                res, m = pending.popleft()
                yield res.get(), m
        while pending:
            res, m = pending.popleft()
            yield res.get(), m


def _split_val(stream: ShardSequence, val: ShardSequence, n_train: int) -> list[ShardWriter]:
    """Move tokens [n_train, n) of the stream into ``val``; return the train shards."""
    train, start = [], 0
    for w in stream.writers:
        a, start = start, start + w.count
        if start <= n_train:
            train.append(w)
            continue
        keep = max(0, n_train - a)
        tokens = open_shard(w.path)
        for lo in range(keep, w.count, 1 << 24):  # 16 Mi tokens at a time
            val.write(np.asarray(tokens[lo: lo + (1 << 24)]))
        del tokens
        if keep:
            w.truncate(keep)
            train.append(w)
        else:
            w.discard()
    val.close()
    return train


# ---- the pipeline -----------------------------------------------------------------------------------------
def fingerprint(files: list[InputFile], tokenizer: str, val_fraction: float, shard_tokens: int) -> str:
    """sha256 over everything the output depends on (not the worker count: it changes nothing)."""
    settings = {"format_version": FORMAT_VERSION, "tokenizer": tokenizer, "val_fraction": val_fraction,
                "shard_tokens": shard_tokens, "inputs": [[f.kind, f.name, f.sha256] for f in files],
                "gpt2_ranks": assets.GPT2_RANKS_SHA256 if tokenizer == "gpt2" else None}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _up_to_date(out: Path, fp: str) -> dict | None:
    """The existing meta.json if it has this fingerprint and every shard it lists is whole."""
    try:
        meta = load_meta(out)
        if meta.get("fingerprint") != fp:
            return None
        for split in meta["splits"].values():
            for e in split["shards"]:
                p = out / e["file"]
                if not p.is_file() or p.stat().st_size != e["bytes"] or read_header(p)[1] != e["tokens"]:
                    return None
    except (DataError, KeyError, TypeError):
        return None
    return meta


def _commit(out: Path, splits: dict[str, list[ShardWriter]], meta: dict) -> None:
    (out / "meta.json").unlink(missing_ok=True)  # from here until the new meta.json, readers refuse the folder
    fsync_dir(out)
    names = set()
    for split, writers in splits.items():
        for i, w in enumerate(writers):
            names.add(f"{split}_{i:06d}.bin")
            os.replace(w.path, out / f"{split}_{i:06d}.bin")
    for p in out.iterdir():
        if _SHARD_NAME.fullmatch(p.name) and p.name not in names:
            p.unlink()  # a shard of an earlier, larger run
    fsync_dir(out)
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


def _check_out(out: Path) -> None:
    """--out must be a folder or creatable as one: not a file, nor below one."""
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out: {out} exists and is not a folder")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise PrepareError(f"--out: {out} cannot be created: {parent} is a file, not a folder")


def _make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        for p in out.glob(f"{_TEMP_PREFIX}*.tmp"):
            p.unlink()  # left by a killed run (an interrupted one removes its own)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise PrepareError(f"--out: cannot create or clean the folder {out}: {e.strerror}{where}") from None


def _build_tokenizer(tokenizer: str, files: list[InputFile], sources: list[str],
                     chunk_chars: int) -> GPT2Tokenizer | CharTokenizer:
    if tokenizer == "gpt2":
        return GPT2Tokenizer()  # here, not first in a worker: a missing ranks file is one clear error
    chars: set[str] = set()
    for f in files:
        for piece, _, _ in read_documents(f, chunk_chars):
            chars.update(piece)
    if not chars:
        raise PrepareError(f"{', '.join(sources)}: no text (every document is empty)")
    return CharTokenizer(sorted(chars))


def prepare(sources: list[str], out: str | Path, *, tokenizer: str = "gpt2", val_fraction: float = 0.1,
            workers: int | None = None, shard_tokens: int = DEFAULT_SHARD_TOKENS, quiet: bool = False,
            force: bool = False, chunk_chars: int = CHUNK_CHARS) -> tuple[dict, bool]:
    """Tokenize ``sources`` into ``out``; return (meta, whether anything was written)."""
    from tqdm import tqdm

    if tokenizer not in ("gpt2", "char"):
        raise PrepareError(f"--tokenizer: {tokenizer!r}; expected 'gpt2' or 'char'")
    if not 0 <= val_fraction < 1:
        raise PrepareError(f"--val-fraction: {val_fraction}; expected 0 <= fraction < 1")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers < 1 or shard_tokens < 1 or chunk_chars < 1:
        raise PrepareError(f"--workers and --shard-tokens must be >= 1 (got {workers}, {shard_tokens})")
    out = Path(out)
    _check_out(out)
    files = resolve_sources(sources, exclude=out)
    fp = fingerprint(files, tokenizer, val_fraction, shard_tokens)
    if not force and (meta := _up_to_date(out, fp)) is not None:
        print(f"up to date: {out} ({_summary(meta)})")
        return meta, False

    tok = _build_tokenizer(tokenizer, files, sources, chunk_chars)  # before --out is created: errors leave no trace
    _make_out(out)
    dtype = token_dtype(tok.vocab_size)
    stream = ShardSequence(out, dtype, shard_tokens, f"{_TEMP_PREFIX}stream_")
    val = ShardSequence(out, dtype, shard_tokens, f"{_TEMP_PREFIX}val_")
    docs = [0] * len(files)
    try:
        with tqdm(total=sum(f.size for f in files), unit="B", unit_scale=True, desc="tokenizing", file=sys.stderr,
                  disable=quiet) as bar:
            for ids, mark in _ordered_map(_tasks(files, chunk_chars, docs), workers, tok.to_dict()):
                stream.write(ids)
                bar.update(mark - bar.n)
        stream.close()
        n = stream.count
        n_val = math.ceil(n * Fraction(repr(val_fraction)))  # exact: 0.1 is 1/10 here, not 0.1000000000000000055
        if n - n_val < 2 or (val_fraction > 0 and n_val < 2):
            raise PrepareError(f"the corpus has {n} tokens: too small to split with --val-fraction {val_fraction} "
                               "(each split needs at least 2 tokens)")
        train = _split_val(stream, val, n - n_val)
        splits = {"train": train, "val": val.writers}
        meta = {
            "format_version": FORMAT_VERSION, "tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size,
            "dtype": dtype.name, "eot_token": tok.eot_token, "header_bytes": HEADER_SIZE,
            "val_fraction": val_fraction, "val_rule": "last ceil(n * val_fraction) tokens of the stream",
            "shard_tokens": shard_tokens, "fingerprint": fp,
            "splits": {name: {"tokens": sum(w.count for w in ws), "shards": [
                {"file": f"{name}_{i:06d}.bin", "tokens": w.count, "bytes": HEADER_SIZE + w.count * dtype.itemsize}
                for i, w in enumerate(ws)]} for name, ws in splits.items()},
            "sources": [{"source": f.source, "path": str(f.path), "name": f.name, "kind": f.kind, "sha256": f.sha256,
                         "bytes": f.size, "documents": d} for f, d in zip(files, docs, strict=True)],
        }
        _commit(out, splits, meta)
    finally:
        for w in stream.writers + val.writers:
            w.discard()  # closes and removes what was not committed (committed files have been renamed)
    print(f"prepared {out}: {_summary(meta)}")
    return meta, True


def _summary(meta: dict) -> str:
    s = meta["splits"]
    return (f"train {s['train']['tokens']:,} tokens in {len(s['train']['shards'])} shard(s), val "
            f"{s['val']['tokens']:,} in {len(s['val']['shards'])}; {meta['tokenizer']['type']} vocab "
            f"{meta['vocab_size']:,}, {meta['dtype']}")


# ---- CLI --------------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", nargs="+", required=True, metavar="SOURCE",
                   help="'shakespeare', text files, folders (recursive), .jsonl / .jsonl.zst files with a 'text' field")
    p.add_argument("--tokenizer", choices=("gpt2", "char"), default="gpt2",
                   help="gpt2: BPE, <|endoftext|> after each document; char: vocabulary from the corpus")
    p.add_argument("--out", required=True, type=Path, help="output folder: shards and meta.json")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="the last fraction of the token stream that becomes the val split (default 0.1)")
    p.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: all cores)")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                   help=f"most tokens per shard file (default {DEFAULT_SHARD_TOKENS:,})")
    p.add_argument("--force", action="store_true", help="rebuild even when the output is up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    try:
        prepare(args.source, args.out, tokenizer=args.tokenizer, val_fraction=args.val_fraction,
                workers=args.workers, shard_tokens=args.shard_tokens, quiet=args.quiet, force=args.force)
    except (PrepareError, DataError, assets.AssetError, OSError) as e:
        from ..errors import report_error

        return report_error(e)
    except KeyboardInterrupt:
        print(f"interrupted: {args.out} keeps what it had before (temporary shards removed)", file=sys.stderr)
        return 130
    return 0
