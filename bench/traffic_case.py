"""One counted-traffic case and its measurement: the bytes a kernel launch moves under the interpreter,
attributed to its named tensors and compared with the minimum (each input read once, each output written
once). The cases themselves live in ``traffic_cases`` and the per-kernel modules beside it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tritongpt.engine.gpu_peaks import A100, H100, roofline_seconds

from .traffic import TensorTraffic, count_traffic


@dataclass
class Case:
    name: str
    kernel: str
    setup: Callable[[], dict[str, Any]]  # builds the inputs (not counted)
    run: Callable[[dict[str, Any]], dict[str, torch.Tensor]]  # launches the kernel(s) -> outputs (counted)
    flops: int
    target_ratio: float | None = None  # bytes moved / minimum must stay under this
    rules: Callable[[dict[str, TensorTraffic], dict[str, Any]], list[str]] | None = None
    note: str = ""
    params: dict[str, Any] = field(default_factory=dict)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def measure(case: Case) -> dict[str, Any]:
    inputs = case.setup()
    with count_traffic() as log:
        outputs = case.run(inputs)
    inputs = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    per = log.attribute({**{f"in:{k}": v for k, v in inputs.items()}, **{f"out:{k}": v for k, v in outputs.items()}})
    minimum = sum(_nbytes(t) for t in inputs.values() if t is not None)
    minimum += sum(_nbytes(t) for t in outputs.values() if t is not None)
    moved = log.total
    problems = case.rules(per, case.params) if case.rules else []
    if case.target_ratio is not None and moved > case.target_ratio * minimum:
        problems.append(f"moves {moved / minimum:.3f}x the minimum bytes (target <= {case.target_ratio:.2f}x)")
    return {
        "case": case.name,
        "kernel": case.kernel,
        "bytes_moved": moved,
        "bytes_read": log.bytes_read,
        "bytes_written": log.bytes_written,
        "min_bytes": minimum,
        "ratio": round(moved / minimum, 4) if minimum else None,
        "flops": case.flops,
        "floor_us_h100": round(roofline_seconds(case.flops, minimum, H100) * 1e6, 3),
        "floor_us_a100": round(roofline_seconds(case.flops, minimum, A100) * 1e6, 3),
        "tensors": {k: vars(v) for k, v in per.items() if v.read or v.written},
        "problems": problems,
        "note": case.note,
    }
