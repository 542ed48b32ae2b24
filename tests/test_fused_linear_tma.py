"""Tests for kernels/fused_linear_tma.py: the persistent TMA forward of gelu_linear / linear, the TMA
dx / dW(+db) GEMMs of their backward, and the choice between them and the pointer kernels.

Correctness runs on the interpreter (or a GPU with sm_90+) with the TMA path forced; the reference
is fp64 PyTorch from the same low-precision inputs, and the kernel may be at most 2x PyTorch's own
error in that dtype plus ~2 ulp. The path choice is tested with capability and Triton version as
arguments, so every device class is covered without one. Fitness for real GPUs (no spills, wgmma /
tcgen05, TMA loads) is a compile-only check (slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from linear_reference import close_to_reference, reference, tf32

from tritongpt.kernels import fused_linear as fl
from tritongpt.kernels import fused_linear_tma as ft
from tritongpt.kernels import launch, tma
from tritongpt.kernels.interpreter import interpreter_enabled

pytestmark = pytest.mark.kernel

needs_descriptors = pytest.mark.skipif(not tma.descriptors_available(),
                                       reason="this Triton has no tensor descriptors (< 3.4)")


def _tma_runs_here() -> bool:
    if not tma.descriptors_available():
        return False
    if torch.cuda.is_available():
        return torch.cuda.get_device_capability()[0] >= 9
    return interpreter_enabled()


needs_tma = pytest.mark.skipif(not _tma_runs_here(), reason="needs tensor descriptors and sm_90+ or the interpreter")


def _spy(monkeypatch, name: str, calls: list) -> None:
    """Record (M, N, K) of each call of ``fused_linear_tma.<name>`` (forward: x, weight first;
    backward: dy, x)."""
    launch = getattr(ft, name)

    def spy(a, b, *rest):
        calls.append((a.shape[0], b.shape[0], a.shape[1]) if name.endswith("fwd_tma") else
                     (a.shape[0], a.shape[1], b.shape[1]))
        return launch(a, b, *rest)

    monkeypatch.setattr(ft, name, spy)


@pytest.fixture
def tma_calls(monkeypatch):
    """Force the TMA path on every launch; {"fwd": [...], "bwd": [...]} records each TMA launch's (M, N, K)."""
    calls = {"fwd": [], "bwd": []}
    _spy(monkeypatch, "fused_linear_fwd_tma", calls["fwd"])
    _spy(monkeypatch, "fused_linear_bwd_tma", calls["bwd"])
    monkeypatch.setattr(fl, "FORCE_PATH", tma.TMA)
    return calls




def _inputs(M, K, N, dtype, device, residual=False, grad=False):
    x = torch.randn(M, K, dtype=dtype, device=device)
    w = (torch.randn(N, K, device=device) / K**0.5).to(dtype)
    b = torch.randn(N, dtype=dtype, device=device)
    r = torch.randn(M, N, dtype=dtype, device=device) if residual else None
    return [t.requires_grad_(grad) if t is not None else None for t in (x, w, b, r)]


def _check(gelu, inputs, dy=None):
    """Forward (and, with dy, every gradient) against fp64 and against PyTorch in x's dtype."""
    x = inputs[0]
    fn = (lambda x, w, b, r: fl.gelu_linear(x, w, b)) if gelu else fl.linear

    def run(f, ts, dy):
        y = f(*ts)
        leaves = [t for t in ts if t is not None and t.requires_grad]
        return [y, *torch.autograd.grad(y, leaves, dy)] if dy is not None else [y]

    got = run(fn, inputs, dy)
    ref = run(lambda *a: reference(gelu, *a), [t.detach().double().requires_grad_(t.requires_grad)
                                          if t is not None else None for t in inputs],
              dy.double() if dy is not None else None)
    with tf32(x.dtype == torch.float32):
        low = run(lambda *a: reference(gelu, *a), inputs, dy)
    for i, (g, rf, lw) in enumerate(zip(got, ref, low, strict=True)):
        close_to_reference("y" if i == 0 else f"grad {i}", g, rf, lw)


# Ragged on purpose: no size is a multiple of the 32x32x32 interpreter tile, yet every row stride is
# 16-byte aligned in fp16 (TMA's rule: N=104, not 100; N=100 is the pointer path's, see below). Both
# have more tiles (12 and 10) than the interpreter's 4 "SMs": each program walks several tiles.
SHAPES = [(67, 72, 104), (130, 40, 48)]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


@needs_tma
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_linear_tma(M, K, N, dtype, device, tma_calls):
    _check(True, _inputs(M, K, N, dtype, device))
    assert tma_calls == {"fwd": [(M, N, K)], "bwd": []}


@needs_tma
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_bias_residual_tma(M, K, N, dtype, device, tma_calls):
    _check(False, _inputs(M, K, N, dtype, device, residual=True))
    assert tma_calls == {"fwd": [(M, N, K)], "bwd": []}


@needs_tma
def test_persistent_grid_walks_several_tiles():
    M, K, N = SHAPES[0]
    cfg = ft.INTERPRET_TMA_CONFIG
    tiles = -(-M // cfg.b0) * -(-N // cfg.b1)
    if interpreter_enabled():
        assert ft.num_sms(torch.device("cpu")) == ft.INTERPRET_NUM_SMS < tiles


@needs_tma
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gelu", [True, False], ids=["gelu", "linear"])
def test_autograd_through_tma(gelu, dtype, M, K, N, device, tma_calls):
    # Forward: gelu'(z) stored through a descriptor. Backward: the dx and dW(+db) TMA kernels, gated
    # by it (GELU) or not; dy's and g's boxes are ragged in M and N, x's and W's in K.
    inputs = _inputs(M, K, N, dtype, device, residual=not gelu, grad=True)
    _check(gelu, inputs, dy=torch.randn(M, N, dtype=dtype, device=device))
    assert tma_calls == {"fwd": [(M, N, K)], "bwd": [(M, N, K)]}


@needs_tma
def test_backward_tma_only_what_is_needed(device, tma_calls):
    x, w, b, _ = _inputs(67, 72, 104, torch.float16, device)
    w.requires_grad_()  # dW and db, no dx
    y = fl.gelu_linear(x, w, b)
    (dw,) = torch.autograd.grad(y, [w], torch.ones_like(y))
    xd, wd = x.double(), w.detach().double().requires_grad_()
    (ref,) = torch.autograd.grad(F.gelu(F.linear(xd, wd, b.double()), approximate="tanh").sum(), [wd])
    assert torch.allclose(dw.double(), ref, atol=0.05, rtol=0.01)
    assert tma_calls["bwd"] == [(67, 104, 72)]


@needs_tma
@pytest.mark.parametrize("subtile", [True, False])
def test_epilogue_subtile_off_and_on(subtile, device):
    # The launcher always subtiles; the un-split epilogue is the same math on the whole tile.
    M, K, N = 40, 48, 64
    x, w, b, _ = _inputs(M, K, N, torch.float16, device)
    y = torch.full((M, N), float("nan"), dtype=x.dtype, device=device)  # poisoned: unwritten shows
    g = torch.full_like(y, float("nan"))
    cfg = ft.INTERPRET_TMA_CONFIG
    part = cfg.b1 // 2 if subtile else cfg.b1
    descs = [tma.make_descriptor(t, box) for t, box in
             ((x, (cfg.b0, cfg.br)), (w, (cfg.b1, cfg.br)), (y, (cfg.b0, part)), (g, (cfg.b0, part)))]
    sms = 2
    ft._fused_linear_tma_kernel[(sms,)](
        descs[0], descs[1], b, descs[2], descs[2], descs[3], M, N, K, 64, sms,
        HAS_BIAS=True, HAS_RESIDUAL=False, GELU=True, STORE_GELU_GRAD=True, BLOCK_M=cfg.b0, BLOCK_N=cfg.b1,
        BLOCK_K=cfg.br, GROUP_M=cfg.group, EPILOGUE_SUBTILE=subtile, **ft.loop_options(None), num_warps=4,
        num_stages=1)
    z = F.linear(x.double(), w.double(), b.double()).requires_grad_()
    ref = F.gelu(z, approximate="tanh")
    (dref,) = torch.autograd.grad(ref.sum(), z)
    assert torch.allclose(y.double(), ref, atol=2e-3, rtol=2e-3)
    assert torch.allclose(g.double(), dref, atol=2e-3, rtol=2e-3)


@needs_tma
def test_forced_tma_rejects_what_tma_cannot_do(device):
    # fp16 rows of N=100 are 200 bytes: not a multiple of 16, so y has no descriptor.
    x, w, b, r = _inputs(67, 72, 100, torch.float16, device, residual=True)
    with pytest.raises(ValueError, match="not a multiple of 16 bytes"):
        fl._fused_linear_fwd_launch(x, w, b, None, True, False, path=tma.TMA)
    x, w, b, r = _inputs(67, 72, 104, torch.float16, device, residual=True)
    with pytest.raises(ValueError, match="residual"):
        fl._fused_linear_fwd_launch(x, w, b, r, True, False, path=tma.TMA)


def test_path_arguments_are_validated(monkeypatch, device):
    x, w, b, _ = _inputs(8, 16, 16, torch.float16, device)
    with pytest.raises(ValueError, match="path"):
        fl._fused_linear_fwd_launch(x, w, b, None, False, False, path="fast")
    monkeypatch.setattr(fl, "FORCE_PATH", "fast")
    with pytest.raises(ValueError, match="FORCE_PATH"):
        fl.linear(x, w, b)


# ------------------------------------------------------------------ path choice (no GPU needed)

H100, A100, B200, RTX5090 = (9, 0), (8, 0), (10, 0), (12, 0)


def _choose(M=128, K=64, N=96, dtype=torch.float16, residual=False, gelu=True, capability=H100,
            version=(3, 9), x=None):
    x = torch.randn(M, K, dtype=dtype) if x is None else x
    w = torch.randn(N, K, dtype=dtype)
    r = torch.randn(x.shape[0], N, dtype=dtype) if residual else None
    y = torch.empty(x.shape[0], N, dtype=dtype)
    return ft.choose_fwd_path(x, w, r, y, gelu, capability=capability, version=version)


@needs_descriptors
def test_path_tma_on_hopper_and_blackwell():
    assert _choose() == tma.TMA
    assert _choose(capability=B200) == tma.TMA
    assert _choose(dtype=torch.bfloat16, residual=True, gelu=False) == tma.TMA
    assert _choose(M=65) == tma.TMA


def test_path_pointer_where_tma_is_missing_or_unverified():
    assert _choose(capability=A100) == tma.POINTER  # no TMA before sm_90
    assert _choose(capability=(8, 9)) == tma.POINTER
    assert _choose(capability=None) == tma.POINTER  # CPU: the interpreter runs the pointer kernel
    assert _choose(version=(3, 3)) == tma.POINTER  # no tensor descriptors in Triton 3.3
    assert _choose(capability=RTX5090) == tma.POINTER  # TMA, but no config compiled for sm_12x


def test_path_pointer_for_decode_fp32_and_gelu_with_residual():
    assert _choose(M=64) == tma.POINTER  # decode sizes keep the non-persistent 16-row tile
    assert _choose(M=1) == tma.POINTER
    assert _choose(dtype=torch.float32) == tma.POINTER  # no fp32 TMA config is compile-checked
    assert _choose(residual=True, gelu=True) == tma.POINTER


def test_path_pointer_for_misaligned_views():
    wide = torch.randn(128, 72, dtype=torch.float16)  # 144-byte rows: aligned
    assert _choose(K=64, x=wide[:, :64]) == (tma.TMA if tma.descriptors_available() else tma.POINTER)
    assert _choose(K=64, x=wide[:, 1:65]) == tma.POINTER  # base 2 bytes off 16-byte alignment
    assert _choose(K=64, x=torch.randn(128, 100, dtype=torch.float16)[:, :64]) == tma.POINTER  # 200 B rows
    assert _choose(N=100) == tma.POINTER  # y's rows: 200 B
    assert _choose(K=60) == tma.POINTER  # x's and W's rows: 120 B


@needs_descriptors
@pytest.mark.parametrize("capability,M,want", [(H100, 128, tma.TMA), (H100, 64, tma.POINTER),
                                               (A100, 128, tma.POINTER)])
def test_launchers_follow_the_choice(capability, M, want, monkeypatch):
    """The launchers ask the device for its capability; with it mocked, the interpreter runs the
    chosen kernels (which ran is observed, the results checked against PyTorch)."""
    if not interpreter_enabled():
        pytest.skip("mocks the capability of a CPU tensor: interpreter only")
    calls = {"fwd": [], "bwd": []}
    _spy(monkeypatch, "fused_linear_fwd_tma", calls["fwd"])
    _spy(monkeypatch, "fused_linear_bwd_tma", calls["bwd"])
    monkeypatch.setattr(tma, "device_capability", lambda device: capability)
    inputs = _inputs(M, 32, 48, torch.float16, "cpu", residual=True, grad=True)
    _check(False, inputs, dy=torch.randn(M, 48, dtype=torch.float16))
    n = int(want == tma.TMA)
    assert (len(calls["fwd"]), len(calls["bwd"])) == (n, n)


def _choose_bwd(M=128, K=64, N=96, dtype=torch.float16, gate=True, capability=H100, dy=None):
    dy = torch.randn(M, N, dtype=dtype) if dy is None else dy
    g = torch.randn(M, N, dtype=dtype) if gate else None
    return ft.choose_bwd_path(dy, torch.randn(M, K, dtype=dtype), torch.randn(N, K, dtype=dtype), g,
                              capability=capability, version=(3, 9))


@needs_descriptors
def test_backward_path_choice():
    assert _choose_bwd() == tma.TMA
    assert _choose_bwd(gate=False, capability=B200, dtype=torch.bfloat16) == tma.TMA
    assert _choose_bwd(capability=A100) == tma.POINTER
    assert _choose_bwd(M=64) == tma.POINTER
    assert _choose_bwd(dtype=torch.float32) == tma.POINTER
    assert _choose_bwd(K=60) == tma.POINTER  # dx's and dW's rows: 120 B
    assert _choose_bwd(N=100) == tma.POINTER  # dy's rows: 200 B
    # The gradient of a sum: dy expanded from one element, strides (0, 0).
    assert _choose_bwd(dy=torch.ones((), dtype=torch.float16).expand(128, 96)) == tma.POINTER


def test_loop_options():
    assert ft.loop_options(H100, (3, 9)) == {"FLATTEN": True, "WARP_SPECIALIZE": False}
    assert ft.loop_options(B200, (3, 9)) == {"FLATTEN": False, "WARP_SPECIALIZE": True}
    assert ft.loop_options(B200, (3, 3)) == {"FLATTEN": True, "WARP_SPECIALIZE": False}
    assert ft.loop_options(None) == {"FLATTEN": True, "WARP_SPECIALIZE": False}


# ------------------------------------------------------------------ variants and configs


def _tma_variants():
    return [v for v in getattr(fl.variants, "__wrapped__", fl.variants)() if v.tags["kernel"].endswith("_tma")]


@needs_descriptors
def test_variants_cover_every_config_dtype_flag_set_and_target():
    vs = _tma_variants()
    got = {(v.tags["kernel"], v.tags["config"], v.tags["dtype"], v.tags["flags"], v.archs) for v in vs}
    want = set()
    for kernel in ("fwd_tma", "dx_tma", "dw_tma"):
        for ci, cfg in enumerate(ft.TMA_CONFIGS):
            for dt in ("fp16", "bf16"):
                # bf16 runs the fp16 code but for converts: the backward checks it on the first flag set.
                flag_sets = (0, 1) if kernel == "fwd_tma" or dt == "fp16" else (0,)
                want |= {(kernel, ci, dt, fi, (cc,)) for fi in flag_sets for cc in cfg.archs}
    assert got == want
    assert len({v.name for v in vs}) == len(vs)
    for v in vs:
        assert v.expect_mma and v.expect_tma and v.wants_wgmma
        descs = [t for n, t in v.signature.items() if n.endswith("_desc")]
        assert descs and all(t.startswith(f"tensordesc<{v.tags['dtype']}[") for t in descs)
        if v.tags["kernel"] == "fwd_tma":
            assert v.constexprs["WARP_SPECIALIZE"] == (v.archs == (100,))
        assert set(v.tags["divisible_by_16"]) <= set(v.signature)


@needs_descriptors
@pytest.mark.parametrize("cc,dtype,want", [(90, torch.float16, [c for c in ft.TMA_CONFIGS if 90 in c.archs]),
                                           (100, torch.bfloat16, list(ft.TMA_CONFIGS))])
def test_autotune_prune_keeps_the_configs_compiled_for_the_device(cc, dtype, want, monkeypatch):
    monkeypatch.setattr(launch, "device_limits", lambda device: (cc, 232448))
    x = torch.empty(256, 256, dtype=dtype)
    for tuned, first in ((ft._fwd_tuned, "X_desc"), (ft._dx_tuned, "DY_desc"), (ft._dw_tuned, "DY_desc")):
        prune = tuned.early_config_prune
        kept = prune(tuned.configs, {first: tma.make_descriptor(x, [64, 64])})
        assert [c.tile for c in kept] == want


def test_pointer_config_from_the_upstream_list_is_16_bit_only():
    # 128x64x32/w4/s4 compiles spill-free in every pointer kernel for fp16/bf16; fp32's GELU forward spills.
    from tritongpt.kernels import fused_linear_bwd as flb

    (cfg,) = [c for c in flb.CONFIGS if c[:6] == (128, 64, 32, 8, 4, 4)]
    assert flb.shipped_archs(cfg, torch.float16) == (80, 89, 90) and flb.shipped_archs(cfg, torch.float32) == ()
    assert flb._fits(cfg, 80, 166912, 2) and not flb._fits(cfg, 80, 166912, 4)


# ------------------------------------------------------------------ ahead-of-time compile check

_COMPILE_SCRIPT = """
import json, sys
from tritongpt.bench.aot import compile_kernel
from tritongpt.kernels import fused_linear as fl
want = set(sys.argv[1:])
for v in fl.variants():
    if v.name in want:
        s = compile_kernel(v.fn, v.signature, v.constexprs, cc=v.archs[0], num_warps=v.num_warps,
                           num_stages=v.num_stages, divisible_by_16=v.tags["divisible_by_16"])
        print(json.dumps({"name": v.name, **s.to_dict()}))
"""


@needs_descriptors
@pytest.mark.slow
def test_aot_tma_config_sm90a_and_sm100a():
    """One config, the forward with the GELU + gelu' epilogue and the gated dW(+db), compiled for
    sm_90a and sm_100a in a clean process (kernels decorated under TRITON_INTERPRET cannot compile):
    no spills, shared memory within the limit, warpgroup MMA (HGMMA) on sm_90a and tcgen05
    (UTC*MMA) on sm_100a, and TMA loads."""
    (ci,) = [i for i, c in enumerate(ft.TMA_CONFIGS) if c[:6] == (128, 128, 64, 8, 8, 4)]
    vs = [v for v in _tma_variants() if (v.tags["config"], v.tags["dtype"], v.tags["flags"]) == (ci, "fp16", 0)
          and v.tags["kernel"] in ("fwd_tma", "dw_tma")]
    assert sorted(v.archs for v in vs) == [(90,), (90,), (100,), (100,)]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT, *(v.name for v in vs)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    stats = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(s["target"] for s in stats) == ["sm_100a", "sm_100a", "sm_90a", "sm_90a"]
    for s in stats:
        family = {"sm_90a": "wgmma", "sm_100a": "tcgen05"}[s["target"]]
        assert s["stack_bytes"] == s["local_bytes"] == s["spill_instructions"] == 0, s
        assert s["fits"] and s["family"] == family and s["wgmma_instructions"] > 0, s
        assert s["tma_loads"] > 0, s
