"""The attention kernels' autotune entries: one tile config with the head dims and targets it ships for, and
the sequence-length bucket the autotuners key on. Shared by the pointer and TMA forward and backward."""

from __future__ import annotations

from dataclasses import dataclass, field

import triton


@dataclass(frozen=True)
class TunedConfig:
    """One autotune entry; ``max_d`` maps a target (80, 90) to the largest BLOCK_D it is shipped
    for with fp16/bf16 inputs, ``fp32_max_d`` likewise for fp32 inputs (IEEE dots run on FMA units
    and hold far more operands in registers, so only small tiles stay spill-free). ``ragged_max_d``
    (default: ``max_d``) applies to fp16/bf16 when the shape needs masked loads (T not a multiple of
    the tile, or D below BLOCK_D): the masks cost registers, and some big tiles spill only then.
    These tables are for causal attention; non-causal code compiles differently (loop bounds, the
    tail mask), so ``full_max_d``, ``full_ragged_max_d`` and ``full_fp32_max_d`` override them for
    non-causal (None: same as causal). ``min_d`` (per target, default 16) is the smallest BLOCK_D shipped
    in any form: spills are not monotonic in D (ptxas caps some small-D 8-warp kernels at 128 registers
    and spills rather than lose occupancy)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    max_d: dict[int, int] = field(default_factory=dict, compare=False, hash=False)
    fp32_max_d: dict[int, int] = field(default_factory=dict, compare=False, hash=False)
    ragged_max_d: dict[int, int] | None = field(default=None, compare=False, hash=False)
    full_max_d: dict[int, int] | None = field(default=None, compare=False, hash=False)
    full_ragged_max_d: dict[int, int] | None = field(default=None, compare=False, hash=False)
    full_fp32_max_d: dict[int, int] | None = field(default=None, compare=False, hash=False)
    min_d: dict[int, int] = field(default_factory=dict, compare=False, hash=False)
    # Single forms measured to spill inside the ranges above (spills are not monotonic in D or form):
    # (target, BLOCK_D, causal, ragged, fp32) tuples left out.
    skip: frozenset[tuple[int, int, bool, bool, bool]] = field(default=frozenset(), compare=False, hash=False)

    def kwargs(self) -> dict[str, int]:
        return {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n}

    def config(self) -> triton.Config:
        return triton.Config(self.kwargs(), num_warps=self.num_warps, num_stages=self.num_stages)

    def archs_for(self, block_d: int, fp32: bool = False, ragged: bool = False,
                  causal: bool = True) -> tuple[int, ...]:
        if fp32:
            table = self.fp32_max_d if causal or self.full_fp32_max_d is None else self.full_fp32_max_d
        elif ragged:
            table = self.ragged_max_d if self.ragged_max_d is not None else self.max_d
            if not causal and self.full_ragged_max_d is not None:
                table = self.full_ragged_max_d
        else:
            table = self.max_d if causal or self.full_max_d is None else self.full_max_d
        return tuple(cc for cc, top in sorted(table.items()) if self.min_d.get(cc, 16) <= block_d <= top
                     and (cc, block_d, causal, ragged, fp32) not in self.skip)


def tune_bucket(t: int) -> int:
    """Autotune key for a sequence length: its power-of-two bucket, +1 when it is not a multiple of 128."""
    return triton.next_power_of_2(t) + (t % 128 != 0)
