"""Epoch sampling (engine/data/epoch_sampling.py, train.sampling = "epoch"): coverage, seeding, resume, DDP
slices, run length from epochs, the untouched random default, bad input, and one short training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tritongpt.engine.cli import main
from tritongpt.engine.data import DataError, TokenDataset
from tritongpt.engine.data.epoch_sampling import EpochSampler, epoch_sampler, steps_for_epochs, window_count
from tritongpt.engine.train import batch_rows, batch_source, run_warnings
from tritongpt.engine.train.train_config import TrainConfig, load_run_config

# (tokens, block_size, stride, batch_size, world_size, grad_accum)
COMBOS = [
    (100, 8, 8, 3, 1, 1),  # the default stride: inputs tile the text
    (100, 8, 3, 4, 2, 1),  # stride < block: overlapping windows
    (101, 8, 13, 2, 3, 2),  # stride > block: tokens skipped
    (9, 8, 8, 2, 1, 1),  # exactly one window: every sample is that window
    (50, 4, 1, 5, 2, 3),  # every start; a step holds 30 of the 46 windows
]


def expected_starts(n: int, block: int, stride: int) -> list[int]:
    """Brute force: every s = 0, stride, ... with s + block + 1 <= n."""
    return [s for s in range(0, n, stride) if s + block + 1 <= n]


def all_samples(s: EpochSampler, steps: range) -> tuple[np.ndarray, np.ndarray]:
    """(positions, starts) of every sample of ``steps``, in step, micro, rank order."""
    pos, st = [], []
    for step in steps:
        for micro in range(s.grad_accum):
            for rank in range(s.world_size):
                pos.append(s.positions(step, micro, rank))
                st.append(s.starts(step, micro, rank))
    return np.concatenate(pos), np.concatenate(st)


@pytest.mark.parametrize("n,block,stride,batch,world,accum", COMBOS)
def test_each_window_once_per_epoch(n, block, stride, batch, world, accum):
    s = EpochSampler(n, block, stride, seed=3, batch_size=batch, world_size=world, grad_accum=accum)
    want = expected_starts(n, block, stride)
    assert s.windows == window_count(n, block, stride) == len(want)
    steps = -(-3 * s.windows // s.global_batch)  # three whole epochs
    pos, starts = all_samples(s, range(steps))
    assert np.array_equal(pos, np.arange(steps * s.global_batch))  # positions follow the step, gap-free
    for e in range(3):
        epoch = starts[e * s.windows: (e + 1) * s.windows]
        assert sorted(epoch.tolist()) == want  # every window once: none missed, none repeated
        assert np.array_equal(epoch, s.order(e) * stride)


def test_a_batch_crossing_an_epoch_takes_tail_then_head():
    s = EpochSampler(89, 8, 8, seed=1, batch_size=5)  # 11 windows: batch 2 holds 10 | 11..14
    assert s.windows == 11
    got = s.starts(2)
    assert got.tolist() == [s.order(0)[10] * 8, *(s.order(1)[:4] * 8)]


def test_orders_by_seed_and_epoch():
    a, b, c = (EpochSampler(10_000, 8, 4, seed=seed, batch_size=2) for seed in (5, 5, 6))
    assert not np.array_equal(a.order(0), a.order(1))  # a new shuffle every epoch
    assert np.array_equal(a.order(3), b.order(3))  # same (seed, epoch), same order, on a fresh sampler
    assert not np.array_equal(a.order(3), c.order(3))
    assert np.array_equal(a.order(0), np.random.default_rng([5, 0]).permutation(a.windows))


def test_resume_draws_the_same_batches():
    """A batch is a function of its step: a sampler made afresh at step k (a restart) continues exactly."""
    args = dict(n_tokens=500, block_size=8, stride=5, seed=2, batch_size=4, world_size=2, grad_accum=2)
    ref = EpochSampler(**args)
    whole = [ref.starts(step, m, r) for step in range(40) for m in range(2) for r in range(2)]
    restarted = EpochSampler(**args)
    tail = [restarted.starts(step, m, r) for step in range(17, 40) for m in range(2) for r in range(2)]
    assert all(np.array_equal(p, q) for p, q in zip(whole[17 * 4:], tail, strict=True))


def test_ranks_split_the_global_batch():
    """Each rank's slice is disjoint from the others', and together they are what one process with the
    same global batch draws (so DDP and a single process see the same rows)."""
    world, B = 3, 4
    ranks = EpochSampler(400, 8, 3, seed=9, batch_size=B, world_size=world, grad_accum=2)
    single = EpochSampler(400, 8, 3, seed=9, batch_size=B * world, grad_accum=2)
    for step in range(0, 60, 7):
        for micro in range(2):
            pos = [ranks.positions(step, micro, r) for r in range(world)]
            assert len(set(np.concatenate(pos).tolist())) == B * world  # disjoint
            assert np.array_equal(np.concatenate(pos), single.positions(step, micro))
            merged = np.concatenate([ranks.starts(step, micro, r) for r in range(world)])
            assert np.array_equal(merged, single.starts(step, micro))


def test_loop_batch_source_follows_the_sampler():
    t = TrainConfig(sampling="epoch", stride=5, batch_size=3, grad_accum=2, seed=4)
    s = epoch_sampler(t, 300, 8, world_size=2)
    assert s.stride == 5 and s.global_batch == 12
    draw = batch_source(t, 300, 8, world=2, rank=1, sampler=s)
    assert torch.equal(draw(6, 1), torch.from_numpy(s.starts(6, 1, rank=1)))
    assert epoch_sampler(TrainConfig(sampling="epoch"), 300, 8, 1).stride == 8  # unset: block_size
    assert epoch_sampler(TrainConfig(), 300, 8, 1) is None


def test_epochs_set_the_run_length():
    assert steps_for_epochs(1, 10, 4) == 3 and steps_for_epochs(2, 10, 4) == 5 and steps_for_epochs(3, 7, 7) == 3
    s = EpochSampler(1000, 16, 16, seed=0, batch_size=4, world_size=2, grad_accum=3)  # 62 windows, 24 a step
    assert s.windows == 62 and s.steps_for(2) == 6  # ceil(124 / 24)
    assert s.epoch_at(6) == pytest.approx(144 / 62)


def test_random_default_is_unchanged():
    t = TrainConfig(batch_size=3, seed=7)
    assert (t.sampling, t.stride, t.epochs) == ("random", None, None)
    # The pinned values are what batch_rows drew before epoch sampling existed.
    assert batch_rows(1000, 16, 6, seed=7, step=3, micro=1).tolist() == [883, 345, 602, 733, 371, 608]
    for rank in (0, 1):
        draw = batch_source(t, 1000, 16, world=2, rank=rank)
        assert draw(3, 1).tolist() == [883, 345, 602, 733, 371, 608][rank * 3: rank * 3 + 3]


def test_too_short_for_one_window():
    with pytest.raises(DataError, match=r"train.sampling = \"epoch\".*8 tokens, fewer than block_size \+ 1 = 9"):
        EpochSampler(8, 8, 8, seed=0, batch_size=1)
    assert EpochSampler(9, 8, 8, seed=0, batch_size=1).windows == 1


def test_epoch_warning_when_a_step_exceeds_an_epoch():
    t = TrainConfig(sampling="epoch", batch_size=4, grad_accum=2, warmup_iters=0)
    assert run_warnings(t, 16, 1, {"train": 16 * 8 + 1}) == []  # 8 windows, 8 a step
    (line,) = run_warnings(t, 16, 1, {"train": 16 * 7 + 1})
    assert "exceeds the 7 windows of an epoch" in line and "train.stride = 16" in line


# ---- config ----------------------------------------------------------------------------------------
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 30

CONFIG = """
[model]
block_size = 16
n_layer = 1
n_head = 2
n_embd = 32
dropout = 0.0

[data]
dir = "{data}"

[train]
batch_size = 8
warmup_iters = 1
lr_decay_iters = 40  # a run cut short keeps the schedule of the whole run
eval_interval = 4
eval_iters = 1
sample_tokens = 0
backend = "torch"
plot = false
sampling = "epoch"
stride = 48
"""


@pytest.fixture(scope="module")
def data(prepare_char) -> Path:
    return prepare_char(TEXT)


def write_config(tmp_path: Path, data: Path, extra: str = "") -> Path:
    p = tmp_path / "run.toml"
    p.write_text(CONFIG.format(data=data.as_posix()) + extra)
    return p


def test_config_reads_sampling_stride_epochs(tmp_path, data):
    t = load_run_config(write_config(tmp_path, data, "epochs = 2\n")).train
    assert (t.sampling, t.stride, t.epochs) == ("epoch", 48, 2)
    assert load_run_config(write_config(tmp_path, data), ["train.stride=3"]).train.stride == 3
    plain = write_config(tmp_path, data).read_text().replace('sampling = "epoch"\nstride = 48\n', "")
    (tmp_path / "plain.toml").write_text(plain)
    assert load_run_config(tmp_path / "plain.toml", ["train.sampling=epoch"]).train.sampling == "epoch"


@pytest.mark.parametrize("sets,words", [
    (["train.stride=0"], ["train.stride", "an integer >= 1", "got 0"]),
    (["train.sampling=shuffle"], ["train.sampling", "'random', 'epoch'", "'shuffle'"]),
    (["train.sampling=random"], ["train.stride", "only used with train.sampling = \"epoch\""]),
    (["train.epochs=0"], ["train.epochs", ">= 1"]),
    (["train.epochs=2", "train.max_iters=10"], ["train.epochs", "train.max_iters is set too", "remove one"]),
])
def test_bad_settings_are_one_error_line(tmp_path, data, capsys, sets, words):
    cfg = write_config(tmp_path, data)
    rc = main(["train", "--config", str(cfg), "--out", str(tmp_path / "out"), "--quiet",
               *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


def test_epochs_without_epoch_sampling_is_refused():
    with pytest.raises(ValueError, match=r"train.epochs: only used with train.sampling = \"epoch\""):
        TrainConfig(epochs=2)


# ---- one short run ---------------------------------------------------------------------------------
def test_train_one_epoch_covers_every_window(tmp_path, data, monkeypatch, capsys):
    from tritongpt.engine.train import train_loop

    seen: list[int] = []
    get = train_loop.Windows.get

    def record(self, starts, device):
        if self.ds.split == "train":
            seen.extend(starts.tolist())
        return get(self, starts, device)

    monkeypatch.setattr(train_loop.Windows, "get", record)
    cfg = write_config(tmp_path, data, "epochs = 2\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    n = len(TokenDataset(data, "train"))
    W = window_count(n, 16, 48)
    steps = -(-2 * W // 8)
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, steps + 1))
    assert recs[-1]["epoch"] == pytest.approx(steps * 8 / W) and recs[-1]["epoch"] >= 2
    assert f"-> {steps} steps" in capsys.readouterr().out
    want = expected_starts(n, 16, 48)
    assert sorted(seen[:W]) == want and sorted(seen[W: 2 * W]) == want and seen[:W] != seen[W: 2 * W]
    run_cfg = json.loads((tmp_path / "run" / "checkpoints" / f"step_{steps:08d}" / "config.json").read_text())
    assert run_cfg["run"]["train"]["max_iters"] == steps  # the derived length is recorded
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 0
    assert "--set train.epochs=N" in capsys.readouterr().err  # nothing to do: raise epochs, not max_iters


def test_epoch_run_resumes_exactly(tmp_path, data):
    cfg = write_config(tmp_path, data, "max_iters = 6\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "full"), "--quiet"]) == 0
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "cut"), "--quiet",
                 "--set", "train.max_iters=3", "--set", "train.ckpt_interval=3"]) == 0
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "cut"), "--quiet", "--resume"]) == 0

    def records(out: Path) -> list[dict]:
        return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]

    full, cut = records(tmp_path / "full"), records(tmp_path / "cut")
    strip = [{k: r[k] for k in ("step", "train_loss", "epoch")} for r in full]
    assert [{k: r[k] for k in ("step", "train_loss", "epoch")} for r in cut] == strip
