"""Our kernels with one code path forced: the providers that time each path of a kernel on its own.

In a sweep, ``triton`` is the kernel as users call it: its launcher picks a path per launch (TMA
descriptors on sm_90+ with Triton >= 3.4 and TMA-fit tensors, the pointer kernel otherwise). The
providers here pin one path, so a run shows what each path costs and whether the choice is right:

- attention forward (``flash_attention.attention_fwd_launch(path=...)``): ``triton-pointer``,
  ``triton-tma``. The TMA forward's key loop is warp-specialized where ``flash_attention_tma.
  use_warp_specialize`` says so (sm_100, Triton >= 3.9); ``describe`` records which one ran.
- gelu_linear / linear (``fused_linear.FORCE_PATH``), forward: ``triton-pointer``,
  ``triton-tma-persistent`` (the persistent TMA GEMM with its flattened, software-pipelined tile
  loop) and ``triton-tma-ws`` (the same kernel warp-specialized). Which of the two runs is decided by
  the device and Triton (``fused_linear_tma.loop_options``), not by a switch, so on each device one
  of the two names is skipped with the reason. Backward: ``triton-pointer`` and ``triton-tma`` (the
  backward's TMA GEMMs are one program per tile, not persistent).

A path that cannot run on this device or Triton (TMA on sm_80, Triton 3.3, fp32 attention) is
skipped with the reason before anything launches (``attention_skip``, ``linear_skip``). Without a
GPU the sweeps run on the Triton interpreter, which runs every path (capability None).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

Fn = Callable[[dict[str, torch.Tensor]], Any]

POINTER, TMA = "triton-pointer", "triton-tma"
TMA_PERSISTENT, TMA_WS = "triton-tma-persistent", "triton-tma-ws"
ATTENTION_FWD = (POINTER, TMA)
LINEAR_FWD = (POINTER, TMA_PERSISTENT, TMA_WS)
LINEAR_BWD = (POINTER, TMA)
_KERNEL_PATH = {POINTER: "pointer", TMA: "tma", TMA_PERSISTENT: "tma", TMA_WS: "tma"}


def current_capability() -> tuple[int, int] | None:
    """The current CUDA device's (major, minor); None without CUDA, where the sweeps run on the interpreter."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(torch.cuda.current_device())


def _where(capability: tuple[int, int] | None) -> str:
    return "the interpreter" if capability is None else f"sm_{capability[0]}{capability[1]}"


def _version_text(version: tuple[int, int] | None) -> str:
    from tritongpt.kernels.versions import triton_version

    return ".".join(map(str, version or triton_version()))


def tma_unavailable(capability: tuple[int, int] | None, version: tuple[int, int] | None = None) -> str | None:
    """Why no TMA kernel can run here (this Triton, this device), or None."""
    from tritongpt.kernels import tma

    if not tma.descriptors_available(version):
        return f"Triton {_version_text(version)} has no tensor descriptors (TMA needs Triton >= 3.4)"
    if capability is not None and capability[0] < tma.MIN_CAPABILITY:
        return f"{_where(capability)} has no TMA (sm_90 and newer)"
    return None


# ---- attention forward ------------------------------------------------------------------------------
def _attention_launcher():
    from tritongpt.kernels.flash_attention import attention_fwd_launch

    return attention_fwd_launch


def attention_skip(prov: str, dtype: str, capability: tuple[int, int] | None,
                   version: tuple[int, int] | None = None) -> str | None:
    """Why the forced-path attention provider ``prov`` cannot run here, or None (also for other providers)."""
    if prov not in ATTENTION_FWD:
        return None
    if "path" not in inspect.signature(_attention_launcher()).parameters:
        return "flash_attention.attention_fwd_launch takes no path= in this checkout: no path can be forced"
    if prov == POINTER:
        return None
    if dtype not in ("float16", "bfloat16"):
        return f"{dtype}: the TMA forward is fp16/bf16 only (fp32 takes the pointer path)"
    why = tma_unavailable(capability, version)
    if why is not None or capability is None:
        return why
    try:  # the TMA forward is newer than the sweeps: a checkout without it skips, never crashes
        from tritongpt.kernels.flash_attention_tma import tma_target
    except ImportError as e:
        return f"no TMA attention forward in this checkout ({e})"
    if tma_target(capability) is None:
        return f"{_where(capability)} has no checked TMA attention configs (sm_90, sm_100)"
    return None


def attention_paths(causal: bool) -> dict[str, Fn]:
    """``triton-pointer`` and ``triton-tma``: the forward launcher with ``path`` forced (forward only: the
    launcher is not differentiable). Returns the output; the LSE it also computes is not checked."""
    def forced(path: str) -> Fn:
        def run(t):
            q = t["q"]
            return _attention_launcher()(q, t["k"], t["v"], causal, q.shape[-1] ** -0.5, path=path)[0]

        return run

    return {prov: forced(_KERNEL_PATH[prov]) for prov in ATTENTION_FWD}


# ---- gelu_linear / linear ---------------------------------------------------------------------------
def linear_skip(prov: str, capability: tuple[int, int] | None, version: tuple[int, int] | None = None) -> str | None:
    """Why the forced-path linear provider ``prov`` cannot run here, or None (also for other providers)."""
    if _KERNEL_PATH.get(prov) != "tma":
        return None
    why = tma_unavailable(capability, version)
    if why is not None:
        return why
    from tritongpt.kernels import fused_linear_tma as flt

    if capability is not None and flt.target_arch(capability) is None:
        return f"{_where(capability)} has no checked TMA GEMM configs (sm_90, sm_100)"
    ws = flt.loop_options(capability, version)["WARP_SPECIALIZE"]
    if prov == TMA_WS and not ws:
        return (f"on {_where(capability)} with Triton {_version_text(version)} the persistent TMA GEMM is not "
                f"warp-specialized (sm_100+ only): it is timed as {TMA_PERSISTENT}")
    if prov == TMA_PERSISTENT and ws:
        return f"on {_where(capability)} the persistent TMA GEMM runs warp-specialized: it is timed as {TMA_WS}"
    return None


def _pin(path: str | None) -> Callable[[], str | None]:
    """Set ``fused_linear.FORCE_PATH`` to ``path``; returns a function that restores the previous value."""
    from tritongpt.kernels import fused_linear

    before = fused_linear.FORCE_PATH
    fused_linear.FORCE_PATH = path

    def restore() -> None:
        fused_linear.FORCE_PATH = before

    return restore


def linear_path(path: str | None, fn: Fn) -> Fn:
    """``fn`` (a call of our gelu_linear / linear) with ``fused_linear.FORCE_PATH = path`` during its forward
    and its backward. The backward reads FORCE_PATH when autograd runs it, long after ``fn`` returned, so
    hooks on the output's autograd node pin the path around that node alone. ``path`` None pins the
    per-launch choice: ``triton`` uses it, so a backward that raised with a path pinned (its restore
    hook never runs) cannot change what ``triton`` times next."""
    def run(t):
        restore = _pin(path)
        try:
            out = fn(t)
        finally:
            restore()
        node = out.grad_fn
        if node is not None:
            pending: list[Callable[[], None]] = []
            node.register_prehook(lambda grad_outputs: pending.append(_pin(path)))
            node.register_hook(lambda grad_inputs, grad_outputs: pending.pop()())
        return out

    return run


def linear_paths(direction: str, fn: Fn) -> dict[str, Fn]:
    """The forced-path providers of a gelu_linear / linear sweep in ``direction``."""
    names = LINEAR_FWD if direction == "fwd" else LINEAR_BWD
    return {prov: linear_path(_KERNEL_PATH[prov], fn) for prov in names}


def reset_linear_path() -> None:
    """Back to the per-launch choice: after a provider raised inside a backward with a path pinned."""
    from tritongpt.kernels import fused_linear

    fused_linear.FORCE_PATH = None


# ---- what ran -----------------------------------------------------------------------------------------
def describe(capability: tuple[int, int] | None, version: tuple[int, int] | None = None) -> dict[str, Any]:
    """The paths our kernels take on this device and Triton, for the result file: which TMA variant the
    ``triton-tma*`` providers measured."""
    from tritongpt.kernels import fused_linear_tma as flt

    out: dict[str, Any] = {"capability": None if capability is None else f"sm_{capability[0]}{capability[1]}",
                           "tma": tma_unavailable(capability, version) or "available",
                           "linear_warp_specialized": flt.loop_options(capability, version)["WARP_SPECIALIZE"]}
    try:
        from tritongpt.kernels.flash_attention_tma import use_warp_specialize

        out["attention_warp_specialized"] = use_warp_specialize(capability, version)
    except ImportError as e:  # the TMA attention forward is not in this checkout
        out["attention_warp_specialized"] = f"unknown ({e})"
    return out
