"""Shard format, TokenDataset and BatchSampler (engine/data/shards.py), on small hand-written folders."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import torch

from tritongpt.engine.data.shards import (
    HEADER_SIZE,
    MAGIC,
    BatchSampler,
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


# ---- BatchSampler ------------------------------------------------------------------------------------
@pytest.fixture
def ds(tmp_path):
    return TokenDataset(make_folder(tmp_path / "d", train_sizes=[400, 250, 333], vocab=1000), "train")


def test_batches_are_shifted_windows(ds):
    s = BatchSampler(ds, batch_size=8, block_size=16, seed=1)
    for _ in range(20):
        x, y = s.next_batch()
        assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
        assert torch.equal(y, x + 1)  # consecutive tokens: y is x shifted by one
        assert int(x.min()) >= 0 and int(y.max()) <= len(ds) - 1
    assert s.batches == 20


def test_sampler_is_deterministic_per_seed(ds):
    a, b, c = (BatchSampler(ds, 4, 8, seed=s) for s in (7, 7, 8))
    xa, xb, xc = ([s.next_batch()[0] for _ in range(5)] for s in (a, b, c))
    assert all(torch.equal(p, q) for p, q in zip(xa, xb, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(xa, xc, strict=True))


def test_resume_continues_exactly(ds):
    ref = BatchSampler(ds, 4, 8, seed=3)
    expected = [ref.next_batch() for _ in range(6)]
    first = BatchSampler(ds, 4, 8, seed=3)
    for _ in range(2):
        first.next_batch()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # the state goes into a checkpoint: plain ints and strings
    buf.seek(0)
    resumed = BatchSampler(ds, 4, 8, seed=3)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for x, y in expected[2:]:
        rx, ry = resumed.next_batch()
        assert torch.equal(rx, x) and torch.equal(ry, y)


@pytest.mark.parametrize("kw", [{"seed": 4}, {"batch_size": 5}, {"block_size": 9}, {"world_size": 2}])
def test_resume_refuses_another_configuration(ds, kw):
    state = BatchSampler(ds, 4, 8, seed=3).state_dict()
    args = {"batch_size": 4, "block_size": 8, "seed": 3, **kw}
    with pytest.raises(ValueError, match=f"{next(iter(kw))} = "):
        BatchSampler(ds, **args).load_state_dict(state)


def test_resume_refuses_other_data(ds, tmp_path):
    state = BatchSampler(ds, 4, 8, seed=3).state_dict()
    other = TokenDataset(make_folder(tmp_path / "e", train_sizes=[400, 250, 334], vocab=1000), "train")
    with pytest.raises(ValueError, match="tokens = 983"):
        BatchSampler(other, 4, 8, seed=3).load_state_dict(state)


def test_ranks_draw_disjoint_streams(ds):
    world = 3
    samplers = [BatchSampler(ds, 16, 8, seed=5, rank=r, world_size=world) for r in range(world)]
    starts = [set(np.concatenate([s.starts(k) for k in range(100)]).tolist()) for s in samplers]
    n_starts = len(ds) - 8
    for r, st in enumerate(starts):
        assert all(v % world == r and 0 <= v < n_starts for v in st)
    assert not (starts[0] & starts[1] or starts[0] & starts[2] or starts[1] & starts[2])
    assert len(set.union(*starts)) > 0.95 * n_starts  # together they cover the whole stream
    # A rank's state restores any rank (ranks draw in lockstep); the rank's own stream continues.
    samplers[0].next_batch()
    samplers[2].load_state_dict(samplers[0].state_dict())
    assert samplers[2].batches == 1 and np.all(samplers[2].starts(1) % world == 2)


def test_fixed_windows(ds):
    a = BatchSampler(ds, 4, 8, seed=1, rank=0, world_size=2)
    b = BatchSampler(ds, 4, 8, seed=99, rank=1, world_size=2)
    xa, ya = a.fixed_windows(10, seed=42)
    xb, yb = b.fixed_windows(10, seed=42)
    assert xa.shape == (10, 8) and torch.equal(xa, xb) and torch.equal(ya, yb)  # same set on every rank
    assert torch.equal(ya, xa + 1) and len(set(xa[:, 0].tolist())) == 10  # distinct windows
    assert not torch.equal(a.fixed_windows(10, seed=43)[0], xa)
    assert a.batches == 0  # evaluation does not move the training stream
    tiny = TokenDataset(make_folder(ds.folder.parent / "t", train_sizes=[12], val_sizes=()), "train")
    assert BatchSampler(tiny, 1, 8, seed=0).fixed_windows(10, seed=0)[0].shape == (10, 8)  # 4 starts: repeats


def test_sampler_errors(ds, tmp_path):
    tiny = TokenDataset(make_folder(tmp_path / "t", train_sizes=[5, 3], val_sizes=()), "train")
    with pytest.raises(DataError, match="8 tokens, fewer than block_size \\+ world_size = 9"):
        BatchSampler(tiny, 1, 8, seed=0)
    BatchSampler(tiny, 1, 7, seed=0).next_batch()  # exactly block_size + 1 tokens: one window
    with pytest.raises(DataError, match="fewer than block_size \\+ world_size = 9"):
        BatchSampler(tiny, 1, 7, seed=0, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank must be in"):
        BatchSampler(ds, 1, 8, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size and block_size"):
        BatchSampler(ds, 0, 8, seed=0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        BatchSampler(ds, 1, 8, seed=-1)
