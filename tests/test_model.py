import math

import pytest
import torch
import torch.nn.functional as F

from tritongpt.engine import GPT, GPTConfig


def tiny(**kw) -> GPT:
    return GPT(GPTConfig.from_preset("tiny", **kw))


def test_forward_shapes_and_loss():
    m = tiny()
    idx = torch.randint(0, 97, (3, 17))
    logits = m(idx)
    assert logits.shape == (3, 17, 97)
    logits2, loss = m(idx, idx)
    torch.testing.assert_close(logits, logits2)
    ref = F.cross_entropy(logits.reshape(-1, 97), idx.reshape(-1))
    torch.testing.assert_close(loss, ref)
    assert abs(loss.item() - math.log(97)) < 0.5  # near-uniform at init


def test_ignore_index():
    m = tiny()
    idx = torch.randint(0, 97, (2, 9))
    tgt = idx.clone()
    tgt[:, :4] = -1
    logits, loss = m(idx, tgt)
    ref = F.cross_entropy(logits[:, 4:].reshape(-1, 97), idx[:, 4:].reshape(-1))
    torch.testing.assert_close(loss, ref)


def test_vocab_padding_never_changes_results():
    torch.manual_seed(1)
    a = tiny()
    b = tiny(pad_vocab=True)
    assert b.transformer.wte.weight.shape[0] == 128
    sd = {k: v for k, v in a.state_dict().items() if k != "lm_head.weight"}
    with torch.no_grad():
        for k, v in b.state_dict().items():
            if k == "transformer.wte.weight":
                v[:97].copy_(sd[k])
            elif k != "lm_head.weight":
                v.copy_(sd[k])
        # Even non-zero padding rows must not leak into logits or loss.
        b.transformer.wte.weight[97:].normal_()
    idx = torch.randint(0, 97, (2, 11))
    la, lossa = a(idx, idx)
    lb, lossb = b(idx, idx)
    assert lb.shape == la.shape
    torch.testing.assert_close(la, lb)
    torch.testing.assert_close(lossa, lossb)


def test_initialisation_follows_gpt2():
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=256, vocab_size=1000, block_size=64))
    assert m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr()
    assert abs(m.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002
    proj_std = 0.02 / math.sqrt(2 * 4)
    assert abs(m.transformer.h[0].mlp.c_proj.weight.std().item() - proj_std) < 0.001
    assert abs(m.transformer.h[1].attn.c_proj.weight.std().item() - proj_std) < 0.001
    assert torch.all(m.transformer.h[0].attn.c_attn.bias == 0)
    assert torch.all(m.transformer.ln_f.weight == 1)


def test_matches_a_naive_gpt2_written_out():
    """The fused-residual block structure computes exactly x + attn(ln(x)), x + mlp(ln(x))."""
    torch.manual_seed(3)
    m = tiny().double()
    idx = torch.randint(0, 97, (2, 13))
    cfg = m.config
    t = m.transformer
    x = t.wte(idx) + t.wpe(torch.arange(13))
    for blk in t.h:
        a = F.layer_norm(x, (cfg.n_embd,), blk.ln_1.weight, blk.ln_1.bias, 1e-5)
        q, k, v = blk.attn.c_attn(a).split(cfg.n_embd, dim=2)
        q, k, v = (z.view(2, 13, cfg.n_head, -1).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(cfg.head_dim)
        att = att.masked_fill(torch.ones(13, 13).triu(1).bool(), float("-inf")).softmax(-1)
        x = x + blk.attn.c_proj((att @ v).transpose(1, 2).reshape(2, 13, -1))
        a = F.layer_norm(x, (cfg.n_embd,), blk.ln_2.weight, blk.ln_2.bias, 1e-5)
        x = x + blk.mlp.c_proj(F.gelu(blk.mlp.c_fc(a), approximate="tanh"))
    x = F.layer_norm(x, (cfg.n_embd,), t.ln_f.weight, t.ln_f.bias, 1e-5)
    ref = x @ t.wte.weight.T
    torch.testing.assert_close(m(idx), ref)


def test_dropout_changes_training_output_only():
    m = tiny(dropout=0.5)
    idx = torch.randint(0, 97, (2, 8))
    m.eval()
    torch.testing.assert_close(m(idx), m(idx))
    m.train()
    assert not torch.allclose(m(idx), m(idx))


def test_bad_inputs():
    m = tiny()
    with pytest.raises(ValueError, match="context window"):
        m(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="idx"):
        m(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="idx"):
        m(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="targets"):
        m(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="backend"):
        m.backend = "cuda"


def test_backend_resolution():
    m = tiny(backend="auto")
    assert m.backend == "torch"  # CPU
    m.backend = "triton"
    assert all(getattr(x, "backend", "triton") == "triton" for x in m.modules())
    m.backend = "torch"
    assert m.transformer.h[0].attn.backend == "torch"


def test_flops_per_token():
    with torch.device("meta"):
        m = GPT.from_preset("gpt2")
    n = 124_439_808 - 1024 * 768
    assert m.flops_per_token(1024) == 6 * n + 6 * 12 * 1024 * 768


def test_backward_reaches_every_parameter():
    m = tiny()
    idx = torch.randint(0, 97, (2, 8))
    _, loss = m(idx, idx)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
