"""Hugging Face GPT-2 parity and checkpoint safety."""

import json

import pytest
import torch

from tritongpt.engine import GPT, CheckpointError, GPTConfig

transformers = pytest.importorskip("transformers")


def _hf_model(n_embd: int, n_head: int, n_layer: int = 2, vocab: int = 101, n_pos: int = 40):
    cfg = transformers.GPT2Config(
        vocab_size=vocab, n_positions=n_pos, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    torch.manual_seed(n_embd + n_head)
    m = transformers.GPT2LMHeadModel(cfg).eval()
    # Random non-trivial LayerNorm parameters and biases, so the loader is tested on them too.
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.normal_(0, 0.1).add_(1.0 if name.endswith("weight") else 0.0)
    return m


# head dims 16, 12 (not a power of two), 20, 40
@pytest.mark.latest
@pytest.mark.parametrize("n_embd,n_head", [(64, 4), (48, 4), (60, 3), (80, 2)])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_hf_parity(tmp_path, n_embd, n_head, fmt):
    hf = _hf_model(n_embd, n_head)
    if fmt == "safetensors":
        hf.save_pretrained(tmp_path)
    else:  # transformers 5 writes only safetensors; the .bin layout is the same state dict pickled
        hf.config.save_pretrained(tmp_path)
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert not (tmp_path / ("pytorch_model.bin" if fmt == "safetensors" else "model.safetensors")).exists()
    ours = GPT.from_pretrained(tmp_path).eval()
    idx = torch.randint(0, 101, (3, 37))
    with torch.no_grad():
        ref = hf(idx).logits
        got = ours(idx)
    assert (got - ref).abs().max().item() < 1e-4


def test_hf_into_padded_model(tmp_path):
    hf = _hf_model(64, 4)
    hf.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(tmp_path, pad_vocab=True).eval()
    assert ours.transformer.wte.weight.shape[0] == 128
    idx = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max().item() < 1e-4


def test_own_checkpoint_round_trip(tmp_path):
    m = GPT(GPTConfig.from_preset("tiny", pad_vocab=True))
    m.save(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert meta["format"] == "tritongpt"
    m2 = GPT.from_pretrained(tmp_path / "ckpt")
    assert m2.config.to_dict() == m.config.to_dict()
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert m2.lm_head.weight.data_ptr() == m2.transformer.wte.weight.data_ptr()
    # Saving again over an existing checkpoint replaces it whole and leaves no temp files.
    m.save(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_shape_mismatch_names_the_tensor(tmp_path):
    GPT(GPTConfig.from_preset("tiny")).save(tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    cfg["model"]["n_embd"] = 64
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"transformer\.\S+ has shape"):
        GPT.from_pretrained(tmp_path / "c")


def test_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    GPT(GPTConfig.from_preset("tiny")).save(tmp_path / "c")
    sd = load_file(str(tmp_path / "c" / "model.safetensors"))
    del sd["transformer.h.1.mlp.c_fc.bias"]
    save_file(sd, str(tmp_path / "c" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"h\.1\.mlp\.c_fc\.bias"):
        GPT.from_pretrained(tmp_path / "c")


def test_damaged_safetensors(tmp_path):
    GPT(GPTConfig.from_preset("tiny")).save(tmp_path / "c")
    f = tmp_path / "c" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        GPT.from_pretrained(tmp_path / "c")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    hf = _hf_model(64, 4)
    hf.config.save_pretrained(tmp_path)
    torch.save({"x": _Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights-only"):
        GPT.from_pretrained(tmp_path)
    assert "must never run" not in capsys.readouterr().out


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a folder"):
        GPT.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="config.json"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="JSON"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"n_layer": 1}))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        GPT.from_pretrained(tmp_path)
