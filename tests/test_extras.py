"""Optional dependencies live in extras (``serve``, ``bench``, ``data``): a command whose extra is missing says
which one to install, in one line, instead of a traceback. Missing packages are simulated with a None entry in
``sys.modules`` (what Python's import system reads as "not importable")."""

from __future__ import annotations

import string
import sys

import pytest

from tritongpt.engine.cli import main
from tritongpt.engine.data.tokenizer import CharTokenizer


def _hide(monkeypatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _forget(monkeypatch, *modules: str) -> None:
    for name in modules:  # imported by earlier tests: import them afresh, so the hidden package is looked up
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_serve_names_the_serve_extra(tmp_path, monkeypatch, capsys):
    tok = CharTokenizer(sorted(set(string.ascii_lowercase + " ")))
    path = tok.save(tmp_path / "tok.json")
    _forget(monkeypatch, "tritongpt.engine.generation.serving.server", "tritongpt.engine.generation.serving.app")
    _hide(monkeypatch, "uvicorn", "fastapi")
    assert main(["serve", "--preset", "tiny", "--tokenizer", str(path)]) == 2
    err = capsys.readouterr().err
    assert "needs the 'serve' extra" in err and "pip install 'tritongpt[serve]'" in err and "Traceback" not in err


def test_bench_compare_names_the_bench_extra(monkeypatch):
    from tritongpt.bench.compare import compare

    _hide(monkeypatch, "scipy", "scipy.stats")
    with pytest.raises(ValueError, match=r"needs the 'bench' extra \(scipy"):
        compare({}, {})


def test_prepare_zst_names_the_data_extra(tmp_path, monkeypatch, capsys):
    zstandard = pytest.importorskip("zstandard")
    src = tmp_path / "a.jsonl.zst"
    src.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "hello"}\n'))
    _hide(monkeypatch, "zstandard")
    assert main(["prepare", "--source", str(src), "--out", str(tmp_path / "out"), "--tokenizer", "char",
                 "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "needs the 'data' extra" in err and "tritongpt[data]" in err
    assert not (tmp_path / "out" / "meta.json").exists()
