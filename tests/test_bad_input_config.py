"""Bad configuration and device input: every case is one ``error:`` line naming the key, file or
argument, before any work starts; the shipped configs all still load."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

import pytest
import torch

from tritongpt.engine import GPT, GPTConfig
from tritongpt.engine.cli import main
from tritongpt.engine.devices import resolve_device
from tritongpt.engine.model.config import load_preset, preset_names
from tritongpt.engine.model.weights import CheckpointError
from tritongpt.engine.schema import rules
from tritongpt.engine.train.train_config import TrainConfig, load_run_config

MODEL = "[model]\nblock_size = 16\nn_layer = 1\nn_head = 2\nn_embd = 16\n"
TRAIN = "[train]\nmax_iters = 2\nsample_tokens = 0\nplot = false\n"


def write_config(tmp_path: Path, model: str = MODEL, data: str = "", train: str = TRAIN, top: str = "") -> Path:
    p = tmp_path / "run.toml"
    data = data or f'[data]\ndir = "{(tmp_path / "data").as_posix()}"\n'
    p.write_text(top + model + data + train, encoding="utf-8")
    return p


def run_cli(capsys, *argv) -> str:
    """A failing command: exit 2, one line on stderr, no traceback; returns that line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def train_fails(tmp_path: Path, capsys, cfg: Path, *sets: str) -> str:
    """``train`` refuses ``cfg``: the run folder keeps what it had and gains nothing."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "keep.txt").write_text("mine")
    err = run_cli(capsys, "train", "--config", cfg, "--out", out, "--quiet", *[a for s in sets for a in ("--set", s)])
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    return err


@pytest.mark.parametrize("edit,words", [
    (dict(train=TRAIN.replace("[train]", "[trian]")), ["unknown section [trian]", "did you mean [train]"]),
    (dict(train=TRAIN + "lerning_rate = 1e-3\n"), ["unknown [train] keys", "'lerning_rate'", "did you mean 'lr'"]),
    (dict(train=TRAIN + 'warmup_iters = "ten"\n'), ["train.warmup_iters", "an integer >= 0", "'ten'"]),
    (dict(train=TRAIN + 'ckpt_interval = "often"\n'), ["train.ckpt_interval", "an integer >= 1"]),
    (dict(train=TRAIN + "beta1 = 1.5\n"), ["train.beta1", "in [0, 1)", "1.5"]),
    (dict(train=TRAIN.replace("sample_tokens = 0", "sample_tokens = -5")), ["train.sample_tokens", ">= 0"]),
    (dict(model=MODEL + 'dropout = "x"\n'), ["model.dropout", "a number in [0, 1)"]),
    (dict(train=TRAIN.replace("plot = false", 'plot = "false"')), ["train.plot", "true or false", "without quotes"]),
    (dict(model=MODEL + 'dropout = "0.1"\n'), ["model.dropout", "without quotes"]),
    (dict(train=TRAIN + 'device = "tpu"\n'), ["train.device", "'tpu'", "cuda:N"]),
    (dict(train=TRAIN.replace("max_iters = 2", "max_iters = 1.5")), ["train.max_iters", "an integer", "1.5"]),
    (dict(train=TRAIN + "batch_size = true\n"), ["train.batch_size", "True"]),
    (dict(train=TRAIN + 'backend = "cuda"\n'), ["train.backend", "'auto', 'torch', 'triton'"]),
    (dict(train=TRAIN + 'nan_policy = "maybe"\n'), ["train.nan_policy", "'stop', 'skip'"]),
    (dict(train=TRAIN + 'dtype = "fp16"\n'), ["train.dtype", "'float32', 'bfloat16'"]),
    (dict(train=TRAIN + "compile = 1\n"), ["train.compile", "true or false"]),
    (dict(model=MODEL + "n_layers = 2\n"), ["unknown [model] keys", "did you mean 'n_layer'"]),
    (dict(model=MODEL + "bias = 1\n"), ["model.bias", "true or false"]),
    (dict(model=MODEL.replace("n_embd = 16", "n_embd = 15")), ["model.n_embd", "n_head"]),
    (dict(data='[data]\ndir = "d"\npath = "x"\n'), ["unknown [data] keys", "'path'", "dir"]),
    (dict(top="seed = 3\n"), ["unknown top-level key 'seed'", "[train]"]),
    (dict(top="data = 'x'\n", data="\n"), ["data must be a table"]),
    (dict(model="[model]\npreset = 3\n"), ["model.preset"]),
])
def test_bad_run_config_is_refused_before_work(tmp_path, capsys, edit, words):
    err = train_fails(tmp_path, capsys, write_config(tmp_path, **edit))
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("item,words", [
    ("train.lerning_rate=1e-3", ["--set train.lerning_rate=1e-3", "did you mean 'lr'"]),
    ("train.learning_rate=1e-3", ["did you mean 'lr'"]),
    ("model.n_layr=2", ["unknown [model] keys", "did you mean 'n_layer'"]),
    ("trian.lr=1", ["unknown section 'trian'", "did you mean 'train'"]),
    ("data.path=x", ["data section has only 'dir'"]),
    ('train.warmup_iters="ten"', ["train.warmup_iters", "'ten'"]),
    ("train.plot=yes", ["train.plot", "true or false"]),
    ("train.device=tpu", ["train.device", "'tpu'"]),
])
def test_bad_override_is_refused(tmp_path, capsys, item, words):
    err = train_fails(tmp_path, capsys, write_config(tmp_path), item)
    for w in words:
        assert w in err, err


def test_every_shipped_config_loads():
    root = resources.files("tritongpt.configs")
    names = sorted(e.name for e in root.iterdir() if e.name.endswith(".toml"))
    assert len(names) >= 8
    for name in names:
        path = Path(str(root / name))
        if "train" in load_preset(path):
            run = load_run_config(path)
            GPTConfig.from_dict({"vocab_size": 65, **run.model})
        else:
            assert name[:-5] in preset_names()
            GPTConfig.from_preset(name[:-5])


def test_valid_values_are_normalised(tmp_path):
    train = TRAIN.replace("max_iters = 2", "max_iters = 5e3") + 'lr = 1\nlr_decay_iters = 100\ndevice = "cpu"\n'
    p = write_config(tmp_path, model='[model]\npreset = "tiny"\ndropout = 0\n', train=train)
    run = load_run_config(p, ["train.plot=true", 'train.init_from="x"'])
    t = run.train
    assert (t.max_iters, type(t.max_iters), t.lr, type(t.lr), t.plot, t.init_from) == (5000, int, 1.0, float, True, "x")
    assert run.model["n_layer"] == 2 and TrainConfig(ckpt_interval=None, lr_decay_iters=None).ckpt_interval is None


def test_every_field_has_a_rule():
    assert set(rules(TrainConfig)) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(rules(GPTConfig)) == {f.name for f in dataclasses.fields(GPTConfig)} - {"extra"}


@pytest.mark.parametrize("kw,words", [
    (dict(n_layer=True), "GPTConfig.n_layer"), (dict(n_layer=1.5), "n_layer"), (dict(bias=1), "GPTConfig.bias"),
    (dict(pad_vocab="false"), "pad_vocab"), (dict(dropout="0.1"), "without quotes"), (dict(vocab_size=None), "vocab"),
    (dict(backend="cuda"), "'auto', 'torch', 'triton'"), (dict(layer_norm_eps=float("nan")), "layer_norm_eps"),
])
def test_gptconfig_keywords_follow_the_schema(kw, words):
    with pytest.raises(ValueError, match=words):
        GPTConfig(**kw)


def test_gptconfig_from_dict_and_preset():
    assert GPTConfig(n_layer=2.0, dropout=0).n_layer == 2
    with pytest.raises(ValueError, match="did you mean 'n_layer'"):
        GPTConfig.from_dict({"n_layers": 3})
    assert GPTConfig.from_dict({"n_layers": 3, "n_layer": 2}, strict=False).extra == {"n_layers": 3}
    with pytest.raises(ValueError, match="GPTConfig.dropout"):
        GPTConfig.from_preset("tiny", dropout="0.1")
    with pytest.raises(ValueError, match=r"model\.n_embd: 15 is not divisible"):
        GPTConfig.from_dict({"n_embd": 15, "n_head": 2}, where="model")
    with pytest.raises(ValueError, match="TrainConfig|train.plot"):
        TrainConfig(plot="false")


@pytest.mark.parametrize("key,value", [("vocab_size", "97"), ("n_positions", "32"), ("n_layer", 2.5)])
def test_hf_config_with_wrong_types_names_file_and_key(tmp_path, capsys, key, value):
    folder = tmp_path / "hf"
    GPT(GPTConfig.from_preset("tiny")).save(folder)
    hf = {"vocab_size": 97, "n_positions": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, key: value}
    (folder / "config.json").write_text(json.dumps(hf))
    with pytest.raises(CheckpointError, match=f"config.json: {key}: expected an integer"):
        GPT.from_pretrained(folder)
    err = run_cli(capsys, "generate", "--hf-dir", folder, "--prompt", "hi", "--device", "cpu")
    assert str(folder / "config.json") in err and key in err


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("device,words", [
    ("cuda", "--device cuda: CUDA is not available on this machine (available: cpu)"),
    ("cuda:3", "--device cuda:3: CUDA is not available"),
    ("mps", "--device mps: MPS (Apple GPU) is not available on this machine (available: cpu)"),
    ("tpu", "--device tpu: unknown device; expected auto, cpu, cuda, cuda:N or mps (available: cpu)"),
])
def test_generate_device_without_it(tmp_path, capsys, no_gpu, device, words):
    err = run_cli(capsys, "generate", "--preset", "tiny", "--prompt", "hi", "--device", device)
    assert words in err, err


@pytest.mark.parametrize("device,words", [("cuda", "train.device cuda: CUDA is not available"),
                                          ("mps", "train.device mps: MPS")])
def test_train_device_without_it(tmp_path, capsys, no_gpu, device, words):
    err = train_fails(tmp_path, capsys, write_config(tmp_path), f"train.device={device}")
    assert words in err and "(available: cpu)" in err, err


def test_missing_gpu_index(tmp_path, capsys, two_gpus):
    with pytest.raises(ValueError, match=r"--device cuda:3: no cuda:3 .* has 2 CUDA devices \(available: cpu, "
                                         r"cuda:0, cuda:1\)"):
        resolve_device("cuda:3", "--device")
    with pytest.raises(ValueError, match="train.device cuda: no cuda:2"):
        resolve_device("cuda", "train.device", local_rank=2)
    err = train_fails(tmp_path, capsys, write_config(tmp_path), "train.device=cuda:3")
    assert "train.device cuda:3: no cuda:3" in err, err


def test_resolve_device_valid(monkeypatch, two_gpus):
    assert resolve_device("cuda:1", "--device") == torch.device("cuda:1")
    assert resolve_device("cuda", "train.device", local_rank=1) == torch.device("cuda:1")
    assert resolve_device(None, "--device") == torch.device("cuda")  # generate: the current GPU, as before
    assert resolve_device("auto", "train.device", local_rank=0) == torch.device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None, "--device") == resolve_device("cpu", "x") == torch.device("cpu")
