"""Shard format and TokenDataset (engine/data/shards.py), on small hand-written folders."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from tritongpt.engine.data.shards import (
    HEADER_SIZE,
    MAGIC,
    DataError,
    ShardWriter,
    TokenDataset,
    open_shard,
    read_header,
    token_dtype,
    write_shard,
)

SIZES = [5, 3, 7]  # deliberately uneven shards: windows cross both boundaries


def make_folder(path, train_sizes=SIZES, val_sizes=(6,), vocab=100):
    """Token i of the stream is i % vocab, so every window's content is predictable."""
    path.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab)
    meta = {"format_version": 1, "vocab_size": vocab, "dtype": dtype.name, "fingerprint": "f" * 64,
            "tokenizer": {"type": "char", "chars": "".join(chr(0x100 + i) for i in range(vocab)), "unk": None},
            "splits": {}}
    start = 0
    for split, sizes in (("train", train_sizes), ("val", val_sizes)):
        shards = []
        for i, n in enumerate(sizes):
            write_shard(path / f"{split}_{i:06d}.bin", np.arange(start, start + n) % vocab, dtype)
            shards.append({"file": f"{split}_{i:06d}.bin", "tokens": n, "bytes": HEADER_SIZE + n * dtype.itemsize})
            start += n
        meta["splits"][split] = {"tokens": sum(sizes), "shards": shards}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


# ---- shard format -------------------------------------------------------------------------------------
def test_token_dtype_by_vocab():
    assert token_dtype(84) == np.uint16
    assert token_dtype(50257) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535 still fit
    assert token_dtype(65537) == np.uint32


@pytest.mark.parametrize("dtype, top", [(np.uint16, 2**16 - 1), (np.uint32, 2**32 - 1)])
def test_shard_round_trip(tmp_path, dtype, top):
    tokens = np.array([0, 1, 2, top, 7, top - 1], dtype=dtype)
    p = write_shard(tmp_path / "s.bin", tokens, np.dtype(dtype))
    raw = p.read_bytes()
    itemsize = np.dtype(dtype).itemsize
    assert len(raw) == HEADER_SIZE + len(tokens) * itemsize
    assert raw[:8] == MAGIC
    assert struct.unpack_from("<IHHQ", raw, 8) == (1, itemsize, 0, len(tokens))
    assert raw[24:HEADER_SIZE] == bytes(HEADER_SIZE - 24)
    assert np.array_equal(np.frombuffer(raw[HEADER_SIZE:], dtype=np.dtype(dtype).newbyteorder("<")), tokens)
    assert read_header(p) == (np.dtype(dtype), len(tokens))
    assert np.array_equal(open_shard(p), tokens)


def test_write_shard_refuses_tokens_that_do_not_fit(tmp_path):
    with pytest.raises(ValueError, match="outside the range of uint16"):
        write_shard(tmp_path / "s.bin", np.array([1, 65536]), np.dtype(np.uint16))
    assert list(tmp_path.iterdir()) == []


def test_shard_writer_header_is_completed_last(tmp_path):
    w = ShardWriter(tmp_path, np.dtype(np.uint16))
    w.write(np.arange(10))
    w.write(np.arange(10, 15))
    w._f.flush()
    with pytest.raises(DataError, match="header says 0 tokens .* incompletely written"):
        read_header(w.path)  # a half-written shard never validates
    w.close()
    assert np.array_equal(open_shard(w.path), np.arange(15))
    w.truncate(4)
    assert np.array_equal(open_shard(w.path), np.arange(4))
    w.discard()
    assert list(tmp_path.iterdir()) == []


def _corrupt(raw: bytes, how: str) -> bytes:
    if how == "magic":
        return b"NOTTOKEN" + raw[8:]
    if how == "version":
        return raw[:8] + struct.pack("<I", 2) + raw[12:]
    if how == "dtype":
        return raw[:12] + struct.pack("<H", 3) + raw[14:]
    if how == "truncated":
        return raw[:-1]
    if how == "extra":
        return raw + b"\0\0"
    return raw[:100]  # "short": not even a header


@pytest.mark.parametrize("how, match", [
    ("magic", "not a tritongpt token shard"), ("version", "format version 2"), ("dtype", "unknown token dtype code 3"),
    ("truncated", "header says 4 tokens"), ("extra", "header says 4 tokens"), ("short", "shorter than the 256-byte"),
])
def test_read_header_refuses_bad_shards(tmp_path, how, match):
    p = write_shard(tmp_path / "s.bin", np.arange(4), np.dtype(np.uint16))
    p.write_bytes(_corrupt(p.read_bytes(), how))
    with pytest.raises(DataError, match=match):
        open_shard(p)


def test_missing_shard(tmp_path):
    with pytest.raises(DataError, match="shard missing"):
        read_header(tmp_path / "nope.bin")


# ---- TokenDataset ------------------------------------------------------------------------------------
def test_dataset_windows_cross_shard_boundaries(tmp_path):
    ds = TokenDataset(make_folder(tmp_path / "d"), "train")
    assert len(ds) == 15 and ds.vocab_size == 100 and ds.split == "train"
    assert np.array_equal(ds.window(0, 15), np.arange(15))
    for start in range(15):
        for length in range(0, 16 - start):
            assert np.array_equal(ds.window(start, length), np.arange(start, start + length)), (start, length)
    with pytest.raises(IndexError):
        ds.window(10, 6)
    with pytest.raises(IndexError):
        ds.window(-1, 2)
    val = TokenDataset(tmp_path / "d", "val")
    assert np.array_equal(val.window(0, 6), np.arange(15, 21))  # val continues the stream
    assert ds.tokenizer.decode([0, 1]) == "\u0100\u0101"
    assert ds.tokenizer_meta["type"] == "char"


def test_dataset_ignores_unlisted_shards(tmp_path):
    d = make_folder(tmp_path / "d")
    write_shard(d / "train_000003.bin", np.arange(50), np.dtype(np.uint16))  # e.g. from an interrupted run
    assert len(TokenDataset(d, "train")) == 15


def _meta_edit(d, fn):
    meta = json.loads((d / "meta.json").read_text())
    fn(meta)
    (d / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage, match", [
    (lambda d: (d / "meta.json").unlink(), "no meta.json"),
    (lambda d: (d / "meta.json").write_text("{not json"), "not valid JSON"),
    (lambda d: _meta_edit(d, lambda m: m.update(format_version=9)), "format version 9"),
    (lambda d: (d / "train_000001.bin").unlink(), "shard missing"),
    (lambda d: (d / "train_000001.bin").write_bytes((d / "train_000001.bin").read_bytes()[:-2]), "damaged"),
    (lambda d: write_shard(d / "train_000001.bin", np.arange(4), np.dtype(np.uint16)), "meta.json lists 3"),
    (lambda d: write_shard(d / "train_000001.bin", np.arange(3), np.dtype(np.uint32)), "meta.json lists 3 uint16"),
    (lambda d: _meta_edit(d, lambda m: m["splits"]["train"]["shards"][0].update(file="../x.bin")), "bad shard name"),
])
def test_dataset_refuses_incomplete_or_damaged_folders(tmp_path, damage, match):
    d = make_folder(tmp_path / "d")
    damage(d)
    with pytest.raises(DataError, match=match):
        TokenDataset(d, "train")


def test_dataset_unknown_and_empty_splits(tmp_path):
    d = make_folder(tmp_path / "d", val_sizes=())
    with pytest.raises(DataError, match="no split 'test'"):
        TokenDataset(d, "test")
    with pytest.raises(DataError, match="val split is empty"):
        TokenDataset(d, "val")
