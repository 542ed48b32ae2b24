"""TMA kernels of the fused linear layers (sm_90 and newer, Triton >= 3.4): a persistent forward and
descriptor versions of the backward GEMMs.

    y = act(x @ W^T + b) (+ residual)     x (M, K), W (N, K), y (M, N); act = identity or GELU-tanh

Forward (Triton's persistent-matmul tutorial structure): the grid is min(#SMs, #tiles) programs;
program p computes output tiles p, p + #programs, ... in grouped order (GROUP_M rows of tiles
column by column, so concurrently running programs share x and W tiles in L2). x and W tiles
arrive through TMA from host ``TensorDescriptor``s built once per launch; TMA fills the parts of
a box outside the tensor with zeros, so ragged M, N and K need no masks. The epilogue is the pointer
kernel's (``fused_linear``): + bias, GELU on the fp32 accumulator (and gelu'(z) for autograd),
+ residual, one cast; it runs on the two N-halves of the accumulator in turn (EPILOGUE_SUBTILE),
which halves the epilogue's live registers and its staging buffer in shared memory, and reads the
residual and writes y (and g) through descriptors too (TMA clips the stores at the tensor's edge).
Loop options: ``tl.range(..., warp_specialize=True)`` compiles only on sm_100a in Triton 3.9
(sm_90a with 4 warps fails in the NVGPUWarpSpecialization pass), so WARP_SPECIALIZE is on for
capability >= 10; FLATTEN (one software-pipelined loop over all tiles' K steps) is on where warp
specialization is off, as in the tutorial.

Backward: ``fused_linear_bwd``'s dx = dz @ W and dW = dz^T @ x (+ db), dz = dy * gelu'(z) formed in
the prologue, with every tile loaded and the output stored through descriptors; one program per
output tile, as there (the dW GEMM's K tiles share the db sums, which the first one writes).

Scope: fp16, bf16 and fp32 (TF32 tensor cores), every tensor TMA-fit (``tma.tma_unfit``: 16-byte
aligned base and row strides, unit last stride). ``choose_fwd_path`` / ``choose_bwd_path`` pick
these kernels only for fp16/bf16 on sm_90 / sm_10x with M > 64 (decode-sized M stays on the
non-persistent pointer kernel, whose 16-row tile wastes less of the tensor cores); forced (tests),
they run fp32 too. Tile configs are autotuned per (M bucket, N, K, flags).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import launch, tma
from .device_functions import gelu_tanh, gelu_tanh_grad, grouped_pid
from .fused_linear_bwd import DW_NAMES, DX_NAMES, TileConfig, fused_linear_bwd, m_bucket
from .interpreter import interpreter_enabled
from .kernel_variant import TMA_TARGETS, KernelVariant, signature, tensordesc
from .validate import device_guard
from .versions import triton_version

# The upstream persistent-matmul tutorial's best configs (GROUP_M 8), compiled with Triton 3.9 for
# sm_90a (FLATTEN) and sm_100a (WARP_SPECIALIZE), fp16 and bf16, with both flag sets the public
# ops launch (``FLAG_SETS``: bias + GELU + gelu' store; bias + residual). Registers (fp16 / bf16,
# max over flag sets), stack bytes, shared bytes (GELU set / residual set, fp16):
#
#   config             sm_90a regs  stack  smem             sm_100a regs  stack  smem
#   128x256x64 w8 s3   235 / 248    0      180248 / 213032  168           0      180324 / 213108
#   256x128x64 w8 s3   219 / 246    0      180248 / 213032  168           0      180324 / 213108
#   128x128x64 w4 s4   224 / 250    0      147488 / 163888  255           0      147556 / 163956
#   128x128x64 w8 s4   126 / 126    0      147488 / 163888  168           0      147556 / 163956
#   64x256x32  w4 s4   255 / 255    80     98848 / 114736   255           0      106596 / 114804
#   128x64x32  w4 s4   125 / 124    0      57376 / 65584    255           0      57444 / 65652
#
# Dropped: 64x256x32/w4 on sm_90a (the GELU set spills 80 B: 40 STL/LDL, fp16 and bf16); it ships
# on sm_100a only. sm_100a's 168/255 registers are the warp-specialized partitions' allocation.
# Every form issues HGMMA (sm_90a) or UTCHMMA (sm_100a), UTMALDG and UTMASTG. With GELU and a
# residual both on (no public op asks for it) every 4-warp config but 128x64 and both 8-warp
# configs with 256-wide tiles spill on both targets (192-304 B), so the launcher keeps that
# combination on the pointer kernel.
# The backward's dx / dW kernels use the same table, (b0, b1, br) = (BLOCK_M, BLOCK_K, BLOCK_N) for dx
# and (BLOCK_N, BLOCK_K, BLOCK_M) for dW: gated and plain, fp16 and bf16, nothing spills; registers
# dx / dW at most 209 / 246 on sm_90a (128x128/w4, 256x128), 140 / 145 on sm_100a; shared memory at
# most 217168 B (gated dW, 256x128, sm_100a); one UTMASTG each. 64x256x32 compiles spill-free there
# on sm_90a as well (158 / 192 registers) but ships on sm_100a only, with the forward's entry.
TMA_CONFIGS: tuple[TileConfig, ...] = (
    TileConfig(128, 256, 64, 8, 8, 3, TMA_TARGETS),
    TileConfig(256, 128, 64, 8, 8, 3, TMA_TARGETS),
    TileConfig(128, 128, 64, 8, 4, 4, TMA_TARGETS),
    TileConfig(128, 128, 64, 8, 8, 4, TMA_TARGETS),
    TileConfig(64, 256, 32, 8, 4, 4, (100,)),
    TileConfig(128, 64, 32, 8, 4, 4, TMA_TARGETS),
)
# Under the interpreter: small tiles, and few "SMs" so each program walks several tiles.
INTERPRET_TMA_CONFIG = TileConfig(32, 32, 32, 2, 4, 1, ())
INTERPRET_NUM_SMS = 4


@triton.jit
def _epilogue_part(
    acc,  # (BLOCK_M, PART_N) fp32 slice of the accumulator
    off_m, off_n, B, R_desc, Y_desc, G_desc, N,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, GELU: tl.constexpr, STORE_GELU_GRAD: tl.constexpr,
    PART_N: tl.constexpr,
):
    if HAS_BIAS:
        offs_n = off_n + tl.arange(0, PART_N)
        acc += tl.load(B + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    out = acc
    if GELU:
        out, s, e = gelu_tanh(acc)
    if HAS_RESIDUAL:
        out += R_desc.load([off_m, off_n]).to(tl.float32)
    Y_desc.store([off_m, off_n], out.to(Y_desc.dtype))
    if GELU:
        if STORE_GELU_GRAD:
            G_desc.store([off_m, off_n], gelu_tanh_grad(acc, s, e).to(G_desc.dtype))


@triton.jit
def _fused_linear_tma_kernel(
    X_desc,  # (M, K), box (BLOCK_M, BLOCK_K)
    W_desc,  # (N, K), box (BLOCK_N, BLOCK_K)
    B,  # (N,) pointer, read only when HAS_BIAS
    R_desc,  # (M, N) residual, box (BLOCK_M, BLOCK_N // 2 if EPILOGUE_SUBTILE else BLOCK_N)
    Y_desc,  # (M, N), same box
    G_desc,  # (M, N) gelu'(z), written only when STORE_GELU_GRAD; same box
    M, N, K,
    M_BUCKET,  # autotune key only
    NUM_SMS,  # programs in the grid: the stride of the persistent tile loop
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, GELU: tl.constexpr, STORE_GELU_GRAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EPILOGUE_SUBTILE: tl.constexpr, FLATTEN: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
):
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    # The epilogue recomputes its tile's coordinates from its own counter: with FLATTEN the next
    # tile's loads are issued before this tile's epilogue, and sharing pid_m/pid_n would tie them.
    epi_tile = tl.program_id(0) - NUM_SMS
    for tile in tl.range(tl.program_id(0), num_pid_m * num_pid_n, NUM_SMS, flatten=FLATTEN,
                         warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = grouped_pid(tile, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            a = X_desc.load([off_m, ki * BLOCK_K])  # (BLOCK_M, BLOCK_K)
            w = W_desc.load([off_n, ki * BLOCK_K])  # (BLOCK_N, BLOCK_K)
            acc = tl.dot(a, w.T, acc=acc)

        epi_tile += NUM_SMS
        pid_m, pid_n = grouped_pid(epi_tile, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        if EPILOGUE_SUBTILE:
            # (BLOCK_M, BLOCK_N) -> two (BLOCK_M, BLOCK_N // 2) column halves.
            acc0, acc1 = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
            _epilogue_part(acc0, off_m, off_n, B, R_desc, Y_desc, G_desc, N,
                           HAS_BIAS, HAS_RESIDUAL, GELU, STORE_GELU_GRAD, BLOCK_N // 2)
            _epilogue_part(acc1, off_m, off_n + BLOCK_N // 2, B, R_desc, Y_desc, G_desc, N,
                           HAS_BIAS, HAS_RESIDUAL, GELU, STORE_GELU_GRAD, BLOCK_N // 2)
        else:
            _epilogue_part(acc, off_m, off_n, B, R_desc, Y_desc, G_desc, N,
                           HAS_BIAS, HAS_RESIDUAL, GELU, STORE_GELU_GRAD, BLOCK_N)


@triton.jit
def _linear_bwd_dx_tma_kernel(
    DY_desc,  # (M, N), box (BLOCK_M, BLOCK_N)
    G_desc,  # (M, N) gelu'(z), read only when HAS_GATE; same box
    W_desc,  # (N, K), box (BLOCK_N, BLOCK_K)
    DX_desc,  # (M, K), box (BLOCK_M, BLOCK_K)
    M, N, K,
    M_BUCKET,  # autotune key only
    HAS_GATE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr,
):
    # dx = (dy * g) @ W, the pointer kernel's (fused_linear_bwd) GEMM with TMA boxes: zero padding
    # past N makes the ragged last step exact, the store is clipped at M and K.
    pid_m, pid_k = grouped_pid(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_K), GROUP_M)
    off_m = pid_m * BLOCK_M
    off_k = pid_k * BLOCK_K
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n in range(0, tl.cdiv(N, BLOCK_N)):
        dz = DY_desc.load([off_m, n * BLOCK_N])  # (BLOCK_M, BLOCK_N)
        if HAS_GATE:
            dz = (dz.to(tl.float32) * G_desc.load([off_m, n * BLOCK_N]).to(tl.float32)).to(DY_desc.dtype)
        acc = tl.dot(dz, W_desc.load([n * BLOCK_N, off_k]), acc=acc)
    DX_desc.store([off_m, off_k], acc.to(DX_desc.dtype))


@triton.jit
def _linear_bwd_dw_tma_kernel(
    DY_desc,  # (M, N), box (BLOCK_M, BLOCK_N)
    G_desc,  # (M, N) gelu'(z), read only when HAS_GATE; same box
    X_desc,  # (M, K), box (BLOCK_M, BLOCK_K)
    DW_desc,  # (N, K), box (BLOCK_N, BLOCK_K)
    DB,  # (N,) pointer, written only when HAS_BIAS
    M, N, K,
    M_BUCKET,  # autotune key only
    HAS_GATE: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr, GROUP_N: tl.constexpr,
):
    # dW = (dy * g)^T @ x and db = sum_m (dy * g), as the pointer kernel: db comes from the dz tiles
    # the first K tile's programs already hold (zero padding past M adds nothing).
    pid_n, pid_k = grouped_pid(tl.program_id(0), tl.cdiv(N, BLOCK_N), tl.cdiv(K, BLOCK_K), GROUP_N)
    off_n = pid_n * BLOCK_N
    off_k = pid_k * BLOCK_K
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m in range(0, tl.cdiv(M, BLOCK_M)):
        dz = DY_desc.load([m * BLOCK_M, off_n])  # (BLOCK_M, BLOCK_N)
        if HAS_GATE:
            dz32 = dz.to(tl.float32) * G_desc.load([m * BLOCK_M, off_n]).to(tl.float32)
            dz = dz32.to(DY_desc.dtype)
        else:
            dz32 = dz.to(tl.float32)
        if HAS_BIAS:
            db += tl.sum(dz32, axis=0)
        acc = tl.dot(dz.T, X_desc.load([m * BLOCK_M, off_k]), acc=acc)
    DW_desc.store([off_n, off_k], acc.to(DW_desc.dtype))
    if HAS_BIAS:
        if pid_k == 0:
            offs_n = off_n + tl.arange(0, BLOCK_N)
            tl.store(DB + offs_n, db.to(DB.dtype.element_ty), mask=offs_n < N)


# ----------------------------------------------------------------------------- host side

# Box of each descriptor argument, by block-size names: the descriptors are built once per launch,
# before the autotuner picks a config, and each config's pre_hook then sets the boxes it uses (the
# kernel is specialised on them). PART_N is the epilogue's slice of BLOCK_N.
FWD_BOXES = {"X_desc": ("BLOCK_M", "BLOCK_K"), "W_desc": ("BLOCK_N", "BLOCK_K"), "R_desc": ("BLOCK_M", "PART_N"),
             "Y_desc": ("BLOCK_M", "PART_N"), "G_desc": ("BLOCK_M", "PART_N")}
DX_BOXES = {"DY_desc": ("BLOCK_M", "BLOCK_N"), "G_desc": ("BLOCK_M", "BLOCK_N"), "W_desc": ("BLOCK_N", "BLOCK_K"),
            "DX_desc": ("BLOCK_M", "BLOCK_K")}
DW_BOXES = {"DY_desc": ("BLOCK_M", "BLOCK_N"), "G_desc": ("BLOCK_M", "BLOCK_N"), "X_desc": ("BLOCK_M", "BLOCK_K"),
            "DW_desc": ("BLOCK_N", "BLOCK_K")}
# Block-size names of a TileConfig's (out0, out1, reduction, group), per kernel (as the pointer kernels').
FWD_NAMES = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")


def block_dims(names: tuple[str, ...], cfg: TileConfig) -> dict[str, int]:
    """The config's block sizes under the kernel's names; PART_N: the forward's subtiled epilogue."""
    dims = dict(zip(names, cfg[:4], strict=True))
    return {**dims, "PART_N": dims["BLOCK_N"] // 2}


def _box_hook(boxes: dict[str, tuple[str, str]]):
    def set_boxes(nargs: dict) -> None:
        dims = {**nargs, "PART_N": nargs["BLOCK_N"] // (2 if nargs.get("EPILOGUE_SUBTILE") else 1)}
        for name, box in boxes.items():
            nargs[name].block_shape = [dims[d] for d in box]

    return set_boxes


def smem_lower_bound(cfg: TileConfig, elem_bytes: int) -> int:
    """Shared memory every kernel here needs at least: num_stages - 1 pipelined pairs of operand boxes.
    (Measured sizes, in the TMA_CONFIGS table, are larger; a config the autotuner keeps that then
    does not fit fails to launch with OutOfResources, which the autotuner skips.)"""
    return (cfg.num_stages - 1) * (cfg.b0 + cfg.b1) * cfg.br * elem_bytes


def target_arch(capability: tuple[int, int] | None) -> int | None:
    """The compile target whose checks cover a device (sm_90 -> 90, sm_10x -> 100), or None: the
    TMA configs were compiled for those two only (sm_12x has TMA but neither wgmma nor tcgen05)."""
    if capability is None:
        return None
    return {9: 90, 10: 100}.get(capability[0])


def loop_options(capability: tuple[int, int] | None, version: tuple[int, int] | None = None) -> dict[str, bool]:
    """FLATTEN / WARP_SPECIALIZE for the persistent tile loop on this device and Triton.

    Warp specialization: Blackwell only (Triton 3.9 fails to compile it on sm_90a with 4 warps and
    gains nothing with 8) and Triton >= 3.4 (``tl.range(warp_specialize=)``); flattening the loop
    nest is what Hopper pipelines instead, and the tutorial does not combine the two.
    """
    ws = capability is not None and capability[0] >= 10 and (version or triton_version()) >= (3, 4)
    return {"FLATTEN": not ws, "WARP_SPECIALIZE": ws}


def num_sms(device: torch.device) -> int:
    """Programs of the persistent grid: the device's SM count; a few under the interpreter, so that
    each program walks several tiles as on a GPU."""
    return launch.sm_count(device, INTERPRET_NUM_SMS)


def _prune_by(first_desc: str):
    def prune(configs: list, named_args: dict, **kwargs) -> list:
        t = named_args[first_desc].base  # a descriptor's tensor: the launch device and dtype
        cc, smem = launch.device_limits(t.device)
        arch = target_arch((cc // 10, cc % 10))
        es = t.element_size()
        kept = [c for c in configs if arch in c.tile.archs and smem_lower_bound(c.tile, es) <= smem]
        # Never leave the autotuner empty: the smallest tile fits every device this path runs on.
        return kept or [min(configs, key=lambda c: smem_lower_bound(c.tile, es))]

    return prune


def _tuned(kernel, names: tuple[str, ...], boxes: dict, key: list[str], **extra):
    """``kernel`` autotuned over TMA_CONFIGS (plus the constexprs ``extra``), boxes set per config."""
    configs = []
    for cfg in TMA_CONFIGS:
        c = triton.Config({**dict(zip(names, cfg[:4], strict=True)), **extra}, num_warps=cfg.num_warps,
                          num_stages=cfg.num_stages, pre_hook=_box_hook(boxes))
        c.tile = cfg  # read back by the prune hook
        configs.append(c)
    return triton.autotune(configs=configs, key=key,
                           prune_configs_by={"early_config_prune": _prune_by(next(iter(boxes)))})(kernel)


_fwd_tuned = _tuned(_fused_linear_tma_kernel, FWD_NAMES, FWD_BOXES,
                    ["M_BUCKET", "N", "K", "HAS_BIAS", "HAS_RESIDUAL", "GELU", "STORE_GELU_GRAD"],
                    EPILOGUE_SUBTILE=True)
_dx_tuned = _tuned(_linear_bwd_dx_tma_kernel, DX_NAMES, DX_BOXES, ["M_BUCKET", "N", "K", "HAS_GATE"])
_dw_tuned = _tuned(_linear_bwd_dw_tma_kernel, DW_NAMES, DW_BOXES, ["M_BUCKET", "N", "K", "HAS_GATE", "HAS_BIAS"])


def _descriptors(boxes: dict[str, tuple[str, str]], dims: dict[str, int], **tensors: torch.Tensor | None):
    """Descriptors for the given tensors with ``dims``' boxes (re-set per config on a GPU); a
    tensor given as None gets the first descriptor as a dummy (never dereferenced; same box)."""
    out = {n: tma.make_descriptor(t, [dims[d] for d in boxes[n]]) for n, t in tensors.items() if t is not None}
    dummy = next(iter(out.values()))
    return [out.get(n, dummy) for n in boxes]


DECODE_MAX_M = 64  # at or below: the pointer kernel (its 16-row tile fits decode batches)
_TMA_DTYPES = (torch.float16, torch.bfloat16)  # what the configs were compiled for (variants())


def _tma_candidate(M: int, dtype: torch.dtype, capability: tuple[int, int] | None) -> bool:
    return M > DECODE_MAX_M and dtype in _TMA_DTYPES and target_arch(capability) is not None


def choose_fwd_path(
    x: torch.Tensor,  # (M, K)
    weight: torch.Tensor,  # (N, K)
    residual: torch.Tensor | None,  # (M, N)
    y: torch.Tensor,  # (M, N) the output, allocated (its row stride decides too)
    gelu: bool,
    *,
    capability: tuple[int, int] | None,
    version: tuple[int, int] | None = None,
) -> str:
    """``tma.TMA`` for the persistent kernel, ``tma.POINTER`` for the tiled pointer kernel.

    TMA needs what ``tma.choose_path`` checks (Triton with descriptors, sm_90+, every tensor
    TMA-fit) and a device the configs were compiled for (sm_90 / sm_10x), fp16 or bf16, M above
    the decode sizes, and not GELU and a residual together (the public ops never ask for both;
    the big tiles spill with both epilogues on).
    """
    if not _tma_candidate(x.shape[0], x.dtype, capability) or (gelu and residual is not None):
        return tma.POINTER
    dims = block_dims(FWD_NAMES, TMA_CONFIGS[0])  # every config's boxes pass the same box rules
    pairs = [(t, [dims[d] for d in FWD_BOXES[n]]) for n, t in
             (("X_desc", x), ("W_desc", weight), ("Y_desc", y), ("R_desc", residual)) if t is not None]
    return tma.choose_path(pairs, capability=capability, version=version)


def choose_bwd_path(
    dy: torch.Tensor,  # (M, N)
    x: torch.Tensor,  # (M, K)
    weight: torch.Tensor,  # (N, K)
    gate: torch.Tensor | None,  # (M, N)
    *,
    capability: tuple[int, int] | None,
    version: tuple[int, int] | None = None,
) -> str:
    """The backward's path, by the forward's rules; dx (M, K) and dW (N, K) are allocated
    contiguous, so their K-long rows must be 16-byte multiples too."""
    if not _tma_candidate(dy.shape[0], dy.dtype, capability) or (x.shape[1] * x.element_size()) % 16:
        return tma.POINTER
    dims = block_dims(DX_NAMES, TMA_CONFIGS[0])
    pairs = [(t, [dims[d] for d in DX_BOXES[n]]) for n, t in
             (("DY_desc", dy), ("G_desc", gate), ("W_desc", weight)) if t is not None]
    pairs.append((x, [dims[d] for d in DW_BOXES["X_desc"]]))
    return tma.choose_path(pairs, capability=capability, version=version)


def _launch(kernel, tuned, names: tuple[str, ...], grid_dims: tuple[str, str], sizes: dict[str, int], args: tuple,
            persistent: int | None = None, **flags) -> None:
    """Launch ``kernel`` with the interpreter tile (and the configs' other constexprs), or its autotuned
    twin. The grid covers the output tiles (``grid_dims`` name the two block sizes, ``sizes`` their
    extents); a persistent grid has at most that many programs."""
    def grid(meta):
        tiles = triton.cdiv(sizes[grid_dims[0]], meta[grid_dims[0]]) * triton.cdiv(sizes[grid_dims[1]], meta[grid_dims[1]])
        return (min(persistent, tiles) if persistent else tiles,)

    if interpreter_enabled():
        extra = {k: v for k, v in tuned.configs[0].kwargs.items() if k not in names}
        meta = {**extra, **dict(zip(names, INTERPRET_TMA_CONFIG[:4], strict=True)), **flags}
        kernel[grid(meta)](*args, **meta, num_warps=INTERPRET_TMA_CONFIG.num_warps, num_stages=1)
    else:
        tuned[grid](*args, **flags)


def fused_linear_fwd_tma(
    x: torch.Tensor,  # (M, K)
    weight: torch.Tensor,  # (N, K)
    bias: torch.Tensor | None,  # (N,)
    residual: torch.Tensor | None,  # (M, N)
    y: torch.Tensor,  # (M, N) output
    g: torch.Tensor | None,  # (M, N) gelu'(z) output when storing it
    gelu: bool,
) -> None:
    """Launch the persistent TMA kernel into ``y`` (and ``g``); M, N >= 1.

    ValueError when a tensor breaks a TMA rule (``tma.make_descriptor`` names it) or when GELU and a
    residual are both asked for (see ``choose_fwd_path``).
    """
    if gelu and residual is not None:
        raise ValueError("residual: the TMA path does not fuse a residual after GELU; use the pointer path")
    M, K = x.shape
    N = weight.shape[0]
    dims = block_dims(FWD_NAMES, INTERPRET_TMA_CONFIG if interpreter_enabled() else TMA_CONFIGS[0])
    xd, wd, rd, yd, gd = _descriptors(FWD_BOXES, dims, Y_desc=y, X_desc=x, W_desc=weight, R_desc=residual, G_desc=g)
    sms = num_sms(x.device)
    flags = dict(HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None, GELU=gelu,
                 STORE_GELU_GRAD=g is not None)
    capability = tma.device_capability(x.device) if not interpreter_enabled() else None
    with device_guard(x):
        _launch(_fused_linear_tma_kernel, _fwd_tuned, FWD_NAMES, ("BLOCK_M", "BLOCK_N"), {"BLOCK_M": M, "BLOCK_N": N},
                (xd, wd, bias if bias is not None else y, rd, yd, gd, M, N, K, m_bucket(M), sms), persistent=sms,
                **flags, **loop_options(capability))


def fused_linear_bwd_tma(
    dy: torch.Tensor,  # (M, N)
    x: torch.Tensor,  # (M, K)
    weight: torch.Tensor,  # (N, K)
    gate: torch.Tensor | None,  # (M, N) gelu'(z) or None
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``fused_linear_bwd.fused_linear_bwd`` with TMA loads and stores (same kernels' math, same
    outputs); empty operands go to the pointer kernels, which handle them. ValueError (naming the
    rule) for a tensor TMA cannot read."""
    M, N = dy.shape
    K = x.shape[1]
    if min(M, N, K) == 0:
        return fused_linear_bwd(dy, x, weight, gate, need_dx, need_dw, need_db)
    interp = interpreter_enabled()
    dx = dw = db = None
    flags = dict(HAS_GATE=gate is not None)
    sizes = {"BLOCK_M": M, "BLOCK_N": N, "BLOCK_K": K}
    with device_guard(dy):
        if need_dx:
            dx = torch.empty((M, K), dtype=x.dtype, device=x.device)
            dims = block_dims(DX_NAMES, INTERPRET_TMA_CONFIG if interp else TMA_CONFIGS[0])
            descs = _descriptors(DX_BOXES, dims, DY_desc=dy, G_desc=gate, W_desc=weight, DX_desc=dx)
            _launch(_linear_bwd_dx_tma_kernel, _dx_tuned, DX_NAMES, ("BLOCK_M", "BLOCK_K"), sizes,
                    (*descs, M, N, K, m_bucket(M)), **flags)
        if need_dw or need_db:
            dw = torch.empty((N, K), dtype=weight.dtype, device=weight.device)
            db = torch.empty((N,), dtype=weight.dtype, device=weight.device) if need_db else dw
            dims = block_dims(DW_NAMES, INTERPRET_TMA_CONFIG if interp else TMA_CONFIGS[0])
            dyd, gd, xd, dwd = _descriptors(DW_BOXES, dims, DY_desc=dy, G_desc=gate, X_desc=x, DW_desc=dw)
            _launch(_linear_bwd_dw_tma_kernel, _dw_tuned, DW_NAMES, ("BLOCK_N", "BLOCK_K"), sizes,
                    (dyd, gd, xd, dwd, db, M, N, K, m_bucket(M)), **flags, HAS_BIAS=need_db)
    return dx, dw if need_dw else None, db if need_db else None


# ----------------------------------------------------------------------------- AOT variants

# The flag sets the public ops launch: gelu_linear while training, linear with bias + residual.
FLAG_SETS = (dict(HAS_BIAS=True, HAS_RESIDUAL=False, GELU=True, STORE_GELU_GRAD=True),
             dict(HAS_BIAS=True, HAS_RESIDUAL=True, GELU=False, STORE_GELU_GRAD=False))
# (tag, kernel, block names, boxes, pointer args, flag sets): the backward's as fused_linear.variants().
_SPECS = (
    ("fwd_tma", _fused_linear_tma_kernel, FWD_NAMES, FWD_BOXES, ("B",), FLAG_SETS),
    ("dx_tma", _linear_bwd_dx_tma_kernel, DX_NAMES, DX_BOXES, (), (dict(HAS_GATE=True), dict(HAS_GATE=False))),
    ("dw_tma", _linear_bwd_dw_tma_kernel, DW_NAMES, DW_BOXES, ("DB",),
     (dict(HAS_GATE=True, HAS_BIAS=True), dict(HAS_GATE=False, HAS_BIAS=True))),
)


def variant_signature(boxes: dict, dims: dict[str, int], pointers: tuple[str, ...], dtype: str,
                      persistent: bool) -> dict[str, str]:
    """Compile signature: a descriptor is typed by element and box (``tensordesc<fp16[128, 64]>``,
    what Triton's launcher derives from a host TensorDescriptor); the rest as runtime values."""
    return signature(*((n, tensordesc(dtype, (dims[a], dims[b]))) for n, (a, b) in boxes.items()),
                     (pointers, f"*{dtype}"), (("M", "N", "K", "M_BUCKET", *(("NUM_SMS",) if persistent else ())), "i32"))


def variants() -> list[KernelVariant]:
    """Each TMA config x kernel x representative flags, per target in its archs (sm_90a, sm_100a), with
    the loop options the launcher picks there: the forward in fp16 and bf16 for both flag sets, the
    backward (as the pointer kernels' variants) in fp16 for both and bf16 for the first. None on a
    Triton without descriptors."""
    if not tma.descriptors_available():
        return []
    out: list[KernelVariant] = []
    for tag, fn, names, boxes, pointers, flag_sets in _SPECS:
        fwd = tag == "fwd_tma"
        for ci, cfg in enumerate(TMA_CONFIGS):
            dims = block_dims(names, cfg)
            for dtype in ("fp16", "bf16"):
                for fi, flags in enumerate(flag_sets if fwd or dtype == "fp16" else flag_sets[:1]):
                    for cc in cfg.archs:
                        consts = {**flags, **dict(zip(names, cfg[:4], strict=True))}
                        if fwd:
                            consts.update(EPILOGUE_SUBTILE=True, **loop_options((cc // 10, 0)))
                        on = ",".join(k for k, v in flags.items() if v)
                        out.append(KernelVariant(
                            name=f"fused_linear_{tag}[{cfg.b0}x{cfg.b1}x{cfg.br},w{cfg.num_warps},"
                                 f"s{cfg.num_stages},{dtype},{on},sm{cc}]",
                            fn=fn, signature=variant_signature(boxes, dims, pointers, dtype, fwd), constexprs=consts,
                            num_warps=cfg.num_warps, num_stages=cfg.num_stages, archs=(cc,), expect_mma=True,
                            expect_wgmma=True, expect_tma=True,
                            tags={"kernel": tag, "config": ci, "dtype": dtype, "flags": fi, "block_m": cfg.b0,
                                  # Launch specialisation for aligned shapes: the pointers and sizes
                                  # (GPT-2's are multiples of 16); descriptors carry no such hint and
                                  # the SM count (132 on H100) is not a multiple of 16.
                                  "divisible_by_16": (*pointers, "M", "N", "K", "M_BUCKET")},
                        ))
    return out
