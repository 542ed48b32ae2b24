"""Device names (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``): their syntax, what this machine has,
and one resolver that ``generate --device`` and ``train.device`` share, so both fail the same way."""

from __future__ import annotations

import re

DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"
DEVICE_PATTERN = re.compile(r"auto|(cpu|mps)(:0)?|cuda(:\d+)?")


def is_device_name(text: object) -> bool:
    """Syntax only: whether ``text`` names a device kind this project runs on."""
    return isinstance(text, str) and DEVICE_PATTERN.fullmatch(text) is not None


def mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """The devices this machine can run on, e.g. ``['cpu', 'cuda:0', 'cuda:1']``."""
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if mps_available():
        out.append("mps")
    return out


def resolve_device(name: str | None, where: str, local_rank: int | None = None):
    """``name`` (None means auto) -> a ``torch.device`` this machine has, or a ValueError that names
    ``where`` (the argument or key), the device and what is available. ``auto`` is CUDA when present,
    else the CPU. ``local_rank`` picks the GPU of a bare ``cuda`` (one GPU per DDP process)."""
    import torch

    spec = "auto" if name is None else name
    if not is_device_name(spec):
        raise ValueError(f"{where} {spec}: unknown device; expected {DEVICE_FORMS} "
                         f"(available: {', '.join(available_devices())})")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        device = check_cuda(device, f"{where} {spec}", local_rank)
    elif device.type == "mps" and not mps_available():
        raise ValueError(f"{where} {spec}: MPS (Apple GPU) is not available on this machine "
                         f"(available: {', '.join(available_devices())})")
    return device


def check_cuda(device, label: str, local_rank: int | None):
    """The CUDA ``device`` (index from ``local_rank`` when it has none) if this machine has it."""
    import torch

    available = ", ".join(available_devices())
    if not torch.cuda.is_available():
        raise ValueError(f"{label}: CUDA is not available on this machine (available: {available})")
    if device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"{label}: no {device} on this machine, which has {count} CUDA device"
                         f"{'s' if count != 1 else ''} (available: {available})")
    return device
