"""Bad input to training and weight loading (issue 14): one clear line, nothing on disk lost, no silent
wrong answer. Token ids out of range, file-system errors, damaged checkpoints, resume edge cases, batch
and warmup warnings."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tritongpt.engine.cli import main
from tritongpt.engine.data import DataError, TokenDataset, check_shard_ids
from tritongpt.engine.fsutil import recover_leftovers
from tritongpt.engine.model import GPT
from tritongpt.engine.model.config import GPTConfig
from tritongpt.engine.model.weights import CheckpointError
from tritongpt.engine.train import run_warnings
from tritongpt.engine.train.train_config import TrainConfig

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 12

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
batch_size = 2
max_iters = 4
warmup_iters = 1
eval_interval = 2
eval_iters = 1
sample_tokens = 0
backend = "torch"
plot = false
"""


@pytest.fixture(scope="module")
def data(prepare_char) -> Path:
    return prepare_char(TEXT)


@pytest.fixture(scope="module")
def done_run(tmp_path_factory, data) -> Path:
    """A finished 4-step run with checkpoints at steps 2 and 4; tests copy it before damaging it."""
    root = tmp_path_factory.mktemp("done")
    assert train(cfg_file(root, data), root / "run") == 0
    return root / "run"


def cfg_file(tmp_path: Path, data: Path) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(CONFIG.format(data=data))
    return p


def train(cfg: Path, out: Path, *extra: str) -> int:
    return main(["train", "--config", str(cfg), "--out", str(out), "--quiet", *extra])


def copy_run(done_run: Path, tmp_path: Path) -> Path:
    shutil.copytree(done_run, tmp_path / "run")
    return tmp_path / "run"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(line) == 1, err
    for w in words:
        assert w in line[0], line[0]
    return line[0]


def put_nan(f: Path, name: str, value: float = float("nan")) -> None:
    sd = load_file(str(f))
    sd[name].view(-1)[3] = value
    save_file(sd, str(f), metadata={"format": "tritongpt"})


# ---- 8: token ids are range-checked -----------------------------------------------------------


def test_shard_id_outside_the_vocabulary_is_named(tmp_path, data, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    shard = bad / "val_000000.bin"
    m = np.memmap(shard, dtype="<u2", mode="r+", offset=256)
    m[7] = 60000
    m.flush()
    del m
    assert train(cfg_file(tmp_path, data), tmp_path / "run", "--set", f'data.dir="{bad}"') == 2
    one_error_line(capsys, "val_000000.bin", "60000", "token 7")
    assert not (tmp_path / "run").exists()


def test_shard_scan_is_chunked_and_finds_the_first_bad_id():
    tokens = np.arange(100, dtype=np.uint16) % 10
    tokens[57], tokens[90] = 12, 11
    check_shard_ids(Path("s.bin"), tokens[:50], 10, chunk=8)
    with pytest.raises(DataError, match=r"s\.bin: token 57 has id 12"):
        check_shard_ids(Path("s.bin"), tokens, 10, chunk=8)


def test_model_vocab_smaller_than_the_data_is_refused(tmp_path, data, capsys):
    assert train(cfg_file(tmp_path, data), tmp_path / "run", "--set", "model.vocab_size=20") == 2
    one_error_line(capsys, "model.vocab_size", "20", "meta.json")
    ds = TokenDataset(data, "train")
    ds.check_vocab(ds.vocab_size + 20)  # a larger (preset) vocabulary is fine
    meta = json.loads((data / "meta.json").read_text())
    ds.meta = {**meta, "vocab_size": 5}  # the tokenizer's own size counts too
    with pytest.raises(DataError, match=f"smaller than the data's vocabulary of {len(meta['tokenizer']['chars'])}"):
        ds.check_vocab(20)


@pytest.mark.parametrize("idx,targets,match", [
    ([[1, 2, 50]], None, "idx: token id 50"),
    ([[1, -3, 2]], None, "idx: token id -3"),
    ([[1, 2, 3]], [[1, 2, 50]], "targets: token id 50"),
])
def test_forward_checks_the_id_range(idx, targets, match):
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16, backend="torch"))
    t = torch.tensor(targets) if targets is not None else None
    with pytest.raises(ValueError, match=match):
        model(torch.tensor(idx), t)
    model(torch.tensor([[0, 49, 3]]), torch.tensor([[49, -1, -100]]))  # the edges and ignored (negative) targets pass


# ---- 10: file-system errors --------------------------------------------------------------------


@pytest.mark.parametrize("out,match", [("afile/run", "afile is a file"), ("afile", "exists and is not a folder")])
def test_out_that_cannot_be_a_folder(tmp_path, data, capsys, out, match):
    (tmp_path / "afile").write_text("keep me")
    assert train(cfg_file(tmp_path, data), tmp_path / out) == 2
    one_error_line(capsys, "--out", match)
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize("args,words", [
    (["--set", 'data.dir="{tmp}/nodata"'], ["nodata", "no meta.json"]),
    (["--set", 'train.init_from="{tmp}/nockpt"'], ["nockpt", "not a folder"]),
    (["--config", "{tmp}/none.toml"], ["none.toml", "No such file"]),
])
def test_missing_files_are_named(tmp_path, data, capsys, args, words):
    cfg = cfg_file(tmp_path, data)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet",
                 *(a.format(tmp=tmp_path) for a in args)]) == 2
    one_error_line(capsys, *words)
    assert not (tmp_path / "run").exists()


def test_disk_full_during_save_leaves_no_half_checkpoint(tmp_path, data, capsys, monkeypatch):
    real, calls = torch.save, []

    def save(obj, f, *a, **k):
        calls.append(f)
        if len(calls) == 2:
            Path(f).write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    assert train(cfg_file(tmp_path, data), tmp_path / "run") == 2
    one_error_line(capsys, "step_00000004", "No space left on device", "newest complete checkpoint is step_00000002")
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_00000002"]
    monkeypatch.setattr(torch, "save", real)
    assert train(cfg_file(tmp_path, data), tmp_path / "run", "--resume") == 0  # the step-2 checkpoint is whole


def test_interrupted_save_leftovers_are_cleared(tmp_path, done_run, data, capsys):
    run = copy_run(done_run, tmp_path)
    root = run / "checkpoints"
    (root / ".step_00000006.x1y2.tmp").mkdir()
    (root / ".step_00000006.x1y2.tmp" / "model.safetensors").write_bytes(b"\0" * 1000)
    (root / "step_00000004").rename(root / ".step_00000004.old-4242")  # killed between the two renames
    (run / ".metrics.jsonl.ab12.tmp").write_text("partial")
    assert train(cfg_file(tmp_path, data), run, "--resume", "--set", "train.max_iters=6") == 0
    err = capsys.readouterr().err
    assert "restored" in err and "removed" in err and "Traceback" not in err
    names = sorted(p.name for p in root.iterdir())
    assert names == ["step_00000004", "step_00000006"]  # resumed from the restored step 4
    assert not list(run.glob(".*"))
    assert recover_leftovers(root) == []


# ---- 11 / 12: damaged checkpoints are refused at load ---------------------------------------------


@pytest.mark.parametrize("damage,words", [
    (lambda d: {**d, "model": "oops"}, ["config.json", "'oops'"]),
    (lambda d: [1, 2], ["config.json", "JSON object"]),
    (lambda d: "{broken", ["config.json", "JSON"]),
])
def test_damaged_config_json_is_named(tmp_path, done_run, data, capsys, damage, words):
    run = copy_run(done_run, tmp_path)
    for step in (2, 4):  # every checkpoint damaged: nothing to fall back to
        f = run / "checkpoints" / f"step_{step:08d}" / "config.json"
        new = damage(json.loads(f.read_text()))
        f.write_text(new if isinstance(new, str) else json.dumps(new))
    before = snapshot(run)
    assert train(cfg_file(tmp_path, data), run, "--resume", "--set", "train.max_iters=6") == 2
    one_error_line(capsys, "no intact checkpoint", "step_00000004", *words)
    assert snapshot(run) == before
    with pytest.raises(CheckpointError, match="config.json"):
        GPT.from_pretrained(run / "checkpoints" / "step_00000004")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load(tmp_path, done_run, value):
    ckpt = copy_run(done_run, tmp_path) / "checkpoints" / "step_00000004"
    put_nan(ckpt / "model.safetensors", "transformer.h.0.mlp.c_fc.weight", value)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor transformer\.h\.0\.mlp\.c_fc\.weight has"):
        GPT.from_pretrained(ckpt)


def test_non_finite_hugging_face_weights_are_refused(tmp_path):
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # (in, out) in HF
    model = GPT(GPTConfig(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=16))
    sd = {k: (v.t() if k.endswith(conv1d) else v).contiguous() for k, v in model.state_dict().items()
          if k != "lm_head.weight"}
    sd["transformer.h.0.ln_2.bias"][1] = float("inf")
    save_file(sd, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 40, "n_positions": 8, "n_layer": 1,
                                                      "n_head": 2, "n_embd": 16}))
    with pytest.raises(CheckpointError, match=r"tensor transformer\.h\.0\.ln_2\.bias has 0 NaN and 1 Inf"):
        GPT.from_pretrained(tmp_path)


def test_init_from_non_finite_checkpoint(tmp_path, done_run, data, capsys):
    ckpt = copy_run(done_run, tmp_path) / "checkpoints" / "step_00000004"
    put_nan(ckpt / "model.safetensors", "transformer.wte.weight")
    assert train(cfg_file(tmp_path, data), tmp_path / "new", "--set", f'train.init_from="{ckpt}"') == 2
    one_error_line(capsys, "model.safetensors", "transformer.wte.weight", "NaN")


# ---- 13: resume ---------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["nan_weights", "nan_optimizer", "junk_trainer"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, done_run, data, capsys, damage):
    run = copy_run(done_run, tmp_path)
    newest = run / "checkpoints" / "step_00000004"
    if damage == "nan_weights":
        put_nan(newest / "model.safetensors", "transformer.h.0.attn.c_attn.weight")
    elif damage == "nan_optimizer":
        st = torch.load(newest / "trainer.pt", weights_only=True)
        st["optimizer"]["state"][0]["exp_avg"].view(-1)[0] = float("nan")
        torch.save(st, newest / "trainer.pt")
    else:
        (newest / "trainer.pt").write_bytes(b"\0junk")
    damaged = snapshot(newest)
    assert train(cfg_file(tmp_path, data), run, "--resume", "--set", "train.max_iters=6") == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "step_00000004" in err and "resuming from the older step_00000002" in err
    kept = run / "checkpoints" / "step_00000004.damaged"
    assert snapshot(kept) == damaged  # set aside, not lost
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_nan_before_any_checkpoint_claims_none(tmp_path, data, capsys, monkeypatch):
    orig = GPT.forward

    def forward(self, idx, targets=None, **kw):
        out = orig(self, idx, targets, **kw)
        return (out[0], out[1] * float("nan")) if targets is not None and self.training else out

    monkeypatch.setattr(GPT, "forward", forward)
    assert train(cfg_file(tmp_path, data), tmp_path / "run") == 2
    line = one_error_line(capsys, "non-finite training loss", "no checkpoint of this run exists yet")
    assert "step 0) is intact" not in line


def test_resume_at_max_iters_says_nothing_to_do(tmp_path, done_run, data, capsys):
    run = copy_run(done_run, tmp_path)
    before = snapshot(run)
    assert train(cfg_file(tmp_path, data), run, "--resume") == 0
    err = capsys.readouterr().err
    assert "nothing to do" in err and "step 4 >= train.max_iters = 4" in err and "train.max_iters=" in err
    assert snapshot(run) == before


# ---- 14: batch and warmup warnings -------------------------------------------------------------


def test_batch_and_warmup_warnings(tmp_path, data, capsys):
    val_tokens = len(TokenDataset(data, "val"))
    t = TrainConfig(batch_size=val_tokens // 16 + 1, warmup_iters=10, max_iters=4)
    lines = run_warnings(t, 16, 1, {"train": 10**6, "val": val_tokens})
    assert len(lines) == 2 and "val split" in lines[0] and "warmup_iters = 10" in lines[1]
    assert run_warnings(TrainConfig(batch_size=2, warmup_iters=1, max_iters=4), 16, 1, {"val": val_tokens}) == []
    assert train(cfg_file(tmp_path, data), tmp_path / "run", "--set", f"train.batch_size={t.batch_size}",
                 "--set", "train.warmup_iters=10", "--set", "train.max_iters=2") == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 2
    assert "drawn with replacement" in warnings[0] and "never reaches train.lr" in warnings[1]
