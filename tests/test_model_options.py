"""GPTConfig's qkv_bias and tie_embeddings, negative targets, and Hub model ids in from_pretrained."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from tritongpt.engine import GPT, CheckpointError, GPTConfig, KVCache
from tritongpt.engine.model.weights import to_hf


def small(**kw) -> GPT:
    cfg = dict(vocab_size=61, block_size=16, n_layer=2, n_head=2, n_embd=32, backend="torch")
    return GPT(GPTConfig(**{**cfg, **kw}))


def randomised(model: GPT) -> GPT:
    """Non-trivial LayerNorm parameters and biases, so every tensor matters in a comparison."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                p.normal_(0, 0.1).add_(1.0 if name.endswith("weight") else 0.0)
    return model


# ---- parameter counts and configuration ------------------------------------------------------------


def _count(**kw) -> int:
    with torch.device("meta"):
        return GPT(GPTConfig(**kw)).num_parameters()


def test_parameter_counts_at_the_124m_shape():
    assert _count() == 124_439_808
    assert _count(qkv_bias=False, tie_embeddings=False) == 163_009_536
    # Padded rows are left out of both vocabulary matrices of an untied model.
    assert _count(qkv_bias=False, tie_embeddings=False, pad_vocab=True) == 163_009_536
    assert _count(tie_embeddings=False) - _count() == 50257 * 768
    assert _count() - _count(qkv_bias=False) == 12 * 3 * 768


def test_flops_count_the_untied_head_once():
    with torch.device("meta"):
        tied, untied = GPT(GPTConfig()), GPT(GPTConfig(tie_embeddings=False, pad_vocab=True))
    # The head is one matmul either way; an untied wte is only looked up.
    assert untied.flops_per_token(1024) == tied.flops_per_token(1024)


@pytest.mark.parametrize("kw,attn,proj", [
    ({}, True, True), (dict(bias=False), False, False), (dict(qkv_bias=False), False, True),
    (dict(bias=False, qkv_bias=True), True, False),
])
def test_qkv_bias_none_follows_bias(kw, attn, proj):
    attention = small(**kw).transformer.h[0].attn
    assert (attention.c_attn.bias is not None, attention.c_proj.bias is not None) == (attn, proj)


def test_new_fields_in_config_files():
    cfg = GPTConfig.from_dict({"qkv_bias": False, "tie_embeddings": False})
    assert GPTConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert GPTConfig.from_dict(json.loads(GPTConfig().to_json())).qkv_bias is None
    with pytest.raises(ValueError, match=r"model\.qkv_bias: expected true or false \(or unset\)"):
        GPTConfig.from_dict({"qkv_bias": "no"}, where="model")
    with pytest.raises(ValueError, match="did you mean 'tie_embeddings'"):
        GPTConfig.from_dict({"tie_word_embeddings": False})


# ---- untied head ---------------------------------------------------------------------------------


def test_untied_head_is_its_own_parameter():
    m = small(tie_embeddings=False, pad_vocab=True)
    head, wte = m.lm_head.weight, m.transformer.wte.weight
    assert head is not wte and head.data_ptr() != wte.data_ptr()
    assert abs(head[:61].std().item() - 0.02) < 0.004
    assert torch.all(head[61:] == 0) and torch.all(wte[61:] == 0)
    params = list(m.parameters())
    assert any(p is head for p in params) and any(p is wte for p in params)


def test_training_changes_the_head_and_embedding_independently():
    m = small(tie_embeddings=False)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    idx = torch.randint(0, 30, (2, 8))  # rows >= 30 of wte are never looked up
    _, loss = m(idx, idx)
    loss.backward()
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    wte, head = m.transformer.wte.weight, m.lm_head.weight
    assert torch.equal(wte[30:], before["transformer.wte.weight"][30:])
    assert not torch.equal(head[30:], before["lm_head.weight"][30:])  # every logit row has a gradient
    assert not torch.equal(wte[:30], before["transformer.wte.weight"][:30])


def test_both_backends_agree_on_an_untied_model_without_qkv_bias():
    torch.manual_seed(1)
    ref = randomised(small(vocab_size=64, n_layer=1, qkv_bias=False, tie_embeddings=False)).eval()
    tri = copy.deepcopy(ref)
    tri.backend = "triton"
    idx = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        full = ref(idx)
        torch.testing.assert_close(tri(idx), full, atol=2e-4, rtol=1e-4)
        for model in (ref, tri):
            cache = KVCache.allocate(model.config, 2, 16, dtype=torch.float32, device="cpu")
            last = torch.full((2,), 6)
            torch.testing.assert_close(model.forward_prefill(idx[:, :7], cache, last), full[:, 6], atol=2e-4, rtol=1e-4)
            step = model.forward_decode(idx[:, 7], torch.full((2,), 8), cache)
            torch.testing.assert_close(step, full[:, 7], atol=2e-4, rtol=1e-4)


# ---- Hugging Face weights ------------------------------------------------------------------------


def _transformers():
    return pytest.importorskip("transformers")


def _hf(tie: bool = True, vocab: int = 61):
    transformers = _transformers()
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tie)
    torch.manual_seed(5)
    return randomised(transformers.GPT2LMHeadModel(cfg)).eval()


def _assert_same_logits(ours: GPT, hf, vocab: int = 61) -> None:
    idx = torch.randint(0, vocab, (2, 9))
    with torch.no_grad():
        assert (ours.eval()(idx) - hf(idx).logits).abs().max().item() < 1e-4


def test_hf_tied_checkpoint_into_an_untied_model_copies_wte(tmp_path):
    hf = _hf()
    hf.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(tmp_path, tie_embeddings=False, pad_vocab=True)
    head, wte = ours.lm_head.weight, ours.transformer.wte.weight
    assert head is not wte and torch.equal(head, wte)
    assert torch.all(head[61:] == 0)
    _assert_same_logits(ours, hf)


def test_hf_untied_checkpoint_keeps_its_head(tmp_path):
    hf = _hf(tie=False)
    hf.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(tmp_path)
    assert ours.config.tie_embeddings is False
    assert not torch.equal(ours.lm_head.weight, ours.transformer.wte.weight)
    _assert_same_logits(ours, hf)
    with pytest.raises(CheckpointError, match="lm_head.weight differs from transformer.wte.weight"):
        GPT.from_pretrained(tmp_path, tie_embeddings=True)


@pytest.mark.parametrize("override,flag", [(dict(qkv_bias=False), "qkv_bias"), (dict(bias=False), "bias")])
def test_hf_checkpoint_into_a_model_without_qkv_bias_is_refused(tmp_path, override, flag):
    _hf().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as e:
        GPT.from_pretrained(tmp_path, **override)
    message = str(e.value)
    assert "\n" not in message
    assert "has transformer.h.0.attn.c_attn.bias, but the model is built with " + flag + "=False" in message


def test_untied_export_round_trips_through_transformers(tmp_path):
    torch.manual_seed(2)
    ours = randomised(small(tie_embeddings=False, qkv_bias=False, pad_vocab=True)).eval()
    _transformers()
    to_hf(ours).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is False
    hf = _transformers().GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert hf.lm_head.weight.data_ptr() != hf.transformer.wte.weight.data_ptr()
    _assert_same_logits(ours, hf)
    back = GPT.from_pretrained(tmp_path)  # zero q/k/v biases: a qkv_bias model computing the same
    assert back.config.tie_embeddings is False
    _assert_same_logits(back, hf)


# ---- tritongpt checkpoints -------------------------------------------------------------------------


def test_own_checkpoint_round_trips_an_untied_model_without_qkv_bias(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(3)
    m = randomised(small(tie_embeddings=False, qkv_bias=False, pad_vocab=True))
    m.save(tmp_path / "c")
    assert "lm_head.weight" in load_file(str(tmp_path / "c" / "model.safetensors"))
    m2 = GPT.from_pretrained(tmp_path / "c")
    assert m2.config == m.config and m2.config.qkv_bias is False
    assert m2.lm_head.weight is not m2.transformer.wte.weight
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_tied_own_checkpoint_stores_the_matrix_once(tmp_path):
    from safetensors.torch import load_file

    small().save(tmp_path / "c")
    assert "lm_head.weight" not in load_file(str(tmp_path / "c" / "model.safetensors"))
    untied = GPT.from_pretrained(tmp_path / "c", tie_embeddings=False)
    assert torch.equal(untied.lm_head.weight, untied.transformer.wte.weight)


# ---- negative targets ------------------------------------------------------------------------------


def test_every_negative_target_is_ignored():
    m = small()
    idx = torch.randint(0, 61, (2, 9))
    tgt = idx.clone()
    tgt[0, :3], tgt[1, 5:], tgt[1, 0] = -100, -1, -7
    logits, loss = m(idx, tgt)
    keep = tgt >= 0
    torch.testing.assert_close(loss, F.cross_entropy(logits[keep], idx[keep]))
    for return_logits in (True, False):  # both paths: loss 0 with zero gradients, not F.cross_entropy's 0/0
        m.zero_grad()
        _, none_kept = m(idx, torch.full_like(idx, -100), return_logits=return_logits)
        none_kept.backward()
        assert none_kept.item() == 0.0
        assert all(p.grad is None or not p.grad.any() for p in m.parameters())
    _, fused_path = m(idx, tgt, return_logits=False)
    torch.testing.assert_close(fused_path, loss)
    with pytest.raises(ValueError, match="targets: token id 61"):
        m(idx, torch.full_like(idx, 61))


# ---- Hub model ids ------------------------------------------------------------------------------


COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An HF_HOME whose hub cache holds ``gpt2`` (a tiny random GPT-2), offline; cwd is an empty folder."""
    from huggingface_hub import constants

    hf = _hf()
    snapshot = tmp_path / "hf" / "hub" / "models--gpt2" / "snapshots" / COMMIT
    hf.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(COMMIT)
    # huggingface_hub reads these variables once, at import: its constants are set as well.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return hf


def test_hub_id_loads_from_the_offline_cache(offline_hub):
    _assert_same_logits(GPT.from_pretrained("gpt2"), offline_hub)


def test_a_local_folder_wins_over_the_hub(offline_hub, tmp_path):
    local = small(n_layer=1)
    local.save(tmp_path / "cwd" / "gpt2")
    assert GPT.from_pretrained("gpt2").config == local.config


def test_unknown_hub_id_offline_is_one_clear_line(offline_hub):
    with pytest.raises(CheckpointError) as e:
        GPT.from_pretrained("no-such-org/no-such-model")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("no-such-org/no-such-model: no such folder")
    assert "HF_HUB_OFFLINE" in message and "config.json" in message


def test_a_missing_path_is_never_looked_up_on_the_hub(tmp_path):
    with pytest.raises(CheckpointError, match="not a folder .*Hub model id"):
        GPT.from_pretrained(tmp_path / "nope")


def test_a_checkpoint_written_before_the_new_settings_still_resumes(tmp_path):
    """A training checkpoint whose model settings lack qkv_bias / tie_embeddings (written before they
    existed) matches a model with their defaults; a real difference is still refused."""
    from tritongpt.engine.model.weights import write_model_files
    from tritongpt.engine.train import train_checkpoint as ckpt

    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))
    write_model_files(model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    for key in ("qkv_bias", "tie_embeddings"):
        meta["model"].pop(key)
    (tmp_path / "config.json").write_text(json.dumps(meta))
    assert ckpt.read_meta(tmp_path, model)["model"] == meta["model"]
    untied = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16, tie_embeddings=False))
    with pytest.raises(ckpt.CheckpointMismatch, match="tie_embeddings: checkpoint True vs run False"):
        ckpt.read_meta(tmp_path, untied)
