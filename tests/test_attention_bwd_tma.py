"""The TMA (tensor-descriptor) attention backward against float64 autograd, and its path choice.

The interpreter runs host tensor descriptors with the hardware's bounds (rows past T and columns past D
of one (batch, head) slice load as zeros, stores past them are dropped), so the forced TMA path is
checked on CPU. Tolerance rule as in test_attention.py: each gradient's max error vs fp64 may be at most
2x that of naive PyTorch attention's gradient in the same dtype, plus a small atol. Gradient buffers are
poisoned with NaN, so an unwritten element fails. Path choice is tested with mocked capability and
Triton version.
"""

from __future__ import annotations

import pytest
import torch
from attention_reference import naive

import tritongpt.kernels.flash_attention as fa
import tritongpt.kernels.flash_attention_bwd as fab
import tritongpt.kernels.flash_attention_bwd_tma as bt
from tritongpt.kernels import launch, tma

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.usefixtures("poison_attention"),
    pytest.mark.skipif(not tma.descriptors_available(), reason="the TMA path needs Triton >= 3.4 tensor descriptors"),
]

ATOL = {torch.float16: 1e-3, torch.bfloat16: 1e-2}
interpreter_only = pytest.mark.skipif(torch.cuda.is_available(), reason="mocks the device capability")


@pytest.fixture
def device_as(monkeypatch: pytest.MonkeyPatch):
    """``device_as(capability, version)``: pretend the tensors sit on such a GPU under such a Triton."""

    def pretend(capability, version=(3, 9)):
        monkeypatch.setattr(tma, "device_capability", lambda device: capability)
        monkeypatch.setattr(tma, "triton_version", lambda: version)

    return pretend


@pytest.fixture
def tma_device(device):
    if device == "cuda" and bt.tma_target(torch.cuda.get_device_capability()) is None:
        pytest.skip("this GPU has no TMA path")
    return device


def _grads(q, k, v, do, causal, scale, dtype=None):
    leaves = [t.detach().to(dtype or t.dtype).requires_grad_() for t in (q, k, v)]
    naive(*leaves, causal, scale)[0].backward(do.to(dtype or do.dtype))
    return [t.grad for t in leaves]


def _err(a, ref):
    return (a.double() - ref).abs().max().item()


def check_backward(q, k, v, causal, path="tma", **kw):
    """The launcher's gradients (path forced) vs fp64 autograd, with the 2x-PyTorch rule."""
    scale = q.shape[-1] ** -0.5
    do = torch.randn(q.shape, dtype=q.dtype, device=q.device)
    out, lse = fa.attention_fwd_launch(q, k, v, causal, scale, path="pointer")
    got = fab.attention_bwd_launch(do, q, k, v, out, lse, causal, scale, path=path, **kw)
    refs = _grads(q, k, v, do, causal, scale, torch.float64)
    lows = _grads(q, k, v, do, causal, scale)
    for name, g, ref, low in zip(("dq", "dk", "dv"), got, refs, lows, strict=True):
        if g.numel() == 0:
            continue
        assert g.dtype == q.dtype and g.shape == ref.shape and g.is_contiguous(), name
        assert not torch.isnan(g).any(), f"{name}: unwritten (NaN) elements"
        atol = ATOL[q.dtype] * max(1.0, ref.abs().max().item())
        assert _err(g, ref) <= 2 * _err(low, ref) + atol, name
    return got


def _qkv(b, h, tq, tk, d, dtype, device="cpu"):
    return tuple(torch.randn(b, h, t, d, dtype=dtype, device=device) for t in (tq, tk, tk))


SHAPES = [
    # (B, H, Tq, Tk, D, causal)
    (2, 2, 100, 100, 64, True),  # ragged T: the second block clipped per (batch, head) slice
    (1, 2, 100, 100, 64, False),  # non-causal ragged: keys past Tk masked in every query block
    (1, 2, 17, 100, 64, True),  # Tq < Tk (end-aligned diagonal), ragged
    (2, 1, 1, 1, 64, True),  # T = 1
    (1, 1, 64, 128, 64, False),  # both T multiples of the blocks (no ragged tail)
    (1, 1, 40, 70, 128, True),  # D = 128, small T
    (1, 1, 40, 33, 128, False),
    (1, 1, 30, 30, 40, True),  # D = 40 zero-filled to BLOCK_D = 64 (80 B rows)
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_tma_backward_matches_reference(shape, dtype, tma_device):
    b, h, tq, tk, d, causal = shape
    check_backward(*_qkv(b, h, tq, tk, d, dtype, tma_device), causal)


def test_tma_backward_packed_qkv_view(tma_device):
    """q, k, v as permuted views of one (B, T, 3, H, D) projection: strides are 16-byte multiples, no copy."""
    qkv = torch.randn(2, 37, 3, 2, 64, dtype=torch.float16, device=tma_device)
    q, k, v = (qkv[:, :, i].permute(0, 2, 1, 3) for i in range(3))
    assert not q.is_contiguous() and tma.tma_unfit(k, [1, 1, 64, 64]) is None
    check_backward(q, k, v, True)


@pytest.mark.parametrize("compute_dq, compute_dkdv", [(True, False), (False, True)])
def test_tma_backward_one_kernel(compute_dq, compute_dkdv, tma_device):
    dq, dk, dv = check_backward(*_qkv(1, 1, 50, 50, 64, torch.float16, tma_device), False,
                                compute_dq=compute_dq, compute_dkdv=compute_dkdv)
    assert (dq.numel() == 0) != compute_dq and (dk.numel() == 0) != compute_dkdv


@pytest.mark.filterwarnings("ignore:overflow encountered in exp2:RuntimeWarning")  # masked lanes, by design
@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")  # dropped dk/dv rows
@pytest.mark.parametrize("causal", [True, False])
def test_tma_backward_very_negative_lse_no_nan(causal, tma_device):
    """Keys past Tk load as zeros (score 0), so exp(0 - lse) overflows for rows whose LSE is far below -88:
    dQ must mask them; dK/dV leaves them unmasked (inf/NaN only in their own rows, which the clipped
    stores drop), so no NaN may reach any gradient."""
    q = (10 + 0.1 * torch.randn(1, 1, 5, 64, device=tma_device)).half()
    k = (-3 + 0.1 * torch.randn(1, 1, 7, 64, device=tma_device)).half()
    v = torch.randn(1, 1, 7, 64, device=tma_device).half()
    do = torch.randn(1, 1, 5, 64, device=tma_device).half()
    out, lse = fa.attention_fwd_launch(q, k, v, causal, 0.25, path="pointer")
    grads = fab.attention_bwd_launch(do, q, k, v, out, lse, causal, 0.25, path="tma")
    assert not any(torch.isnan(g).any() for g in grads)


@interpreter_only
def test_autograd_takes_the_tma_backward(device_as, monkeypatch):
    """attention() on a (mocked) sm_90 takes the TMA backward; its gradients still match fp64."""
    device_as((9, 0))
    calls = []
    launch = bt.attention_bwd_tma_launch
    monkeypatch.setattr(bt, "attention_bwd_tma_launch", lambda *a, **kw: calls.append(1) or launch(*a, **kw))
    q, k, v = (t.requires_grad_() for t in _qkv(1, 2, 40, 40, 64, torch.float16))
    do = torch.randn(1, 2, 40, 64, dtype=torch.float16)
    fa.attention(q, k, v, causal=True).backward(do)
    assert calls, "the backward did not take the TMA path"
    refs = _grads(q, k, v, do, True, 64 ** -0.5, torch.float64)
    lows = _grads(q, k, v, do, True, 64 ** -0.5)
    for got, ref, low in zip((q.grad, k.grad, v.grad), refs, lows, strict=True):
        assert _err(got, ref) <= 2 * _err(low, ref) + ATOL[torch.float16] * max(1.0, ref.abs().max().item())


def _t(*shape, dtype=torch.float16):
    return torch.randn(*shape).to(dtype)


def _path(q, k=None, path=None, causal=True):
    k = q if k is None else k
    return bt.bwd_path(q, k, k, q, causal, launch.block_d(q.shape[-1]), path)


@pytest.mark.parametrize("capability, version, want", [
    (None, (3, 9), tma.POINTER),  # CPU / the interpreter: the pointer path unless forced
    ((8, 0), (3, 9), tma.POINTER),  # A100: no TMA
    ((9, 0), (3, 3), tma.POINTER),  # Triton 3.3: no tensor descriptors
    ((9, 0), (3, 9), tma.TMA),
    ((10, 0), (3, 9), tma.TMA),
    ((12, 0), (3, 9), tma.POINTER),  # sm_120: no checked config table
])
def test_path_choice_by_device_and_triton(capability, version, want, device_as):
    device_as(capability, version)
    assert _path(_t(1, 2, 128, 64)) == want
    assert _path(_t(1, 2, 100, 128), causal=False) == want


@pytest.mark.parametrize("make, why", [
    (lambda: _t(1, 2, 64, 36), "D=36: rows of 72 B"),
    (lambda: _t(2 * 64 * 64 + 1)[1:].view(1, 2, 64, 64), "base not 16-byte aligned"),
    (lambda: _t(1, 2, 64, 64, dtype=torch.float32), "fp32: pointer path (IEEE dots)"),
    (lambda: _t(1, 2, 64, 32), "D=32: no TMA config ships for BLOCK_D 32"),
    (lambda: _t(1, 2, 64, 40)[..., :36], "q's rows fit (80 B) but the gradients' (72 B) do not"),
])
def test_path_choice_falls_back_to_pointer(make, why, device_as):
    device_as((9, 0))
    assert _path(make()) == tma.POINTER, why


def test_forced_tma_on_unfit_tensors_raises(device_as):
    device_as((9, 0))
    with pytest.raises(ValueError, match="q: base address is not 16-byte aligned"):
        _path(_t(2 * 64 * 64 + 1)[1:].view(1, 2, 64, 64), path="tma")
    with pytest.raises(ValueError, match="gradients .* not a multiple of 16 bytes"):
        _path(_t(1, 2, 64, 40)[..., :36], path="tma")
    with pytest.raises(ValueError, match="fp16/bf16"):
        _path(_t(1, 2, 64, 64, dtype=torch.float32), path="tma")
    with pytest.raises(ValueError, match="BLOCK_D=32"):
        _path(_t(1, 2, 64, 32), path="tma")
    with pytest.raises(ValueError, match="path"):
        q = _t(1, 1, 4, 64)
        fab.attention_bwd_launch(q, q, q, q, q, torch.zeros(1, 1, 4), True, 0.125, path="TMA")
    device_as((8, 0))
    with pytest.raises(ValueError, match="sm_80 has no checked TMA config table"):
        _path(_t(1, 2, 64, 64), path="tma")
    assert _path(_t(1, 2, 64, 36), path="pointer") == tma.POINTER


class _Desc:
    def __init__(self):
        self.base, self.block_shape = torch.empty(0), None


@pytest.mark.parametrize("capability", [(9, 0), (10, 0)])
def test_prune_and_pre_hooks_follow_the_tables(capability, device_as):
    device_as(capability)
    target = bt.tma_target(capability)
    for tuned, table in ((bt._dkdv_tma_tuned, bt._TMA_DKDV_CONFIGS), (bt._dq_tma_tuned, bt._TMA_DQ_CONFIGS)):
        for d, causal in ((64, True), (128, True), (128, False)):
            kept = bt._prune(table, tuned.configs, {"desc_q": _Desc()}, {"BLOCK_D": d, "CAUSAL": causal})
            want = [t for t in table if target in t.archs_for(d, causal=causal)]
            assert len(kept) == len(want) > 0
        assert not bt._prune(table, tuned.configs, {"desc_q": _Desc()}, {"BLOCK_D": 32, "CAUSAL": True})
    names = ("q", "k", "v", "do", "dk", "dv", "dq")
    nargs = {f"desc_{n}": _Desc() for n in names} | {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_D": 64}
    bt._DQ_HOOK(nargs)
    assert [nargs[f"desc_{n}"].block_shape[2] for n in ("q", "do", "dq", "k", "v")] == [128, 128, 128, 64, 64]
    nargs["BLOCK_M"], nargs["BLOCK_N"] = 32, 128
    bt._DKDV_HOOK(nargs)
    assert [nargs[f"desc_{n}"].block_shape[2] for n in ("k", "v", "dk", "dv", "q", "do")] == [128] * 4 + [32] * 2
    assert all(nargs[f"desc_{n}"].block_shape[3] == 64 for n in names)


def test_variants_cover_every_shipped_form():
    vs = bt.tma_bwd_variants()
    assert len({v.name for v in vs}) == len(vs)
    forms = {(v.tags["kernel"], v.tags["D"], v.tags["causal"], cc) for v in vs for cc in v.archs}
    assert forms == {(kn, d, c, cc) for kn in ("dkdv_tma", "dq_tma") for d in (64, 128) for c in (True, False)
                     for cc in (90, 100)}
    assert {v.tags["dtype"] for v in vs} == {"fp16", "bf16"}
    for v in vs:
        assert v.expect_mma and v.expect_tma and v.tags["even"] is None and v.wants_wgmma
        assert v.tags["divisible_by_16"] == ["LSE", "DELTA"]
        assert all(not t.startswith("tensordesc") or k.startswith("desc_") for k, t in v.signature.items())


@pytest.mark.slow
def test_tma_backward_compiles_for_hopper_and_blackwell():
    """The largest D=128 causal fp16 tiles of each kernel and target compiled without a GPU in clean worker processes:
    no spills, fits, wgmma on sm_90a / tcgen05 on sm_100a, and TMA loads (bench.static_check's absolute rules)."""
    from tritongpt.bench import static_check as ins

    def pick(kernel, bm, bn):
        return next(v for v in bt.tma_bwd_variants() if v.tags["kernel"] == kernel and v.tags["D"] == 128
                    and v.tags["causal"] and (v.constexprs["BLOCK_M"], v.constexprs["BLOCK_N"]) == (bm, bn))

    pairs = [(pick("dkdv_tma", 64, 64), 90), (pick("dkdv_tma", 128, 64), 100), (pick("dq_tma", 128, 128), 90),
             (pick("dq_tma", 128, 128), 100)]
    findings = ins.check_pairs(pairs, "tritongpt.kernels.flash_attention_bwd_tma:tma_bwd_variants")
    assert not findings, "\n".join(map(str, findings))
