"""Description of one compiled form of a kernel, for ahead-of-time inspection.

Every kernel module exposes ``variants() -> list[KernelVariant]``: each shipped autotune config
(and each block-size choice its launcher makes for representative shapes), with the argument
types needed to compile it without a GPU. ``tritongpt.bench.aot`` compiles them per target.

A variant is compiled the way a real launch is specialised: Triton's launcher marks every pointer
that is 16-byte aligned and every integer argument that is a multiple of 16 (``tt.divisibility``).
``tags["divisible_by_16"]`` names those arguments for the form the variant stands for (aligned
inputs: the pointers, strides and sizes that GPT-shaped tensors give; the unaligned form: only what
odd views still guarantee); ``launch_divisible`` derives that set from example argument values with
the launcher's own rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TMA_TARGETS = (90, 100)  # targets with TMA and warpgroup/tcgen05 MMA (sm_90a, sm_100a)


@dataclass(frozen=True)
class KernelVariant:
    name: str  # readable id, e.g. "attention_fwd[D=64,BM=128,BN=64,fp16]"
    fn: Any  # the @triton.jit function (or its autotune/heuristics wrapper)
    signature: dict[str, str]  # runtime argument -> Triton type ("*fp16", "i32", "fp32", ...)
    constexprs: dict[str, Any]  # constexpr argument -> value
    num_warps: int = 4
    num_stages: int = 2
    archs: tuple[int, ...] = (80, 89, 90)  # targets this variant is shipped for (after pruning)
    expect_mma: bool = False  # must use tensor cores (HMMA/HGMMA/UTC*MMA)
    tags: dict[str, Any] = field(default_factory=dict)
    # Must use warpgroup MMA on sm_90a (HGMMA) and tcgen05 on sm_100a (UTCHMMA). None: derived, see
    # ``wants_wgmma``.
    expect_wgmma: bool | None = None
    expect_tma: bool = False  # a TMA-path variant: must issue UTMALDG on sm_90a / sm_100a

    @property
    def wants_wgmma(self) -> bool:
        """Tensor-core variants with a 64-row (or taller) tile of fp16/bf16 operands: the shapes
        wgmma and tcgen05 take. Decode tiles, fp32 (IEEE or TF32) and small-M tiles are exempt."""
        if self.expect_wgmma is not None:
            return self.expect_wgmma
        rows = self.tags.get("block_m", self.constexprs.get("BLOCK_M", 0))
        return bool(self.expect_mma) and self.tags.get("dtype") in ("fp16", "bf16") and rows >= 64


def signature(*groups: tuple[str | Iterable[str], str]) -> dict[str, str]:
    """A variant's compile signature from (argument names, Triton type) groups, in the order given: names as
    one space-separated string or any iterable of names, e.g. ``signature(("Q K V", "*fp16"), ("H D", "i32"))``.
    Every ``variants()`` builds its signatures here; a name given twice raises ValueError."""
    sig: dict[str, str] = {}
    for names, ty in groups:
        for name in names.split() if isinstance(names, str) else names:
            if name in sig:
                raise ValueError(f"signature: argument {name!r} given twice")
            sig[name] = ty
    return sig


def tensordesc(dtype: str, box: Sequence[int]) -> str:
    """The type Triton's launcher derives from a host TensorDescriptor: element type and box, e.g.
    ``tensordesc<fp16[1, 1, 128, 64]>``."""
    return f"tensordesc<{dtype}[{', '.join(str(b) for b in box)}]>"


def launch_divisible(args: Mapping[str, Any]) -> tuple[str, ...]:
    """The arguments Triton's launcher specialises as divisible by 16, from example values: an int
    (not a bool) that is a multiple of 16, or a pointer given as its address (an object with
    ``data_ptr()``, or ``("ptr", address)``) that is 16-byte aligned. Ints equal to 1 are
    specialised as constants by the launcher; variants pass those as constexprs instead."""
    out = []
    for name, value in args.items():
        if isinstance(value, tuple) and len(value) == 2 and value[0] == "ptr":
            if value[1] % 16 == 0:
                out.append(name)
        elif hasattr(value, "data_ptr"):
            if value.data_ptr() % 16 == 0:
                out.append(name)
        elif isinstance(value, int) and not isinstance(value, bool) and value % 16 == 0:
            out.append(name)
    return tuple(out)


def align_bucket(*tensors: Any) -> int:
    """1 when Triton's launcher specialises every tensor as aligned (16-byte base address, every stride
    but the last a multiple of 16 elements), else 0. Autotuned launchers put it in the autotune key, so
    a config tuned on aligned inputs is never reused on unaligned ones, and pick their config table by
    it: unaligned inputs (odd views, rows not a multiple of 16 elements) compile to scalar loads and
    keep their own small tiles. None entries (absent optional tensors) are skipped."""
    for t in tensors:
        if t is not None and (t.data_ptr() % 16 or any(s % 16 for s in t.stride()[:-1])):
            return 0
    return 1

