"""The kernel sweeps of ``tritongpt bench kernels`` under pytest-benchmark: ``pytest bench/ --benchmark-only``.

One test per sweep x point x provider (ids are the ``bench kernels`` record names). Forward passes are captured
in a CUDA graph of one call and timed as graph replays (no Python or launch cost beyond one replay per call);
backward passes run through autograd directly. The L2 is not flushed between calls: ``l2: "warm"``.
Accuracy is ``tritongpt bench kernels``'s job; here a baseline that cannot run is skipped, ours failing fails.
The quick set by default; ``TRITONGPT_BENCH_FULL=1`` for every sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from tritongpt.bench import kernels as kb
from tritongpt.bench import metrics
from tritongpt.bench.devices import lookup
from tritongpt.bench.pytest_gpu import calls_per_round, case_params
from tritongpt.bench.timing import no_gc

ROUNDS = 20
WARMUP_ROUNDS = 2
CASES = {cid: (sweep, point, prov) for cid, sweep, point, prov in case_params()}


def _graphed(thunk: Callable[[], Any]) -> tuple[Callable[[], Any], str]:
    """(graph.replay of one call, "cuda_graph"), or (thunk, "direct") when the call cannot be captured."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # compile, autotune and allocator warm-up outside the capture
        for _ in range(3):
            thunk()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with no_gc(), torch.cuda.graph(graph):
            thunk()
    except Exception as e:  # host syncs or allocations the capture refuses: time the plain calls
        torch.cuda.synchronize()
        return thunk, f"direct ({kb.skip_reason(e)})"
    return graph.replay, "cuda_graph"


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_kernel_speed(benchmark: Any, case: str) -> None:
    sweep, point, prov = CASES[case]
    benchmark.group = sweep.name
    reason = sweep.skip(point, prov)
    if reason:
        pytest.skip(reason)
    device = torch.device("cuda", torch.cuda.current_device())
    peak = lookup(torch.cuda.get_device_name(device))
    calls = calls_per_round(sweep, point, peak)
    flops, nbytes = sweep.flops(point), sweep.nbytes(point)
    benchmark.extra_info.update(sweep=sweep.name, kernel=sweep.kernel, direction=sweep.direction, provider=prov,
                                x_name=sweep.x_name, x=point["x"],
                                params={k: v for k, v in point.items() if k != "x"}, flops=flops, bytes=nbytes,
                                calls_per_round=calls, l2="warm")
    torch.manual_seed(0)  # the same inputs on base and head
    try:
        inputs = kb.make_inputs(sweep, point, device)
        thunk = kb.make_thunk(sweep, sweep.providers[prov], inputs, kb.upstream_grads(sweep, inputs))
        run, how = _graphed(thunk) if sweep.direction == "fwd" else (thunk, "direct")
        run()  # a baseline that cannot run here fails on this call, before any timing
    except Exception as e:
        torch.cuda.empty_cache()
        if prov == kb.OURS and not isinstance(e, torch.cuda.OutOfMemoryError):
            raise  # a gate must not pass because our kernel stopped running
        pytest.skip(kb.skip_reason(e))
    if prov == kb.OURS and how != "cuda_graph" and sweep.direction == "fwd":
        # Generation replays our forward kernels in CUDA graphs; and base and head must time the same way.
        pytest.fail(f"our forward kernel could not be captured in a CUDA graph: {how}")
    benchmark.extra_info["timed"] = how
    try:
        benchmark.pedantic(run, rounds=ROUNDS, iterations=calls, warmup_rounds=WARMUP_ROUNDS)
    finally:
        del run, thunk, inputs
        torch.cuda.empty_cache()
    stats = getattr(benchmark.stats, "stats", None)  # None under --benchmark-disable
    if stats is not None and stats.median > 0:
        rates = metrics.derive(stats.median, flops, nbytes, sweep.bound, peak, sweep.dtype)
        benchmark.extra_info.update(tflops=rates["tflops"], gbs=rates["gbs"], peak_fraction=rates["peak_fraction"])
