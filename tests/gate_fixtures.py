"""Deliberately bad kernels for tests/test_inspect.py: the gate must catch each one.

Imported by the inspector's worker processes by name (``gate_fixtures:bad_variants``), so they
live in a plain module, not in the test file. Never shipped.
"""

from __future__ import annotations

import triton
import triton.language as tl

from tritongpt.kernels.kernel_variant import KernelVariant


@triton.jit
def _spilling_kernel(X, Y, BLOCK: tl.constexpr):
    # Two 128 x 128 fp32 tiles live at once in one warp: ~1000 values per thread, far over 255.
    r = tl.arange(0, BLOCK)
    offs = r[:, None] * BLOCK + r[None, :]
    a = tl.load(X + offs)
    b = tl.load(X + BLOCK * BLOCK + offs)
    c = tl.exp(a) * b + tl.sqrt(tl.abs(b)) * a
    tl.store(Y + offs, c + tl.sum(a * b, axis=0)[None, :])
    tl.store(Y + BLOCK * BLOCK + offs, c * a - tl.max(b, axis=1)[:, None])


@triton.jit
def _huge_smem_kernel(A, B, C, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # A pipelined 256 x 256 x 128 fp16 GEMM with 4 stages: ~512 KiB of shared memory.
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a = tl.load(A + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(B + (k + rk)[:, None] * BLOCK_N + rn[None, :])
        acc += tl.dot(a, b)
    tl.store(C + rm[:, None] * BLOCK_N + rn[None, :], acc)


@triton.jit
def _no_tensor_core_matmul(A, B, C, BLOCK: tl.constexpr):
    # A "matmul" by broadcast-multiply-reduce: correct, but never touches the tensor cores.
    r = tl.arange(0, BLOCK)
    a = tl.load(A + r[:, None] * BLOCK + r[None, :]).to(tl.float32)
    b = tl.load(B + r[:, None] * BLOCK + r[None, :]).to(tl.float32)
    c = tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    tl.store(C + r[:, None] * BLOCK + r[None, :], c)


@triton.jit
def _copy_kernel(X, Y, N, BLOCK: tl.constexpr, READ_TWICE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(X + offs, mask=mask)
    if READ_TWICE:  # the regression: the input is loaded again instead of reusing registers
        x = x + tl.load(X + offs, mask=mask) * 0
    tl.store(Y + offs, x, mask=mask)


@triton.jit
def _tile_matmul(A, B, C, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # One fp16 tile product with plain pointer loads: wgmma/tcgen05 at 4+ warps on sm_90a/sm_100a, but
    # mma.sync (HMMA) when compiled with 2 warps (wgmma needs a whole 4-warp warpgroup).
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a = tl.load(A + rm[:, None] * BLOCK_K + rk[None, :])
    b = tl.load(B + rk[:, None] * BLOCK_N + rn[None, :])
    tl.store(C + rm[:, None] * BLOCK_N + rn[None, :], tl.dot(a, b))


@triton.jit
def _tma_tile_matmul(A, B, C, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # The same product through device-side tensor descriptors (TMA loads and store).
    a_desc = tl.make_tensor_descriptor(A, [BLOCK_M, BLOCK_K], [BLOCK_K, 1], [BLOCK_M, BLOCK_K])
    b_desc = tl.make_tensor_descriptor(B, [BLOCK_K, BLOCK_N], [BLOCK_N, 1], [BLOCK_K, BLOCK_N])
    c_desc = tl.make_tensor_descriptor(C, [BLOCK_M, BLOCK_N], [BLOCK_N, 1], [BLOCK_M, BLOCK_N])
    c_desc.store([0, 0], tl.dot(a_desc.load([0, 0]), b_desc.load([0, 0])))


def modern_variants() -> list[KernelVariant]:
    """sm_90a / sm_100a instruction-family fixtures: a 64-row fp16 tile that lost wgmma (2 warps), a
    pointer kernel that claims the TMA path, and a clean wgmma + TMA kernel."""
    sig = {"A": "*fp16", "B": "*fp16", "C": "*fp32"}
    tile = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}
    tags = {"dtype": "fp16", "block_m": 64}
    return [
        KernelVariant("fixture_mma_sync[64x64,w2]", _tile_matmul, sig, tile, num_warps=2, num_stages=1,
                      archs=(90, 100), expect_mma=True, tags=tags),
        KernelVariant("fixture_fake_tma[64x64,w4]", _tile_matmul, sig, tile, num_warps=4, num_stages=1,
                      archs=(90, 100), expect_mma=True, expect_tma=True, tags=tags),
        KernelVariant("fixture_tma[64x64,w4]", _tma_tile_matmul, sig, tile, num_warps=4, num_stages=1,
                      archs=(90, 100), expect_mma=True, expect_tma=True, tags=tags),
    ]


def bad_variants() -> list[KernelVariant]:
    return [
        KernelVariant("fixture_spill[128x128,w1]", _spilling_kernel, {"X": "*fp32", "Y": "*fp32"},
                      {"BLOCK": 128}, num_warps=1, num_stages=1, archs=(80,)),
        KernelVariant("fixture_smem[256x256x128,s4]", _huge_smem_kernel,
                      {"A": "*fp16", "B": "*fp16", "C": "*fp32", "K": "i32"},
                      {"BLOCK_M": 256, "BLOCK_N": 256, "BLOCK_K": 128}, num_warps=8, num_stages=4, archs=(80,),
                      expect_mma=True),
        KernelVariant("fixture_no_mma[32]", _no_tensor_core_matmul, {"A": "*fp16", "B": "*fp16", "C": "*fp32"},
                      {"BLOCK": 32}, num_warps=4, num_stages=1, archs=(80,), expect_mma=True),
        KernelVariant("fixture_copy[1024]", _copy_kernel, {"X": "*fp32", "Y": "*fp32", "N": "i32"},
                      {"BLOCK": 1024, "READ_TWICE": False}, num_warps=4, num_stages=1, archs=(80, 90)),
    ]
