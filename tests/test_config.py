import pytest
import torch

from tritongpt.engine import GPT, GPTConfig
from tritongpt.engine.model.config import load_preset, preset_names


def _count(name: str, **kw) -> int:
    with torch.device("meta"):
        return GPT(GPTConfig.from_preset(name, **kw)).num_parameters()


def test_presets_exist():
    names = preset_names()
    for n in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "tiny", "cpu-demo"):
        assert n in names


def test_gpt2_has_exactly_124439808_parameters():
    with torch.device("meta"):
        m = GPT.from_preset("gpt2")
    assert m.num_parameters() == 124_439_808
    # Unpadded: a plain count of unique parameters agrees.
    assert sum(p.numel() for p in m.parameters()) == 124_439_808


def test_padding_does_not_change_parameter_count():
    assert _count("gpt2", pad_vocab=True) == 124_439_808
    with torch.device("meta"):
        m = GPT.from_preset("gpt2", pad_vocab=True)
    assert m.transformer.wte.weight.shape[0] == 50304


@pytest.mark.parametrize("name,count", [("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080),
                                        ("gpt2-xl", 1_557_611_200)])
def test_larger_presets_match_published_sizes(name, count):
    assert _count(name) == count


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(n_embd=100, n_head=3), "not divisible"),
        (dict(n_layer=0), "n_layer"),
        (dict(dropout=1.0), "dropout"),
        (dict(backend="cuda"), "backend"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps"),
        (dict(vocab_size=2.5), "vocab_size"),
    ],
)
def test_invalid_config_is_rejected(kw, msg):
    with pytest.raises(ValueError, match=msg):
        GPTConfig(**kw)


def test_unknown_preset_lists_available():
    with pytest.raises(ValueError, match="gpt2-medium"):
        GPTConfig.from_preset("gpt3")


def test_unknown_key_is_rejected():
    with pytest.raises(ValueError, match="unknown keys"):
        GPTConfig.from_dict({"n_layers": 3})


def test_preset_file_by_path(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text("[model]\nn_layer = 1\nn_head = 1\nn_embd = 8\nvocab_size = 11\nblock_size = 4\n")
    cfg = GPTConfig.from_preset(str(p))
    assert (cfg.n_layer, cfg.vocab_size) == (1, 11)
    assert load_preset("tiny")["model"]["vocab_size"] == 97


def test_config_json_round_trip():
    cfg = GPTConfig.from_preset("tiny", pad_vocab=True)
    import json

    assert GPTConfig.from_dict(json.loads(cfg.to_json())) == cfg
