"""Weight-only int8 quantization of the GPT (engine/generation/quantize.py): logits, generation, the CLI flag and the
perplexity cost, on both backends (triton under the interpreter on CPU).

Tolerances: int8 per-channel rounding moves each weight by at most scale / 2 = absmax / 254, so the logits
of a quantized model stay within 2% of the float model's largest logit (measured ~0.4% on the random model
below); the torch and triton paths compute the same dequantized product and agree to fp32 rounding. The
relative perplexity change on held-out Shakespeare must stay below 1%.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import DEVICE

from tritongpt.engine import GPT, assets, generate
from tritongpt.engine.cli import main
from tritongpt.engine.data.tokenizer import CharTokenizer
from tritongpt.engine.generation.quantize import QuantizedLinear, perplexity, quantize_int8, quantize_per_channel
from tritongpt.engine.model import ops
from tritongpt.engine.model.config import GPTConfig

LOGIT_RTOL = 0.02  # of max |logit|
PPL_RTOL = 0.01  # relative perplexity change, fp32 vs int8
BLOCK = 64


def _corpus() -> str:
    try:
        return assets.fetch_shakespeare(quiet=True).read_text(encoding="utf-8")[:300_000]
    except (assets.AssetError, OSError):  # offline without the cached corpus: the project's own docs
        root = Path(__file__).resolve().parents[1]
        return "".join(p.read_text(encoding="utf-8") for p in [root / "README.md", *sorted(root.glob("docs/*.md"))]) * 4


@pytest.fixture(scope="module")
def trained():
    """A char-level GPT (2 layers, 64 wide) trained for 300 steps on the first 270k characters of Shakespeare;
    returns (model, tokenizer, held-out ids). One thread: on the shared 2-core machine two threads per tiny
    GEMM made every step ~20x slower."""
    text = _corpus()
    tok = CharTokenizer("".join(sorted(set(text))))
    data = torch.tensor(tok.encode(text))
    split = int(0.9 * len(data))
    train, val = data[:split], data[split:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=BLOCK, n_layer=2, n_head=4, n_embd=64,
                          backend="torch"))
        opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(300):
            ix = torch.randint(0, len(train) - BLOCK - 1, (16,), generator=g)
            x = torch.stack([train[i:i + BLOCK] for i in ix])
            y = torch.stack([train[i + 1:i + BLOCK + 1] for i in ix])
            loss = m(x, y, return_logits=False)[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return m.to(DEVICE).eval(), tok, val[: 128 * BLOCK + 1]


def _tiny(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32, backend="torch")
    return GPT(GPTConfig(**{**cfg, **kw})).to(DEVICE).eval()


def test_per_channel_rounding():
    w = torch.randn(5, 33)
    w[2] = 0.0  # an all-zero row (GPT-2's padded vocabulary rows)
    w8, scale = quantize_per_channel(w)
    assert w8.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (5,)
    assert w8.abs().max().item() == 127 and scale[2].item() == 1.0 and not w8[2].any()
    assert ((w8.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()
    with pytest.raises(ValueError, match=r"weight: expected a 2-D floating-point tensor, got torch.int8"):
        quantize_per_channel(w8)


def test_layers_replaced_and_wte_stays_float():
    m = _tiny()
    wte = m.transformer.wte.weight.detach().clone()
    assert m.lm_head.weight is m.transformer.wte.weight  # tied
    q = quantize_int8(copy.deepcopy(m))
    names = [n for n, mod in q.named_modules() if isinstance(mod, QuantizedLinear)]
    assert len(names) == 4 * 2 + 1 and "lm_head" in names
    assert not any(isinstance(mod, torch.nn.Linear) for mod in q.modules())
    assert torch.equal(q.transformer.wte.weight, wte) and q.transformer.wte.weight.dtype == torch.float32
    assert q.lm_head.weight_int8.dtype == torch.int8 and q.lm_head.bias is None
    assert quantize_int8(q) is q and not q.training  # idempotent, eval mode
    q.to(torch.bfloat16)
    c_fc = q.transformer.h[0].mlp.c_fc
    assert c_fc.scale.dtype == torch.float32 and c_fc.weight_int8.dtype == torch.int8
    assert c_fc.bias.dtype == torch.bfloat16
    with pytest.raises(TypeError, match="model: expected a tritongpt GPT, got Linear"):
        quantize_int8(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("untied", [False, True], ids=["tied", "untied"])
def test_logits_close_on_both_backends(untied):
    m = _tiny(tie_embeddings=not untied, qkv_bias=True)
    idx = torch.randint(0, 65, (2, 9), device=DEVICE)
    with torch.no_grad():
        ref = m(idx)
        q = quantize_int8(copy.deepcopy(m))
        got = {}
        for backend in ("torch", "triton"):
            q.backend = backend
            got[backend] = q(idx)
            err = (got[backend] - ref).abs().max().item()
            print(f"{backend}: max |logits error| {err:.3g} of max |logit| {ref.abs().max().item():.3g}")
            assert err <= LOGIT_RTOL * ref.abs().max().item()
            assert q(idx, idx, return_logits=False)[1].item() == pytest.approx(
                m(idx, idx)[1].item(), rel=LOGIT_RTOL)
    # Exact fp32 on the interpreter; TF32 on GPUs.
    torch.testing.assert_close(got["triton"], got["torch"], rtol=0, atol=5e-3 * ref.abs().max().item())


def test_seams_take_int8_weights():
    x = torch.randn(3, 32, device=DEVICE)
    lin = torch.nn.Linear(32, 48, device=DEVICE)
    q = QuantizedLinear.from_linear(lin)
    w = q.int8.dequantize(torch.float32)
    assert ops.weight_of(lin) is lin.weight and isinstance(ops.weight_of(q), ops.Int8Weight)
    for backend in ("torch", "triton"):
        torch.testing.assert_close(ops.linear(x, q.int8, q.bias, x[:, :1], backend=backend),
                                   x @ w.T + q.bias + x[:, :1], rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(ops.gelu_linear(x, q.int8, q.bias, backend=backend),
                                   torch.nn.functional.gelu(x @ w.T + q.bias, approximate="tanh"), rtol=2e-3,
                                   atol=2e-3)
        torch.testing.assert_close(ops.decode_linear(x, q.int8, q.bias, backend=backend), x @ w.T + q.bias,
                                   rtol=2e-3, atol=2e-3)
    assert ops.weight_of(q)[:5].data.shape == (5, 32)


def test_training_a_quantized_model_raises():
    q = quantize_int8(_tiny())
    idx = torch.randint(0, 65, (1, 5), device=DEVICE)
    q.train()
    with pytest.raises(ValueError, match="int8-quantized model is inference-only"):
        q(idx, idx)
    q.eval()
    assert q(idx).shape == (1, 5, 65)


def test_generation_greedy_agrees(trained):
    m, tok, _ = trained
    prompts = [tok.encode("ROMEO:\n"), tok.encode("First Citizen")]
    want = generate(m, prompts, 16, temperature=0)
    q = quantize_int8(copy.deepcopy(m))
    for backend in ("torch", "triton"):
        q.backend = backend
        got = generate(q, prompts, 16, temperature=0)
        agree = sum(a == b for g, w in zip(got, want, strict=True) for a, b in zip(g, w, strict=True)) / 32
        print(f"{backend}: greedy agreement {agree:.0%}: {tok.decode(got[0])!r} vs {tok.decode(want[0])!r}")
        assert agree >= 0.75
        # Sampling runs too (int8 decode with noise, top-k).
        assert len(generate(q, prompts[:1], 4, temperature=0.8, top_k=5, seed=1)[0]) == 4


def test_perplexity_delta(trained):
    m, _, val = trained
    p_fp32 = perplexity(m, val, BLOCK, 64)
    p_int8 = perplexity(quantize_int8(copy.deepcopy(m)), val, BLOCK, 64)
    delta = (p_int8 - p_fp32) / p_fp32
    print(f"val perplexity fp32 {p_fp32:.4f}, int8 {p_int8:.4f}, relative change {delta:+.3%}")
    assert p_fp32 < 20  # the model learned something (65 chars uniform: ppl 65)
    assert abs(delta) < PPL_RTOL
    # perplexity() is exp of the mean next-token loss over whole windows.
    x, y = val[:-1].view(-1, BLOCK).to(DEVICE), val[1:].view(-1, BLOCK).to(DEVICE)
    with torch.no_grad():
        assert p_fp32 == pytest.approx(math.exp(m(x, y)[1].item()), rel=1e-5)


@pytest.mark.parametrize("args, msg", [
    (("ids", 8, 2), r"tokens: expected a 1-D integer tensor, got str"),
    ((torch.zeros(4, dtype=torch.long), 8, 2), r"tokens: 4 ids, need at least block_size \+ 1 = 9"),
    ((torch.zeros(40, dtype=torch.long), 0, 2), r"block_size: expected an integer >= 1, got 0"),
    ((torch.zeros(40, dtype=torch.long), 8, True), r"batch: expected an integer >= 1, got True"),
    ((torch.zeros(40, dtype=torch.long), 33, 2), r"block_size: 33 exceeds the model's context window 32"),
])
def test_perplexity_bad_input(args, msg):
    with pytest.raises(ValueError, match=msg):
        perplexity(_tiny(), *args)


def test_cli_quantize_flag(trained, tmp_path, capsys):
    m, tok, _ = trained
    d = m.save(tmp_path / "ckpt")
    meta = json.loads((d / "config.json").read_text())
    meta["tokenizer"] = tok.to_dict()
    (d / "config.json").write_text(json.dumps(meta))
    want = tok.decode(generate(quantize_int8(copy.deepcopy(m)), [tok.encode("KING")], 12, temperature=0)[0])
    code = main(["generate", "--checkpoint", str(d), "--prompt", "KING", "--max-new-tokens", "12",
                 "--temperature", "0", "--backend", "torch", "--quantize", "int8"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == "KING" + want + "\n"
    with pytest.raises(SystemExit):
        main(["generate", "--checkpoint", str(d), "--prompt", "KING", "--quantize", "int4"])
    assert "--quantize: invalid choice: 'int4'" in capsys.readouterr().err
