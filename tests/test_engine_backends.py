"""End to end: the GPT on the `triton` backend against the `torch` reference, same weights."""

import copy

import pytest
import torch

from tritongpt.engine import GPT, GPTConfig

# On a GPU the fused linear kernels run fp32 through TF32 tensor cores (~1e-3 relative), the torch
# reference does not: tolerances there are wider. Under the interpreter both are exact fp32.
TF32 = torch.cuda.is_available()


def _pair(**kw) -> tuple[GPT, GPT]:
    torch.manual_seed(0)
    ref = GPT(GPTConfig.from_preset("tiny", **kw))
    # Non-trivial LayerNorm parameters and biases so every kernel input matters.
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                p.normal_(0, 0.1).add_(1.0 if name.endswith("weight") else 0.0)
    tri = copy.deepcopy(ref)
    ref.backend = "torch"
    tri.backend = "triton"
    return ref, tri


@pytest.mark.parametrize("T", [1, 13, 32])
def test_logits_loss_and_gradients_match(device, T):
    ref, tri = _pair()
    ref.to(device)
    tri.to(device)
    tri.backend = "triton"
    idx = torch.randint(0, 97, (2, T), device=device)
    tgt = torch.randint(0, 97, (2, T), device=device)
    lr, loss_r = ref(idx, tgt)
    lt, loss_t = tri(idx, tgt)
    tol = dict(atol=5e-3, rtol=5e-3) if TF32 else dict(atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(lt, lr, **tol)
    torch.testing.assert_close(loss_t, loss_r, **(tol if TF32 else dict(atol=1e-5, rtol=1e-5)))
    loss_r.backward()
    loss_t.backward()
    for (name, pr), (_, pt) in zip(ref.named_parameters(), tri.named_parameters(), strict=True):
        gtol = dict(atol=5e-3, rtol=2e-2) if TF32 else dict(atol=2e-4, rtol=1e-3)
        torch.testing.assert_close(pt.grad, pr.grad, **gtol, msg=lambda m, n=name: f"{n}: {m}")


def test_short_training_run_decreases_loss_the_same_way(device):
    ref, tri = _pair()
    ref.to(device)
    tri.to(device)
    tri.backend = "triton"
    g = torch.Generator().manual_seed(1)
    # Learnable data: a fixed bigram map (next = 5 * prev + 3 mod 97) from random starts.
    seq = torch.empty(8, 4, 17, dtype=torch.long)
    seq[..., 0] = torch.randint(0, 97, (8, 4), generator=g)
    for i in range(1, 17):
        seq[..., i] = (5 * seq[..., i - 1] + 3) % 97
    batches = seq.to(device)
    curves = []
    for model in (ref, tri):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(1):
            for b in batches:
                # As training calls it: the triton backend runs the fused LM head + loss.
                _, loss = model(b[:, :-1], b[:, 1:], return_logits=False)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
        curves.append(losses)
    r, t = curves
    assert r[-1] < r[0] - 0.2, r  # the loss falls (8 steps, tiny model)
    for a, b in zip(r, t, strict=True):
        assert abs(a - b) < (2e-2 if TF32 else 2e-3), (r, t)


def test_torch_compile_fullgraph_with_triton_backend(device):
    _, tri = _pair()
    tri.to(device)
    tri.backend = "triton"
    idx = torch.randint(0, 97, (2, 9), device=device)
    eager_logits, eager_loss = tri(idx, idx)
    compiled = torch.compile(tri, fullgraph=True, backend="aot_eager")
    logits, loss = compiled(idx, idx)
    torch.testing.assert_close(logits, eager_logits)
    loss.backward()
    assert all(p.grad is not None for p in tri.parameters())


def test_autocast_bf16_matches_torch_backend(device):
    """Under autocast the custom ops see the dtypes autocast would give F.linear / layer_norm."""
    ref, tri = _pair()
    ref.to(device)
    tri.to(device)
    tri.backend = "triton"
    idx = torch.randint(0, 97, (2, 16), device=device)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        lr, loss_r = ref(idx, idx)
        lt, loss_t = tri(idx, idx)
    assert lt.dtype == lr.dtype
    # bf16 everywhere: both sides round differently; compare at bf16 resolution.
    torch.testing.assert_close(lt.float(), lr.float(), atol=5e-2, rtol=5e-2)
    assert abs(loss_t.item() - loss_r.item()) < 2e-2
    loss_t.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tri.parameters())


def test_bf16_model_under_autocast(device):
    """A bf16 model under autocast: LayerNorm runs in fp32 on both backends (its parameters too)."""
    ref, tri = _pair()
    ref.to(device, torch.bfloat16)
    tri.to(device, torch.bfloat16)
    tri.backend = "triton"
    idx = torch.randint(0, 97, (2, 8), device=device)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        _, loss_r = ref(idx, idx)
        _, loss_t = tri(idx, idx)
    assert abs(loss_t.item() - loss_r.item()) < 3e-2
