"""Ahead-of-time compilation of Triton kernels for GPUs this machine does not have.

``triton.compile`` with a ``GPUTarget`` runs without a GPU and yields the cubin; Triton's bundled
``cuobjdump`` then reports registers, stack, local and shared memory, and the SASS listing shows
spills (``STL``/``LDL``), the tensor-core instruction family (``HMMA``: mma.sync on sm_80/sm_89;
``HGMMA``: warpgroup wgmma on sm_90a; ``UTCHMMA``/``UTCQMMA``/...: tcgen05 on sm_100a) and TMA copies
(``UTMALDG`` loads, ``UTMASTG`` stores, ``UTMAREDG`` reductions).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

# Per-architecture limits (max opt-in dynamic shared memory per block, SM count of the flagship).
ARCH = {
    80: {"name": "sm_80", "smem_per_block": 166912, "smem_per_sm": 167936, "regs_per_sm": 65536,
         "max_warps_per_sm": 64, "max_blocks_per_sm": 32},
    86: {"name": "sm_86", "smem_per_block": 101376, "smem_per_sm": 102400, "regs_per_sm": 65536,
         "max_warps_per_sm": 48, "max_blocks_per_sm": 16},
    89: {"name": "sm_89", "smem_per_block": 101376, "smem_per_sm": 102400, "regs_per_sm": 65536,
         "max_warps_per_sm": 48, "max_blocks_per_sm": 24},
    90: {"name": "sm_90a", "smem_per_block": 232448, "smem_per_sm": 233472, "regs_per_sm": 65536,
         "max_warps_per_sm": 64, "max_blocks_per_sm": 32},
    100: {"name": "sm_100a", "smem_per_block": 232448, "smem_per_sm": 233472, "regs_per_sm": 65536,
          "max_warps_per_sm": 64, "max_blocks_per_sm": 32},
}

# SASS opcodes by family. tcgen05 MMAs are UTC<kind>MMA (H: fp16/bf16, Q: fp8, I: int8, F: tf32, ...).
WARPGROUP_MMA = ("HGMMA", "QGMMA", "IGMMA", "BGMMA")
TMA_OPS = ("UTMALDG", "UTMASTG", "UTMAREDG", "UTMACCTL", "UTMAPF")


def mma_family(ops: list[str]) -> str:
    """The tensor-core family a kernel uses: "tcgen05", "wgmma", "mma.sync" or "none"."""
    if any(_is_tcgen05(op) for op in ops):
        return "tcgen05"
    if any(op in WARPGROUP_MMA for op in ops):
        return "wgmma"
    if any(op == "HMMA" for op in ops):
        return "mma.sync"
    return "none"


def _is_tcgen05(op: str) -> bool:
    return op.startswith("UTC") and op.endswith("MMA")


@dataclass
class CompiledStats:
    """What the compiler made of one kernel + config for one target."""

    kernel: str
    target: str
    num_warps: int
    num_stages: int
    constexprs: dict[str, Any]
    registers: int
    stack_bytes: int
    local_bytes: int
    shared_bytes: int
    spill_instructions: int  # STL + LDL in the SASS
    sass_instructions: int
    mma_instructions: int  # every tensor-core MMA: HMMA, HGMMA, tcgen05 UTC*MMA
    fits: bool
    wgmma_instructions: int = 0  # warpgroup (HGMMA) or tcgen05 (UTC*MMA) MMAs: the sm_90a/sm_100a families
    tma_instructions: int = 0  # UTMALDG + UTMASTG + UTMAREDG ...
    tma_loads: int = 0  # UTMALDG alone
    family: str = "none"  # see mma_family

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def spills(self) -> bool:
        return self.stack_bytes > 0 or self.local_bytes > 0 or self.spill_instructions > 0


def _tool(name: str) -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Triton's bundled {name} was not found at {path}")
    return path


_LLVM_SETTLED = False


def _settle_llvm_options() -> None:
    """Put LLVM's process-wide options in the state every compile after the first sees.

    Triton < 3.4 turns LLVM's global ``nvptx-short-ptr`` option on while emitting PTX and leaves it on,
    but builds the module's data layout before that step: the first kernel a process compiles is
    optimised with 64-bit shared-memory pointers, every later one with 32-bit ones, and register counts
    differ by up to ~10% (a record then depended on which worker compiled what first). One throw-away
    translation before the first compile gives every record the steady state; Triton >= 3.4 passes the
    option to both steps and needs nothing.
    """
    global _LLVM_SETTLED
    if _LLVM_SETTLED:
        return
    import triton

    if tuple(int(p) for p in re.findall(r"\d+", triton.__version__)[:2]) < (3, 4):
        from triton._C.libtriton import llvm

        llvm.init_targets()
        empty = 'target triple = "nvptx64-nvidia-cuda"\ndefine void @settle() {\n  ret void\n}\n'
        llvm.translate_to_asm(empty, "nvptx64-nvidia-cuda", "sm_80", "", ["nvptx-short-ptr"], False, False)
    _LLVM_SETTLED = True


def unwrap_jit(fn: Any) -> Any:
    # Autotuner / Heuristics wrap the JITFunction in `.fn`.
    from triton.runtime.jit import JITFunction

    while not isinstance(fn, JITFunction) and hasattr(fn, "fn"):
        fn = fn.fn
    if not isinstance(fn, JITFunction):
        raise TypeError(
            "compile_kernel needs a compilable @triton.jit kernel; kernels decorated under TRITON_INTERPRET=1 "
            "are interpreted functions (compile in a process without it: tritongpt.bench.static_check does)"
        )
    return fn


def compile_kernel(
    fn: Any,
    signature: dict[str, str],
    constexprs: dict[str, Any],
    *,
    cc: int,
    num_warps: int = 4,
    num_stages: int = 3,
    divisible_by_16: Iterable[str] | None = None,
) -> CompiledStats:
    """Compile ``fn`` for compute capability ``cc`` (80, 86, 89, 90, 100) and read its resource usage.

    ``signature`` maps every argument name to a Triton type (``"*fp16"``, ``"i32"``, ``"fp32"``,
    or ``"constexpr"``); ``constexprs`` gives the values of the constexpr arguments.
    ``divisible_by_16`` names the arguments to specialise as multiples of 16, as Triton's launcher
    does at run time for aligned pointers and sizes (default: every pointer argument). Without
    these hints the compiler cannot vectorise or pipeline, and the figures describe a kernel that
    aligned inputs never run.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if cc not in ARCH:
        raise ValueError(f"cc: expected one of {sorted(ARCH)}, got {cc}")
    jit = unwrap_jit(fn)
    _settle_llvm_options()
    sig = dict(signature)
    for k in constexprs:
        sig[k] = "constexpr"
    if divisible_by_16 is None:
        divisible_by_16 = [k for k, t in signature.items() if t.startswith("*")]
    names = list(jit.arg_names)
    attrs = {(names.index(k),): [["tt.divisibility", 16]] for k in divisible_by_16}
    src = ASTSource(fn=jit, signature=sig, constexprs=dict(constexprs), attrs=attrs)
    compiled = triton.compile(
        src, target=GPUTarget("cuda", cc, 32), options={"num_warps": num_warps, "num_stages": num_stages}
    )
    cubin = compiled.asm["cubin"]
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        res = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", path],
                             capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "--dump-sass", path],
                              capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(path)
    usage = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", res)}
    instrs = re.findall(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass, re.M)
    ops = [i.split(".")[0] for i in instrs]
    shared = max(int(getattr(compiled.metadata, "shared", 0) or 0), usage.get("SHARED", 0))
    arch = ARCH[cc]
    return CompiledStats(
        kernel=jit.__name__,
        target=arch["name"],
        num_warps=num_warps,
        num_stages=num_stages,
        constexprs=dict(constexprs),
        registers=usage.get("REG", 0),
        stack_bytes=usage.get("STACK", 0),
        local_bytes=usage.get("LOCAL", 0),
        shared_bytes=shared,
        spill_instructions=sum(op in ("STL", "LDL") for op in ops),
        sass_instructions=len(ops),
        mma_instructions=sum(op == "HMMA" or op in WARPGROUP_MMA or _is_tcgen05(op) for op in ops),
        fits=shared <= arch["smem_per_block"],
        wgmma_instructions=sum(op in WARPGROUP_MMA or _is_tcgen05(op) for op in ops),
        tma_instructions=sum(op in TMA_OPS for op in ops),
        tma_loads=sum(op == "UTMALDG" for op in ops),
        family=mma_family(ops),
    )


def occupancy(cc: int, registers: int, shared_bytes: int, num_warps: int) -> dict[str, Any]:
    """Theoretical resident warps per SM from registers, shared memory and block limits.

    Registers are allocated per warp in units of 256 (8 per thread); shared memory per block in
    units of 128 bytes plus 1 KiB the driver reserves per block on sm_80+.
    """
    a = ARCH[cc]
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = a["regs_per_sm"] // (regs_per_warp * num_warps)
    smem = -(-shared_bytes // 128) * 128 + 1024
    by_smem = a["smem_per_sm"] // smem if shared_bytes else a["max_blocks_per_sm"]
    by_warps = a["max_warps_per_sm"] // num_warps
    blocks = max(0, min(by_regs, by_smem, by_warps, a["max_blocks_per_sm"]))
    limiter = min((by_regs, "registers"), (by_smem, "shared"), (by_warps, "warps"),
                  (a["max_blocks_per_sm"], "blocks"))[1]
    return {
        "blocks_per_sm": blocks,
        "warps_per_sm": blocks * num_warps,
        "occupancy": round(blocks * num_warps / a["max_warps_per_sm"], 4),
        "limiter": limiter,
    }
