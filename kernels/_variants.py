"""Description of one compiled form of a kernel, for ahead-of-time inspection.

Every kernel module exposes ``variants() -> list[KernelVariant]``: each shipped autotune config
(and each block-size choice its launcher makes for representative shapes), with the argument
types needed to compile it without a GPU. ``tritongpt.bench.aot`` compiles them per target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KernelVariant:
    name: str  # readable id, e.g. "attention_fwd[D=64,BM=128,BN=64,fp16]"
    fn: Any  # the @triton.jit function (or its autotune/heuristics wrapper)
    signature: dict[str, str]  # runtime argument -> Triton type ("*fp16", "i32", "fp32", ...)
    constexprs: dict[str, Any]  # constexpr argument -> value
    num_warps: int = 4
    num_stages: int = 2
    archs: tuple[int, ...] = (80, 89, 90)  # targets this variant is shipped for (after pruning)
    expect_mma: bool = False  # must use tensor cores (HMMA/HGMMA)
    tags: dict[str, Any] = field(default_factory=dict)
