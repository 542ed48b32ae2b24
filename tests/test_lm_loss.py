"""The model's fused LM head + loss (``return_logits=False``): the triton backend matches the reference in
loss and every parameter gradient, padded vocabulary rows stay out, and the (N, V) logits are never
allocated (counted with the profiler's memory events)."""

from __future__ import annotations

import pytest
import torch

from tritongpt.bench.memory import cpu_allocations
from tritongpt.engine import GPT, GPTConfig
from tritongpt.engine.model import ops

pytestmark = pytest.mark.kernel


def _model(pad_vocab: bool) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, block_size=16, n_layer=1, n_head=2, n_embd=32, pad_vocab=pad_vocab))


@pytest.mark.parametrize("pad_vocab", [False, True])
def test_fused_head_and_loss_match_the_reference(pad_vocab):
    ref, fused = _model(pad_vocab), _model(pad_vocab)
    ref.backend, fused.backend = "torch", "triton"
    idx = torch.randint(0, 97, (2, 12))
    tgt = idx.roll(-1, dims=1)
    tgt[0, :4], tgt[1, -1] = -100, -1  # ignored rows of both spellings
    losses = []
    for m in (ref, fused):
        _, loss = m(idx, tgt, return_logits=False)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    for (name, a), b in zip(ref.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)
    if pad_vocab:  # the zero rows past vocab_size get no gradient
        assert not fused.transformer.wte.weight.grad[97:].any()
    _, plain = ref(idx, tgt)  # the default path: logits and the same loss
    torch.testing.assert_close(plain, losses[0])


def test_the_fused_path_never_allocates_the_logits():
    """Forward and backward of the head + loss at N=256 tokens, V=2048, C=16: the plain path allocates the
    (N, V) fp32 logits (2 MiB) and their gradient; the fused op's largest buffer is dW (V x C) or dX."""
    torch.manual_seed(0)
    N, V, C = 256, 2048, 16
    x = torch.randn(N, C, requires_grad=True)
    w = (0.1 * torch.randn(V, C)).requires_grad_()
    tgt = torch.randint(0, V, (N,))

    def step(backend):
        ops.lm_loss(x, w, tgt, backend=backend).backward()

    logits_bytes = N * V * 4
    assert max(cpu_allocations(lambda: step("torch"))) >= logits_bytes
    fused = max(cpu_allocations(lambda: step("triton")))
    assert 0 < fused <= logits_bytes // 8, fused


def test_a_training_step_never_allocates_the_logits():
    """A whole optimizer step of a GPT (B*T = 128 tokens, V = 4096) on the triton backend, counted with the
    profiler (which sees buffers allocated inside custom ops). Called as training calls it, the largest buffer
    is far below the (N, V) fp32 logits; called for the logits, the same model allocates them. The fused op
    has no chunk-size budget: its largest buffers are the dx split partials (S x N x C fp32, S <= 4 vocab
    splits) and dW (V x C fp32), both independent of N x V."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=4096, block_size=16, n_layer=1, n_head=1, n_embd=16, pad_vocab=False))
    model.backend = "triton"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, 4096, (8, 16))

    def step(return_logits: bool):
        model(idx, idx.roll(-1, dims=1), return_logits=return_logits)[1].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(True)  # AdamW state exists before counting
    logits_bytes = 8 * 16 * 4096 * 4
    assert max(cpu_allocations(lambda: step(True))) >= logits_bytes
    fused = cpu_allocations(lambda: step(False))
    assert 0 < max(fused) <= logits_bytes // 8, max(fused)
