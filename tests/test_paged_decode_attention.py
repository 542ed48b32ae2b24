"""Paged-KV-cache decode attention against a fp64 reference and against decode_attention on the same cache laid
out contiguously.

Tolerance rule (as tests/test_decode_attention.py): the kernel's max error vs fp64 may be at most 2x the error of
a naive PyTorch decode in the same low dtype, plus a small atol. The launcher's buffers are poisoned with NaN, so
an element nobody writes fails. Block tables are shuffled (pages of a row are scattered over the pool, never in
order) and hold -1 past each row's last used page, so a read of an unused entry shows.
"""

from __future__ import annotations

import importlib
import math
import os

import numpy as np
import pytest
import torch

from tritongpt.engine import ops
from tritongpt.kernels import decode_attention, launch, paged_decode_attention

pytestmark = pytest.mark.kernel

# The package exports the functions under the modules' names: fetch the modules themselves.
pda = importlib.import_module("tritongpt.kernels.paged_decode_attention")
da = importlib.import_module("tritongpt.kernels.decode_attention")

ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DT_IDS = ["float32", "float16", "bfloat16"]


def _nan_alloc(shape, dtype, device):
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


@pytest.fixture(autouse=True)
def _poison(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "alloc", _nan_alloc)


class Paged:
    """A pool of ``num_pages`` pages, a shuffled block table for ``lengths`` and the same cache contiguous."""

    def __init__(self, b, h, d, page, max_pages, dtype, device, lengths, num_pages=None, append=False):
        num_pages = num_pages or b * max_pages + 3  # spare pages nobody owns: reading one shows
        self.page, self.max_pages = page, max_pages
        self.q = torch.randn(b, h, d, dtype=dtype, device=device)
        self.k_pool = torch.randn(num_pages, h, page, d, dtype=dtype, device=device)
        self.v_pool = torch.randn(num_pages, h, page, d, dtype=dtype, device=device)
        self.lengths = torch.tensor(lengths, dtype=torch.int32, device=device)
        table = torch.randperm(num_pages, device=device)[: b * max_pages].view(b, max_pages).int()
        used = torch.arange(max_pages, device=device) < (self.lengths[:, None] + page - 1) // page
        self.tables = torch.where(used, table, -1).int()
        self.new = {"k_new": torch.randn_like(self.q), "v_new": torch.randn_like(self.q)} if append else {}

    def contiguous(self, pool: torch.Tensor) -> torch.Tensor:
        """(B, H, capacity, D): the pool's pages in table order (unused pages as zeros)."""
        b, h, d = self.q.shape
        pages = pool[self.tables.clamp(min=0).long()]  # (B, max_pages, H, page, D)
        pages = pages * (self.tables >= 0)[:, :, None, None, None]
        return pages.transpose(1, 2).reshape(b, h, self.max_pages * self.page, d)

    def run(self, **kw):
        return paged_decode_attention(self.q, self.k_pool, self.v_pool, self.tables, self.lengths, **self.new, **kw)


def naive(q, k, v, lengths, scale):
    """softmax over the first lengths[b] positions in q's dtype (softmax in >= fp32); empty rows give zeros."""
    s = torch.einsum("bhd,bhtd->bht", q, k) * scale
    s = s.masked_fill((torch.arange(k.shape[2], device=q.device) >= lengths[:, None])[:, None, :], float("-inf"))
    p = torch.softmax(s.to(torch.promote_types(s.dtype, torch.float32)), -1).nan_to_num(0.0).to(q.dtype)
    return torch.einsum("bht,bhtd->bhd", p, v)


def check(out, q, k, v, lengths, scale=None):
    """``out`` vs fp64 over the contiguous cache (k, v), with the 2x-PyTorch rule."""
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    ref = naive(q.double(), k.double(), v.double(), lengths, sc)
    low = naive(q, k, v, lengths, sc)
    assert out.dtype == q.dtype and out.shape == q.shape and out.is_contiguous()
    assert not torch.isnan(out).any(), "NaN (unwritten or bad) elements"
    err, torch_err = (out.double() - ref).abs().max().item(), (low.double() - ref).abs().max().item()
    atol = ATOL[q.dtype] * max(1.0, ref.abs().max().item())
    assert err <= 2 * torch_err + atol, f"max error {err:.3g} vs PyTorch {torch_err:.3g}"


def _edge_lengths(page: int, capacity: int) -> list[int]:
    # empty row, one key, exactly one page, one past a page boundary, the whole capacity
    return [0, 1, page, page + 1, capacity]


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("d, page, max_pages", [(64, 16, 6), (80, 32, 3)],  # 80: BLOCK_D=128, masked tail
                         ids=["d64-page16", "d80-page32"])
def test_matches_reference_and_contiguous_kernel(d, page, max_pages, dtype, device):
    c = Paged(5, 2, d, page, max_pages, dtype, device, _edge_lengths(page, page * max_pages))
    k, v = c.contiguous(c.k_pool), c.contiguous(c.v_pool)
    out = c.run()
    check(out, c.q, k, v, c.lengths)
    assert torch.equal(out[0], torch.zeros_like(out[0]))  # length 0
    # Same capacity, so the same split plan and tile order as the contiguous kernel.
    torch.testing.assert_close(out, decode_attention(c.q, k, v, c.lengths), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype, page, num_splits", [(torch.float32, 16, 1), (torch.float16, 32, None),
                                                     (torch.bfloat16, 16, 3)],
                         ids=["float32-p16-1split", "float16-p32-auto", "bfloat16-p16-3splits"])
def test_append_writes_exactly_the_new_slot(dtype, page, num_splits, device):
    c = Paged(4, 2, 24, page, 3, dtype, device, [1, page, page + 1, 3 * page], append=True)
    want_k, want_v = c.k_pool.clone(), c.v_pool.clone()
    pos = c.lengths.long() - 1
    pages = c.tables.long().gather(1, (pos // page)[:, None]).squeeze(1)
    want_k[pages, :, pos % page] = c.new["k_new"]
    want_v[pages, :, pos % page] = c.new["v_new"]
    out = c.run(num_splits=num_splits)
    assert torch.equal(c.k_pool, want_k) and torch.equal(c.v_pool, want_v)  # that slot alone, bit-exact
    check(out, c.q, c.contiguous(c.k_pool), c.contiguous(c.v_pool), c.lengths)


class _Spy:
    def __init__(self, kernel, name, log):
        self.kernel, self.name, self.log = kernel, name, log

    def __getitem__(self, grid):
        self.log.append((self.name, grid))
        return self.kernel[grid]


def _spy(monkeypatch) -> list:
    log: list = []
    monkeypatch.setattr(pda, "_paged_decode_split_kernel", _Spy(pda._paged_decode_split_kernel, "split", log))
    monkeypatch.setattr(da, "_decode_merge_kernel", _Spy(da._decode_merge_kernel, "merge", log))
    return log


@pytest.mark.parametrize("num_splits", [1, 2, 1000])  # 1000: more splits than tiles (clamped)
def test_forced_splits(num_splits, device, monkeypatch):
    launched = _spy(monkeypatch)
    c = Paged(3, 2, 32, 16, 5, torch.float32, device, [80, 17, 33], append=True)
    out = c.run(num_splits=num_splits)
    check(out, c.q, c.contiguous(c.k_pool), c.contiguous(c.v_pool), c.lengths)
    splits = {1: 1, 2: 2, 1000: 5}[num_splits]  # 80 positions = 5 interpreter tiles of 16
    assert launched == [("split", (6 * splits,))] + ([("merge", (6,))] if splits > 1 else [])


@pytest.mark.parametrize("d, page, block_n", [(64, 16, 64), (128, 16, 32), (48, 128, 16)],
                         ids=["4-pages-per-tile", "2-pages-per-tile", "tile-inside-a-page"])
def test_gpu_tiles_gather_pages(d, page, block_n, device):
    """The shipped GPU tiles on the interpreter: a BLOCK_N tile spans several scattered pages (page 16), or
    several tiles share one page (page 128)."""
    capacity = 256
    c = Paged(3, 1, d, page, capacity // page, torch.float16, device, [capacity, 70, page + 1], append=True)
    cfg = da.decode_config(d) if block_n != 16 else da.DecodeConfig(16, 4, 1)
    assert cfg.block_n == block_n
    out = pda.paged_decode_attention_launch(c.q, c.k_pool, c.v_pool, c.tables, c.lengths, d**-0.5, **c.new,
                                            num_splits=2, config=cfg)
    check(out, c.q, c.contiguous(c.k_pool), c.contiguous(c.v_pool), c.lengths)


def test_strided_pools_int64_table_custom_scale(device):
    """Pools as a view of a (num_pages, page, H, D) buffer, an int64 table, strided int64 lengths."""
    c = Paged(2, 3, 16, 16, 4, torch.float32, device, [50, 0])
    buf_k, buf_v = c.k_pool.transpose(1, 2).contiguous(), c.v_pool.transpose(1, 2).contiguous()
    k_pool, v_pool = buf_k.transpose(1, 2), buf_v.transpose(1, 2)
    assert not k_pool.is_contiguous()
    lengths = torch.tensor([50, 7, 0, 3], dtype=torch.int64, device=device)[::2]
    out = paged_decode_attention(c.q, k_pool, v_pool, c.tables.long(), lengths, np.float32(0.05),
                                 num_splits=np.int64(2))
    check(out, c.q, c.contiguous(c.k_pool), c.contiguous(c.v_pool), lengths, scale=0.05)


def test_bad_table_entries_and_lengths_checked_on_the_host(device):
    c = Paged(2, 1, 16, 16, 2, torch.float32, device, [20, 3], num_pages=4)
    tables = c.tables.clone()
    tables[1, 0] = 4  # a used entry past the pool
    with pytest.raises(ValueError, match=r"block_tables: 1 entries .* num_pages=4\), e.g. block_tables\[1, 0\] = 4"):
        paged_decode_attention(c.q, c.k_pool, c.v_pool, tables, c.lengths)
    tables = c.tables.clone()
    tables[1, 1] = 99  # past row 1's last used page: never read, so fine
    check(paged_decode_attention(c.q, c.k_pool, c.v_pool, tables, c.lengths), c.q, c.contiguous(c.k_pool),
          c.contiguous(c.v_pool), c.lengths)
    with pytest.raises(ValueError, match=r"lengths: values must lie in \[0, capacity=32\].*max 33"):
        paged_decode_attention(c.q, c.k_pool, c.v_pool, c.tables, torch.tensor([33, 3], device=device))
    with pytest.raises(ValueError, match=r"lengths: values must lie in \[1, capacity=32\]"):
        paged_decode_attention(c.q, c.k_pool, c.v_pool, c.tables, torch.tensor([0, 3], device=device),
                               k_new=c.q, v_new=c.q)


@pytest.mark.skipif(torch.cuda.is_available(), reason="accesses are recorded on the interpreter")
@pytest.mark.parametrize("append", [False, True])
def test_unchecked_input_stays_inside_the_buffers(append, device, monkeypatch):
    """check_lengths=False: lengths past the capacity or negative and table entries outside the pool are clamped
    in the kernel; every load and store lands inside an argument or a buffer the launcher allocated."""
    from tritongpt.bench.traffic import count_traffic

    allocated = []
    monkeypatch.setattr(launch, "alloc", lambda shape, dtype, device: allocated.append(
        _nan_alloc(shape, dtype, device)) or allocated[-1])
    c = Paged(3, 2, 24, 16, 2, torch.float32, device, [32, 17, 1], num_pages=7, append=append)
    tables = c.tables.clone()
    tables[0, 1], tables[1, 0] = 1000, -7  # used entries outside the pool
    lengths = torch.tensor([99, 17, -4 if not append else 0], dtype=torch.int32, device=device)
    with count_traffic() as log:
        out = paged_decode_attention(c.q, c.k_pool, c.v_pool, tables, lengths, num_splits=2, check_lengths=False,
                                     **c.new)
    named = {"q": c.q, "k": c.k_pool, "v": c.v_pool, "tables": tables, "lengths": lengths, **c.new,
             **{f"alloc{i}": t for i, t in enumerate(allocated)}}
    per = log.attribute(named)
    assert per["<unnamed>"].read == 0 and per["<unnamed>"].written == 0
    assert not torch.isnan(out).any()
    if not append:
        assert torch.equal(out[2], torch.zeros_like(out[2]))  # negative length: a zero row


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_engine_seam_backends_agree(dtype, device):
    """ops.paged_decode_attention: the torch reference path and the kernel give the same output and leave the
    same pools (the append included)."""
    c = Paged(4, 2, 40, 16, 4, dtype, device, [64, 1, 16, 17], append=True)
    pools = [(c.k_pool.clone(), c.v_pool.clone()) for _ in range(2)]
    outs = [ops.paged_decode_attention(c.q, kp, vp, c.tables, c.lengths, c.new["k_new"], c.new["v_new"],
                                       backend=backend) for (kp, vp), backend in zip(pools, ["torch", "triton"],
                                                                                     strict=True)]
    assert torch.equal(pools[0][0], pools[1][0]) and torch.equal(pools[0][1], pools[1][1])
    check(outs[0], c.q, c.contiguous(pools[0][0]), c.contiguous(pools[0][1]), c.lengths)
    check(outs[1], c.q, c.contiguous(pools[0][0]), c.contiguous(pools[0][1]), c.lengths)
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(outs[0], outs[1], rtol=tol, atol=tol)
    # Without an append, and with a zero-length row: the torch path gives a zero row too.
    lengths = torch.tensor([0, 1, 9, 30], dtype=torch.int32, device=device)  # within each row's pages
    ref = ops.paged_decode_attention(c.q, c.k_pool, c.v_pool, c.tables, lengths)
    assert torch.equal(ref[0], torch.zeros_like(ref[0]))
    torch.testing.assert_close(ops.paged_decode_attention(c.q, c.k_pool, c.v_pool, c.tables, lengths,
                                                          backend="triton"), ref, rtol=tol, atol=tol)


def test_torch_compile_fullgraph(device):
    c = Paged(2, 2, 32, 16, 3, torch.float16, device, [5, 48], append=True)
    want_k = c.k_pool.clone()
    pos = c.lengths.long() - 1
    want_k[c.tables.long().gather(1, (pos // 16)[:, None]).squeeze(1), :, pos % 16] = c.new["k_new"]

    def step(q, kp, vp, tables, lens, kn, vn):
        return paged_decode_attention(q, kp, vp, tables, lens, k_new=kn, v_new=vn) * 2

    out = torch.compile(step, fullgraph=True, backend="aot_eager")(c.q, c.k_pool, c.v_pool, c.tables, c.lengths,
                                                                   c.new["k_new"], c.new["v_new"])
    assert torch.equal(c.k_pool, want_k)  # the in-place append survives tracing
    check(out / 2, c.q, c.contiguous(c.k_pool), c.contiguous(c.v_pool), c.lengths)


def test_opcheck(device):
    c = Paged(2, 1, 16, 16, 2, torch.float32, device, [20, 3], append=True)
    args = (c.q, c.k_pool, c.v_pool, c.tables, c.lengths, 0.25, c.new["k_new"], c.new["v_new"], None, True)
    torch.library.opcheck(torch.ops.tritongpt.paged_decode_attention.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


def test_backward_raises(device):
    c = Paged(1, 1, 16, 16, 1, torch.float32, device, [3])
    q = c.q.clone().requires_grad_()
    out = paged_decode_attention(q, c.k_pool, c.v_pool, c.tables, c.lengths)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        out.sum().backward()


def test_empty_batch(device):
    q = torch.randn(0, 2, 16, device=device)
    pool = torch.randn(3, 2, 16, 16, device=device)
    out = paged_decode_attention(q, pool, pool.clone(), torch.zeros(0, 2, dtype=torch.int32, device=device),
                                 torch.zeros(0, dtype=torch.int32, device=device))
    assert out.shape == (0, 2, 16)


# ----------------------------------------------------------------------------- bad input


def _good(dev, **kw):
    args = dict(q=torch.randn(2, 3, 16, device=dev), k_pool=torch.randn(5, 3, 16, 16, device=dev),
                v_pool=torch.randn(5, 3, 16, 16, device=dev),
                block_tables=torch.tensor([[0, 1], [2, -1]], dtype=torch.int32, device=dev),
                lengths=torch.tensor([20, 8], device=dev))
    args.update(kw)
    return args


def _new(dev, **kw):
    return _good(dev, **{"k_new": torch.randn(2, 3, 16, device=dev), "v_new": torch.randn(2, 3, 16, device=dev), **kw})


def _pool(*shape, dev="cpu", **kw):
    return torch.randn(*shape, device=dev, **kw)


BAD = {
    "q-not-tensor": (lambda d: _good(d, q=[1.0]), TypeError, "q: expected a torch.Tensor"),
    "table-list": (lambda d: _good(d, block_tables=[[0, 1], [2, 3]]), TypeError, "block_tables: expected a torch"),
    "pool-device": (lambda d: _good(d, k_pool=torch.empty(5, 3, 16, 16, device="meta")), ValueError,
                    "k_pool: device meta does not match q"),
    "table-device": (lambda d: _good(d, block_tables=torch.zeros(2, 2, dtype=torch.int32, device="meta")),
                     ValueError, "block_tables: device meta does not match q"),
    "pool-rank": (lambda d: _good(d, v_pool=_pool(3, 16, 16, dev=d)), ValueError, "v_pool: expected a 4-D"),
    "fp64": (lambda d: _good(d, q=_pool(2, 3, 16, dev=d).double()), TypeError, "q: expected dtype"),
    "dtype-mix": (lambda d: _good(d, k_pool=_pool(5, 3, 16, 16, dev=d).half()), TypeError, "k_pool: dtype"),
    "new-dtype": (lambda d: _new(d, v_new=_pool(2, 3, 16, dev=d).bfloat16()), TypeError, "v_new: dtype"),
    "heads": (lambda d: _good(d, k_pool=_pool(5, 2, 16, 16, dev=d)), ValueError,
              r"k_pool: expected \(num_pages, H, page_size, D\)"),
    "head-dim": (lambda d: _good(d, k_pool=_pool(5, 3, 16, 8, dev=d)), ValueError, r"k_pool: expected \(num_pages,"),
    "v-shape": (lambda d: _good(d, v_pool=_pool(6, 3, 16, 16, dev=d)), ValueError, "v_pool: expected the shape"),
    "page-8": (lambda d: _good(d, k_pool=_pool(5, 3, 8, 16, dev=d), v_pool=_pool(5, 3, 8, 16, dev=d)), ValueError,
               "k_pool: page_size .* power of two >= 16, got 8"),
    "page-24": (lambda d: _good(d, k_pool=_pool(5, 3, 24, 16, dev=d), v_pool=_pool(5, 3, 24, 16, dev=d)), ValueError,
                "k_pool: page_size .* got 24"),
    "no-pages": (lambda d: _good(d, k_pool=_pool(0, 3, 16, 16, dev=d), v_pool=_pool(0, 3, 16, 16, dev=d)),
                 ValueError, "k_pool: expected at least one page"),
    "last-stride": (lambda d: _good(d, k_pool=_pool(5, 3, 16, 16, dev=d).transpose(-1, -2)), ValueError,
                    "k_pool: the last dimension must be contiguous"),
    "D>128": (lambda d: _good(d, q=_pool(2, 3, 256, dev=d)), ValueError, "head dim D must be"),
    "table-float": (lambda d: _good(d, block_tables=torch.zeros(2, 2, device=d)), TypeError,
                    r"block_tables: expected dtype in \(int32, int64\)"),
    "table-int16": (lambda d: _good(d, block_tables=torch.zeros(2, 2, dtype=torch.int16, device=d)), TypeError,
                    "block_tables: expected dtype"),
    "table-rows": (lambda d: _good(d, block_tables=torch.zeros(3, 2, dtype=torch.int32, device=d)), ValueError,
                   r"block_tables: expected shape \(2, max_pages\)"),
    "table-1d": (lambda d: _good(d, block_tables=torch.zeros(2, dtype=torch.int32, device=d)), ValueError,
                 "block_tables: expected a 2-D"),
    "table-no-pages": (lambda d: _good(d, block_tables=torch.zeros(2, 0, dtype=torch.int32, device=d)), ValueError,
                       "block_tables: expected shape"),
    "table-entry": (lambda d: _good(d, block_tables=torch.tensor([[0, 5], [2, -1]], dtype=torch.int32, device=d)),
                    ValueError, r"block_tables: 1 entries .* e.g. block_tables\[0, 1\] = 5"),
    "lengths-float": (lambda d: _good(d, lengths=torch.tensor([3.0, 8.0], device=d)), TypeError,
                      "lengths: expected dtype in"),
    "lengths-shape": (lambda d: _good(d, lengths=torch.tensor([3, 8, 1], device=d)), ValueError,
                      r"lengths: expected shape \(2,\)"),
    "lengths-max": (lambda d: _good(d, lengths=torch.tensor([3, 33], device=d)), ValueError, "lengths: values"),
    "lengths-0-append": (lambda d: _new(d, lengths=torch.tensor([0, 8], device=d)), ValueError,
                         r"lengths: values must lie in \[1,"),
    "k_new-only": (lambda d: _good(d, k_new=_pool(2, 3, 16, dev=d)), ValueError, "k_new, v_new: pass both"),
    "new-shape": (lambda d: _new(d, k_new=_pool(2, 1, 16, dev=d)), ValueError, "k_new: expected the shape of q"),
    "splits-zero": (lambda d: {**_good(d), "num_splits": 0}, ValueError, "num_splits: expected at least 1"),
    "splits-float": (lambda d: {**_good(d), "num_splits": 2.0}, TypeError, "num_splits: expected an int"),
    "check-int": (lambda d: {**_good(d), "check_lengths": 1}, TypeError, "check_lengths: expected a bool"),
    "scale-zero": (lambda d: {**_good(d), "sm_scale": 0.0}, ValueError, "sm_scale: expected a positive"),
    "scale-tensor": (lambda d: {**_good(d), "sm_scale": torch.tensor(0.1)}, TypeError, "sm_scale: expected a Python"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input(case, device, monkeypatch):
    launched = _spy(monkeypatch)
    make, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        paged_decode_attention(**make(device))
    assert not launched  # refused before any launch


# ----------------------------------------------------------------------------- AOT compile checks


def test_variants_cover_every_form():
    vs = getattr(pda.variants, "__wrapped__", pda.variants)()
    assert len({v.name for v in vs}) == len(vs) and all(v.name.startswith("paged_decode_attention_split[") for v in vs)
    forms = {(t["D"], t["dtype"], t["even"], t["append"], t["single"], t["page_size"], t["aligned"])
             for v in vs if (t := v.tags)}
    every = {(d, dt, e, a, s, 16, True) for d in (64, 128) for dt in ("fp16", "fp32") for e in (True, False)
             for a in (True, False) for s in (True, False)}
    assert every <= forms
    assert {(d, "bf16", e, True, False, 16, True) for d in (64, 128) for e in (True, False)} <= forms
    assert {(d, dt, e, a, False, 128, True) for d in (64, 128) for dt in ("fp16", "fp32") for e in (True, False)
            for a in (True, False)} <= forms
    assert {(d, dt, e, a, False, 16, False) for d in (64, 128) for dt in ("fp16", "fp32") for e in (True, False)
            for a in (True, False)} <= forms
    for v in vs:
        cfg = pda.paged_config(v.tags["D"], v.tags["aligned"], v.tags["even"], v.tags["dtype"] != "fp32")
        assert (v.constexprs["BLOCK_N"], v.num_warps, v.num_stages) == (cfg.block_n, cfg.num_warps, cfg.num_stages)
        marks = set(v.tags["divisible_by_16"])
        assert ("K" in marks) == v.tags["aligned"] and ("D" in marks) == (v.tags["aligned"] and v.tags["even"])
        assert v.archs == (80, 89, 90)


def test_gpu_config_is_decode_attentions_but_for_ragged_half_d64():
    """The paged kernel streams the contiguous kernel's tiles; only fp16/bf16 with D in 33..63 takes 8 warps
    (4 spill on sm_90a), on the same BLOCK_N so the split plan is unchanged."""
    for d in (16, 32, 48, 64, 80, 128):
        for aligned in (True, False):
            for half in (True, False):
                cfg, base = pda.paged_config(d, aligned, d in (16, 32, 64, 128), half), da.decode_config(d, aligned)
                assert cfg.block_n == base.block_n
                assert cfg.num_warps == (8 if (d, aligned, half) == (48, True, True) else base.num_warps)


def test_launcher_picks_the_gpu_config(device, monkeypatch):
    monkeypatch.setattr(pda, "interpreter_enabled", lambda: False)  # the GPU's table, run on the interpreter
    picked = []
    real = pda.paged_config
    monkeypatch.setattr(pda, "paged_config", lambda *a: picked.append(a) or real(*a))
    c = Paged(2, 1, 48, 16, 4, torch.float16, device, [64, 20], append=True)
    check(c.run(), c.q, c.contiguous(c.k_pool), c.contiguous(c.v_pool), c.lengths)
    assert picked == [(48, True, False, True)]  # aligned, ragged, half: 8 warps, BLOCK_N 64


def test_launch_marks_match_the_aligned_variant(device):
    """The launcher's own divisibility rule on a real aligned launch's arguments gives the aligned form's tags."""
    from tritongpt.kernels.kernel_variant import launch_divisible

    c = Paged(2, 2, 64, 16, 16, torch.float16, device, [40, 256], append=True)
    b, h, d = c.q.shape
    args = dict(Q=c.q, K=c.k_pool, V=c.v_pool, KN=c.new["k_new"], VN=c.new["v_new"], BT=c.tables,
                LENS=c.lengths, O=c.q, PO=torch.empty(b, h, 2, d), PLSE=torch.empty(64))
    args.update(zip(pda._STRIDES, [*c.q.stride()[:2], *c.k_pool.stride()[:3], *c.v_pool.stride()[:3],
                                   *c.q.stride()[:2], *c.q.stride()[:2], c.tables.stride(0)], strict=False))
    args.update(CAPACITY=256, D=d)
    assert set(launch_divisible(args)) == set(pda._divisible(True, True))


@pytest.mark.skipif(os.environ.get("TRITONGPT_SKIP_AOT") == "1", reason="AOT checks disabled")
def test_aot_representative_spill_free():
    """Ragged appending split forms at pages of 16: fp16 at BLOCK_D=64 (the form that takes 8 warps) and fp32 at
    BLOCK_D=128 compile for sm_80 and sm_90a without spills (shared AOT inspector, cached on disk by source)."""
    from tritongpt.bench import static_check as ins

    picked = [v for v in pda.variants() if (v.tags["D"], v.tags["dtype"]) in ((64, "fp16"), (128, "fp32"))
              and not v.tags["even"] and v.tags["append"] and not v.tags["single"] and v.tags["page_size"] == 16
              and v.tags["aligned"]]
    assert len(picked) == 2 and picked[0].num_warps == 8
    pairs = [(v, cc) for v in picked for cc in (80, 90)]
    findings = ins.check_pairs(pairs, "tritongpt.kernels.paged_decode_attention:variants")
    assert not findings, "\n".join(map(str, findings))
