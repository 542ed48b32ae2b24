"""`make demo`'s job end to end, shortened: prepare Shakespeare, train a few steps, sample."""

from __future__ import annotations

import pytest

from tritongpt.engine import assets
from tritongpt.engine.cli import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    try:
        assets.fetch_shakespeare(quiet=True)
    except assets.AssetError as e:  # pragma: no cover - offline without the cached corpus
        pytest.skip(f"Shakespeare corpus unavailable: {e}")
    code = main(["demo", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "data"), "--iters", "12"])
    assert code == 0
    out = capsys.readouterr().out
    assert "== result: val loss" in out and "ROMEO:" in out
    assert (tmp_path / "run" / "loss.png").exists() and (tmp_path / "run" / "metrics.jsonl").exists()
