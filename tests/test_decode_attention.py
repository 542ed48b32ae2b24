"""KV-cache decode attention (flash-decoding) against a naive fp64 reference over the cache.

Tolerance rule (as tests/test_attention.py): the kernel's max error vs fp64 may be at most 2x the
error of a naive PyTorch decode in the same low dtype, plus a small atol. Every buffer the launcher
allocates (output and split partials) is poisoned with NaN, so an element nobody writes fails.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritongpt.kernels import decode_attention, launch

pytestmark = pytest.mark.kernel

# The package exports the function under the module's name: fetch the module itself.
da = importlib.import_module("tritongpt.kernels.decode_attention")

ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DT_IDS = ["float32", "float16", "bfloat16"]


@pytest.fixture(autouse=True)
def _poison(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "alloc", lambda shape, dtype, device: torch.full(shape, float("nan"), dtype=dtype,
                                                                                   device=device))


def naive(q, k, v, lengths, scale):
    """softmax over the first lengths[b] cache positions in q's dtype (softmax in >= fp32, as
    PyTorch's math SDPA does); rows of length 0 give zeros."""
    t = k.shape[2]
    s = torch.einsum("bhd,bhtd->bht", q, k) * scale
    s = s.masked_fill((torch.arange(t, device=q.device)[None, :] >= lengths[:, None])[:, None, :], float("-inf"))
    p = torch.softmax(s.to(torch.promote_types(s.dtype, torch.float32)), -1).nan_to_num(0.0).to(q.dtype)
    return torch.einsum("bht,bhtd->bhd", p, v)


def check(out, q, k, v, lengths, scale=None):
    """``out`` vs fp64 over the cache contents (k, v as they are now), with the 2x-PyTorch rule."""
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    ref = naive(q.double(), k.double(), v.double(), lengths, sc)
    low = naive(q, k, v, lengths, sc)
    assert out.dtype == q.dtype and out.shape == q.shape and out.is_contiguous()
    assert not torch.isnan(out).any(), "NaN (unwritten or bad) elements"
    err, torch_err = (out.double() - ref).abs().max().item(), (low.double() - ref).abs().max().item()
    atol = ATOL[q.dtype] * max(1.0, ref.abs().max().item())
    assert err <= 2 * torch_err + atol, f"max error {err:.3g} vs PyTorch {torch_err:.3g}"


def _make(b, h, t, d, dtype, device, lengths):
    q = torch.randn(b, h, d, dtype=dtype, device=device)
    k = torch.randn(b, h, t, d, dtype=dtype, device=device)
    v = torch.randn(b, h, t, d, dtype=dtype, device=device)
    return q, k, v, torch.tensor(lengths, device=device, dtype=torch.int64)


ODD_LENGTHS = [1, 7, 97, 130]  # one key, below a tile, prime, just past a tile boundary and = T_max


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("d", [16, 64, 80, 128])  # 80: BLOCK_D=128 with a masked tail (EVEN_D off)
def test_matches_reference(d, dtype, device):
    q, k, v, lengths = _make(4, 2, 130, d, dtype, device, ODD_LENGTHS)
    check(decode_attention(q, k, v, lengths), q, k, v, lengths)


@pytest.mark.parametrize("num_splits", [1, 2, 3, 1000])  # 1000: more splits than tiles (clamped)
def test_forced_splits(num_splits, device, monkeypatch):
    launched = _spy(monkeypatch)
    q, k, v, lengths = _make(4, 2, 130, 64, torch.float32, device, ODD_LENGTHS)
    check(decode_attention(q, k, v, lengths, num_splits=num_splits), q, k, v, lengths)
    splits, _ = da.pick_splits(8, 130, da.INTERPRET_CONFIG.block_n, da.DEFAULT_SM_COUNT, num_splits)
    assert splits == {1: 1, 2: 2, 3: 3, 1000: 9}[num_splits]  # 130 positions = 9 tiles of 16
    assert launched == [("split", (8 * splits,))] + ([("merge", (8,))] if splits > 1 else [])


def test_no_merge_launch_for_one_split(device, monkeypatch):
    """One split: the split kernel writes the output itself; one launch in all."""
    launched = _spy(monkeypatch)
    q, k, v, lengths = _make(2, 3, 20, 32, torch.float16, device, [20, 3])
    check(decode_attention(q, k, v, lengths), q, k, v, lengths)  # 2 tiles: auto picks 1 split
    assert launched == [("split", (6,))]


class _Spy:
    def __init__(self, kernel, name, log):
        self.kernel, self.name, self.log = kernel, name, log

    def __getitem__(self, grid):
        self.log.append((self.name, grid))
        return self.kernel[grid]


def _spy(monkeypatch) -> list:
    log: list = []
    monkeypatch.setattr(da, "_decode_split_kernel", _Spy(da._decode_split_kernel, "split", log))
    monkeypatch.setattr(da, "_decode_merge_kernel", _Spy(da._decode_merge_kernel, "merge", log))
    return log


def test_pick_splits_is_static_and_partitions_the_cache():
    for bh in (1, 8, 96, 4096):
        for t in (1, 15, 16, 130, 1024, 4097):
            for bn in (16, 32, 64, 128):
                s, n = da.pick_splits(bh, t, bn, 132)
                tiles = -(-t // bn)
                assert n % bn == 0 and (s - 1) * n < t <= s * n and 1 <= s <= tiles
                assert s == 1 or n >= da.MIN_SPLIT_TILES * bn or s * bh <= 2 * 132
    assert da.pick_splits(1, 1024, 64, 132) == (8, 128)  # batch 1: 16 tiles -> 8 splits of 2 tiles
    assert da.pick_splits(4096, 1024, 64, 132) == (1, 1024)  # the GPU is full already


@pytest.mark.parametrize("dtype, num_splits", [(torch.float32, 1), (torch.float16, None), (torch.bfloat16, 3)],
                         ids=["float32-1split", "float16-auto", "bfloat16-3splits"])
def test_append_writes_the_new_row_exactly(dtype, num_splits, device):
    lengths = [1, 7, 97, 130]  # the new token alone; the last position of the cache
    q, k, v, lens = _make(4, 2, 130, 24, dtype, device, lengths)
    k_new, v_new = torch.randn_like(q), torch.randn_like(q)
    want_k, want_v = k.clone(), v.clone()
    rows = torch.arange(4, device=device)
    want_k[rows, :, lens - 1] = k_new
    want_v[rows, :, lens - 1] = v_new
    out = decode_attention(q, k, v, lens, k_new=k_new, v_new=v_new, num_splits=num_splits)
    assert torch.equal(k, want_k) and torch.equal(v, want_v)  # only position lengths-1 changed, bit-exact
    check(out, q, want_k, want_v, lens)


def test_batch_slice_of_a_bigger_cache(device):
    """Caches as a batch slice of a preallocated (B_max, T_max, H, D) buffer seen as (B, H, T, D):
    non-contiguous views; the append lands in the big buffer and nothing else of it changes."""
    big_k = torch.randn(5, 40, 3, 16, device=device).permute(0, 2, 1, 3)
    big_v = torch.randn(5, 40, 3, 16, device=device).permute(0, 2, 1, 3)
    k, v = big_k[1:4], big_v[1:4]
    assert not k.is_contiguous()
    before_k, before_v = big_k.clone(), big_v.clone()
    q, k_new, v_new = (torch.randn(3, 3, 16, device=device) for _ in range(3))
    lengths = torch.tensor([40, 1, 23], device=device, dtype=torch.int32)
    out = decode_attention(q, k, v, lengths, k_new=k_new, v_new=v_new, num_splits=2)
    before_k[1 + torch.arange(3), :, lengths.long() - 1] = k_new
    before_v[1 + torch.arange(3), :, lengths.long() - 1] = v_new
    assert torch.equal(big_k, before_k) and torch.equal(big_v, before_v)
    check(out, q, k, v, lengths)


@pytest.mark.parametrize("num_splits", [1, None])
def test_zero_length_rows_give_zeros(num_splits, device):
    q, k, v, lengths = _make(3, 2, 70, 16, torch.float16, device, [0, 33, 0])
    out = decode_attention(q, k, v, lengths, num_splits=num_splits)
    assert torch.equal(out[0], torch.zeros_like(out[0])) and torch.equal(out[2], torch.zeros_like(out[2]))
    check(out, q, k, v, lengths)


def test_lengths_int64_strided_and_custom_scale(device):
    q, k, v, _ = _make(2, 2, 50, 32, torch.float32, device, [0])
    lengths = torch.tensor([9, 0, 50, 0], dtype=torch.int64, device=device)[::2]  # stride 2
    check(decode_attention(q, k, v, lengths, np.float32(0.05), num_splits=np.int64(2)), q, k, v, lengths, scale=0.05)


def test_unchecked_lengths_are_clamped(device, monkeypatch):
    """check_lengths=False (or a CUDA-graph capture) skips the host check; the kernel clamps to
    [0, T_max] so nothing outside the caches is touched: > T_max reads the whole cache, < 0 gives
    zeros."""
    q, k, v, lengths = _make(2, 1, 30, 16, torch.float32, device, [31, -5])
    with pytest.raises(ValueError, match=r"lengths: values must lie in \[0, T_max=30\].*max 31"):
        decode_attention(q, k, v, lengths)
    out = decode_attention(q, k, v, lengths, check_lengths=False)
    check(out, q, k, v, lengths.clamp(0, 30))
    monkeypatch.setattr(da, "capturing", lambda t: True)
    torch.testing.assert_close(decode_attention(q, k, v, lengths), out, rtol=0, atol=0)


def test_torch_compile_fullgraph(device):
    q, k, v, lengths = _make(2, 2, 40, 32, torch.float16, device, [5, 40])
    k_new, v_new = torch.randn_like(q), torch.randn_like(q)
    want_k, want_v = k.clone(), v.clone()
    want_k[torch.arange(2), :, lengths - 1] = k_new
    want_v[torch.arange(2), :, lengths - 1] = v_new

    def step(q_, k_, v_, lens, kn, vn):
        return decode_attention(q_, k_, v_, lens, k_new=kn, v_new=vn) * 2  # the host check runs inside the op

    out = torch.compile(step, fullgraph=True, backend="aot_eager")(q, k, v, lengths, k_new, v_new)
    assert torch.equal(k, want_k) and torch.equal(v, want_v)  # the in-place append survives tracing
    check(out / 2, q, k, v, lengths)


def test_launch_uses_the_tensors_device(device, monkeypatch):
    guarded = []

    @contextlib.contextmanager
    def guard(t):
        guarded.append(t.shape)
        yield

    monkeypatch.setattr(da, "device_guard", guard)
    q, k, v, lengths = _make(1, 2, 40, 16, torch.float32, device, [33])
    decode_attention(q, k, v, lengths, num_splits=2)
    assert guarded == [q.shape]  # both launches under one guard


def test_empty_batch(device):
    q, k, v, lengths = _make(0, 2, 8, 16, torch.float16, device, [])
    assert decode_attention(q, k, v, lengths).shape == (0, 2, 16)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(b=st.integers(1, 3), h=st.integers(1, 2), t=st.integers(1, 70), d=st.sampled_from([1, 8, 24, 48, 64]),
       dtype=st.sampled_from(DTYPES), append=st.booleans(), splits=st.sampled_from([None, 1, 2, 5]),
       data=st.data())
def test_fuzz(b, h, t, d, dtype, append, splits, data):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lengths = data.draw(st.lists(st.integers(int(append), t), min_size=b, max_size=b))
    q, k, v, lens = _make(b, h, t, d, dtype, device, lengths)
    new = {"k_new": torch.randn_like(q), "v_new": torch.randn_like(q)} if append else {}
    out = decode_attention(q, k, v, lens, num_splits=splits, **new)
    if append:
        rows = torch.arange(b, device=device)
        assert torch.equal(k[rows, :, lens - 1], new["k_new"]) and torch.equal(v[rows, :, lens - 1], new["v_new"])
    check(out, q, k, v, lens)


# ----------------------------------------------------------------------------- bad input


def _good(dev, **kw):
    args = dict(q=torch.randn(2, 3, 16, device=dev), k_cache=torch.randn(2, 3, 8, 16, device=dev),
                v_cache=torch.randn(2, 3, 8, 16, device=dev), lengths=torch.tensor([3, 8], device=dev))
    args.update(kw)
    return args


def _new(dev, **kw):
    return _good(dev, **{"k_new": torch.randn(2, 3, 16, device=dev), "v_new": torch.randn(2, 3, 16, device=dev), **kw})


BAD = {
    "q-not-tensor": (lambda d: _good(d, q=[1.0]), TypeError, "q: expected a torch.Tensor"),
    "lengths-list": (lambda d: _good(d, lengths=[3, 8]), TypeError, "lengths: expected a torch.Tensor"),
    "k_new-not-tensor": (lambda d: _good(d, k_new=1.0, v_new=torch.randn(2, 3, 16)), TypeError,
                         "k_new: expected a torch.Tensor"),
    "device": (lambda d: _good(d, k_cache=torch.empty(2, 3, 8, 16, device="meta")), ValueError,
               "k_cache: device meta does not match q"),
    "lengths-device": (lambda d: _good(d, lengths=torch.empty(2, device="meta", dtype=torch.long)), ValueError,
                       "lengths: device meta does not match q"),
    "q-rank": (lambda d: _good(d, q=torch.randn(2, 3, 1, 16, device=d)), ValueError, "q: expected a 3-D"),
    "cache-rank": (lambda d: _good(d, v_cache=torch.randn(2, 3, 16, device=d)), ValueError, "v_cache: expected a 4-D"),
    "fp64": (lambda d: _good(d, q=torch.randn(2, 3, 16, device=d).double()), TypeError, "q: expected dtype"),
    "dtype-mix": (lambda d: _good(d, k_cache=torch.randn(2, 3, 8, 16, device=d).half()), TypeError,
                  "k_cache: dtype"),
    "new-dtype": (lambda d: _new(d, v_new=torch.randn(2, 3, 16, device=d).bfloat16()), TypeError, "v_new: dtype"),
    "batch": (lambda d: _good(d, k_cache=torch.randn(3, 3, 8, 16, device=d)), ValueError, r"k_cache: expected \(B,"),
    "head-dim": (lambda d: _good(d, k_cache=torch.randn(2, 3, 8, 8, device=d)), ValueError, r"k_cache: expected \(B,"),
    "v-shape": (lambda d: _good(d, v_cache=torch.randn(2, 3, 9, 16, device=d)), ValueError,
                "v_cache: expected the shape of k_cache"),
    "D>128": (lambda d: _good(d, q=torch.randn(2, 3, 256, device=d)), ValueError, "head dim D must be"),
    "T=0": (lambda d: _good(d, k_cache=torch.randn(2, 3, 0, 16, device=d), v_cache=torch.randn(2, 3, 0, 16, device=d)),
            ValueError, "k_cache: T_max must be"),
    "last-stride": (lambda d: _good(d, k_cache=torch.randn(2, 3, 16, 8, device=d).transpose(-1, -2)), ValueError,
                    "k_cache: the last dimension must be contiguous"),
    "lengths-float": (lambda d: _good(d, lengths=torch.tensor([3.0, 8.0], device=d)), TypeError,
                      "lengths: expected dtype in"),
    "lengths-shape": (lambda d: _good(d, lengths=torch.tensor([3, 8, 1], device=d)), ValueError,
                      r"lengths: expected shape \(2,\)"),
    "lengths-2d": (lambda d: _good(d, lengths=torch.tensor([[3, 8]], device=d)), ValueError, "lengths: expected a 1-D"),
    "lengths-max": (lambda d: _good(d, lengths=torch.tensor([3, 9], device=d)), ValueError, "lengths: values"),
    "lengths-neg": (lambda d: _good(d, lengths=torch.tensor([-1, 8], device=d)), ValueError, "lengths: values"),
    "lengths-0-append": (lambda d: _new(d, lengths=torch.tensor([0, 8], device=d)), ValueError,
                         r"lengths: values must lie in \[1,"),
    "k_new-only": (lambda d: _good(d, k_new=torch.randn(2, 3, 16, device=d)), ValueError, "k_new, v_new: pass both"),
    "new-shape": (lambda d: _new(d, k_new=torch.randn(2, 1, 16, device=d)), ValueError,
                  "k_new: expected the shape of q"),
    "new-stride": (lambda d: _new(d, v_new=torch.randn(2, 16, 3, device=d).transpose(1, 2)), ValueError,
                   "v_new: the last dimension must be contiguous"),
    "splits-zero": (lambda d: {**_good(d), "num_splits": 0}, ValueError, "num_splits: expected at least 1"),
    "splits-float": (lambda d: {**_good(d), "num_splits": 2.0}, TypeError, "num_splits: expected an int"),
    "splits-bool": (lambda d: {**_good(d), "num_splits": True}, TypeError, "num_splits: expected an int"),
    "splits-tensor": (lambda d: {**_good(d), "num_splits": torch.tensor(2)}, TypeError, "num_splits: expected an int"),
    "check-int": (lambda d: {**_good(d), "check_lengths": 1}, TypeError, "check_lengths: expected a bool"),
    "scale-zero": (lambda d: {**_good(d), "sm_scale": 0.0}, ValueError, "sm_scale: expected a positive"),
    "scale-nan": (lambda d: {**_good(d), "sm_scale": float("nan")}, ValueError, "sm_scale: expected a finite"),
    "scale-tensor": (lambda d: {**_good(d), "sm_scale": torch.tensor(0.1)}, TypeError, "sm_scale: expected a Python"),
    "scale-overflow": (lambda d: {**_good(d), "sm_scale": 3e38}, ValueError, "sm_scale: .* is too large"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input(case, device, monkeypatch):
    launched = _spy(monkeypatch)
    make, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        decode_attention(**make(device))
    assert not launched  # refused before any launch


@pytest.mark.skipif(torch.cuda.is_available(), reason="fake CPU tensors pass validation only under the interpreter")
def test_int32_slice_offsets_rejected():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        big = torch.empty_strided((1, 2, 3, 16), (96, 48, 2**30 + 16, 1), dtype=torch.float16)
        ok = torch.empty(1, 2, 3, 16, dtype=torch.float16)
        q, lengths = torch.empty(1, 2, 16, dtype=torch.float16), torch.ones(1, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"v_cache: one \(batch, head\) slice spans"):
        decode_attention(q, ok, big, lengths, check_lengths=False)


# ----------------------------------------------------------------------------- AOT compile checks


def test_variants_cover_every_form():
    # The table's own forms: an older Triton's spill entries (kernels/spills.py) prune variants() further.
    vs = getattr(da.variants, "__wrapped__", da.variants)()
    assert len({v.name for v in vs}) == len(vs)
    split = [v for v in vs if v.tags["kernel"] == "split"]
    forms = {(t["D"], t["dtype"], t["even"], t["append"], t["single"], t["aligned"]) for v in split if (t := v.tags)}
    # Aligned inputs: fp16 and fp32 in every form; bf16 (fp16's code but for converts) once per head dim.
    every = {(d, dt, e, a, s, True) for d in (16, 32, 64, 128) for dt in ("fp16", "fp32")
             for e in (True, False) for a in (True, False) for s in (True, False)}
    assert {f for f in forms if f[1] != "bf16" and f[5]} == every
    assert {f for f in forms if f[1] == "bf16"} == {(d, "bf16", True, True, False, True) for d in (16, 32, 64, 128)}
    # Unaligned inputs: the split path in every dtype x append x even form, with the unaligned table.
    assert {f for f in forms if not f[5]} == {(d, dt, e, a, False, False) for d in (16, 32, 64, 128)
                                             for dt in ("fp16", "fp32") for e in (True, False) for a in (True, False)}
    for v in split:
        cfg = da.decode_config(v.tags["D"], v.tags["aligned"])
        assert (v.constexprs["BLOCK_N"], v.num_warps, v.num_stages) == (cfg.block_n, cfg.num_warps, cfg.num_stages)
        marks = set(v.tags["divisible_by_16"])
        # What the launcher marks: everything aligned (D and T_MAX only when D = BLOCK_D), else only outputs.
        if v.tags["aligned"]:
            assert {"K", "V", "stride_kt", "stride_vt"} <= marks and ("D" in marks) == v.tags["even"]
        else:
            assert marks == {"O", "PO", "PLSE"}
    assert {(v.tags["D"], v.tags["dtype"]) for v in vs if v.tags["kernel"] == "merge"} == {
        (d, dt) for d in (16, 32, 64, 128) for dt in ("fp16", "bf16", "fp32")}
    assert all(v.archs == (80, 89, 90) for v in vs)


@pytest.mark.parametrize("view", ["aligned", "odd_q", "odd_cache"])
def test_unaligned_inputs_get_the_unaligned_config(view, monkeypatch):
    """A GPU launch picks its config by align_bucket: an odd view of q (base not 16-byte aligned) or a
    cache whose rows are not 16-element multiples compiles to scalar loads and gets the smaller tile."""
    monkeypatch.setattr(da, "interpreter_enabled", lambda: False)  # the GPU's table, run on the interpreter
    picked = []
    real = da.decode_config
    monkeypatch.setattr(da, "decode_config", lambda d, aligned=True: picked.append(aligned) or real(d, aligned))
    q, k, v, lengths = _make(2, 2, 40, 64, torch.float32, "cpu", [40, 17])
    if view == "odd_q":
        q = torch.randn(2 * 2 * 64 + 1)[1:].view(2, 2, 64)
    elif view == "odd_cache":
        k = torch.randn(2, 2, 40, 72)[..., :64]
    check(decode_attention(q, k, v, lengths), q, k, v, lengths)
    assert picked == [view == "aligned"]
    assert real(64, False).block_n < real(64, True).block_n


def test_an_older_tritons_spilling_form_gets_its_listed_fallback(monkeypatch):
    """Triton 3.3 compiles a few decode forms with 8 B of stack: the launcher takes the listed fallback (same
    BLOCK_N, 8 warps) for exactly those forms and GPUs; other Tritons and forms keep the table's config."""
    from tritongpt.kernels import spills, versions

    facts = dict(BLOCK_D=64, BLOCK_N=64, SINGLE=True, HAS_NEW=False, EVEN_D=False, dtype="fp32")
    cfg = da.decode_config(64)
    monkeypatch.setattr(spills, "target_arch", lambda device: 90)
    monkeypatch.setattr(versions, "triton_version", lambda: (3, 3))
    assert da.spill_free("_decode_split_kernel", cfg, torch.device("cpu"), facts) == da.DecodeConfig(cfg.block_n, 8, 2)
    assert da.spill_free("_decode_split_kernel", cfg, torch.device("cpu"), {**facts, "SINGLE": False}) == cfg
    monkeypatch.setattr(spills, "target_arch", lambda device: 80)
    assert da.spill_free("_decode_split_kernel", cfg, torch.device("cpu"), facts) == cfg
    monkeypatch.setattr(versions, "triton_version", lambda: (3, 9))
    monkeypatch.setattr(spills, "target_arch", lambda device: 90)
    assert da.spill_free("_decode_split_kernel", cfg, torch.device("cpu"), facts) == cfg


@pytest.mark.skipif(os.environ.get("TRITONGPT_SKIP_AOT") == "1", reason="AOT checks disabled")
def test_aot_representative_spill_free():
    """The heaviest forms (D=64/128 ragged with append, each dtype, aligned and not; both merges at D=128) compile for
    sm_80 and sm_90a without spills (shared AOT inspector, cached on disk by kernel source)."""
    from tritongpt.bench import static_check as ins

    picked = [v for v in da.variants() if v.tags["D"] in (64, 128) and (
        v.tags["kernel"] == "merge" and v.tags["dtype"] != "bf16" and v.tags["D"] == 128
        or v.tags["kernel"] == "split" and not v.tags["even"] and v.tags["append"] and not v.tags["single"])]
    pairs = [(v, cc) for v in picked for cc in (80, 90)]
    findings = ins.check_pairs(pairs, "tritongpt.kernels.decode_attention:variants")
    assert not findings, "\n".join(map(str, findings))


@pytest.mark.skipif(torch.cuda.is_available(), reason="traffic is counted on the interpreter")
def test_counted_traffic_case():
    """The gate's decode traffic case: K/V read only at positions < lengths[b], each once; the only
    scratch traffic is the split partials; within 1.05x of the minimum."""
    from tritongpt.bench.traffic_cases import cases, measure

    (case,) = [c for c in cases() if c.kernel == "decode_attention"]
    r = measure(case)
    assert not r["problems"], r["problems"]
    assert r["ratio"] <= 1.05


@pytest.mark.skipif(torch.cuda.is_available(), reason="accesses are recorded on the interpreter")
@pytest.mark.parametrize("lengths, append", [([-5, 0, 31], False), ([1, 17, 30], True), ([0, 2, 99], True)],
                         ids=["negative-zero-past-end", "append-edges", "append-unchecked"])
def test_every_access_is_inside_a_buffer(lengths, append, device, monkeypatch):
    """Memory safety, also for unchecked lengths (past T_max, negative, 0 with an append): every load
    and store the kernels execute lands inside an argument or a buffer the launcher allocated."""
    from tritongpt.bench.traffic import count_traffic

    allocated = []
    monkeypatch.setattr(launch, "alloc", lambda shape, dtype, device: allocated.append(
        torch.full(shape, float("nan"), dtype=dtype, device=device)) or allocated[-1])
    # k: a view of a wider buffer: a read at position T_max of the last row lands outside every named span.
    k, v = torch.randn(3, 2, 31, 24, device=device)[:, :, :30], torch.randn(3, 2, 30, 24, device=device)
    q = torch.randn(3, 2, 24, device=device)
    new = {"k_new": torch.randn_like(q), "v_new": torch.randn_like(q)} if append else {}
    lens = torch.tensor(lengths, device=device)
    with count_traffic() as log:
        decode_attention(q, k, v, lens, num_splits=3, check_lengths=False, **new)
    named = {"q": q, "k": k, "v": v, "lengths": lens, **new, **{f"alloc{i}": t for i, t in enumerate(allocated)}}
    per = log.attribute(named)
    assert per["<unnamed>"].read == 0 and per["<unnamed>"].written == 0
