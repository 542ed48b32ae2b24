"""Peak figures of GPUs, keyed by the name CUDA reports. Used for rooflines, MFU and
fraction-of-peak. Dense (no sparsity) bf16/fp16 tensor-core FLOP/s and HBM/GDDR bandwidth from
the vendors' data sheets. An unknown GPU gets ``None``: never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DevicePeak:
    name: str
    bf16_tflops: float  # dense
    bandwidth_gbs: float
    sms: int


# Order matters: the first key contained in the reported name wins (more specific first).
PEAKS: list[tuple[str, DevicePeak]] = [
    ("GH200", DevicePeak("GH200", 989.0, 4000.0, 132)),
    ("H200", DevicePeak("H200", 989.0, 4800.0, 132)),
    ("H100 PCIe", DevicePeak("H100 PCIe", 756.0, 2000.0, 114)),
    ("H100 NVL", DevicePeak("H100 NVL", 835.0, 3900.0, 132)),
    ("H100", DevicePeak("H100 SXM", 989.0, 3350.0, 132)),
    ("A100-SXM4-80GB", DevicePeak("A100 SXM 80GB", 312.0, 2039.0, 108)),
    ("A100-SXM4-40GB", DevicePeak("A100 SXM 40GB", 312.0, 1555.0, 108)),
    ("A100 80GB PCIe", DevicePeak("A100 PCIe 80GB", 312.0, 1935.0, 108)),
    ("A100", DevicePeak("A100", 312.0, 1555.0, 108)),
    ("L40S", DevicePeak("L40S", 362.0, 864.0, 142)),
    ("L40", DevicePeak("L40", 181.0, 864.0, 142)),  # before "L4": "NVIDIA L40" contains "L4"
    ("L4", DevicePeak("L4", 121.0, 300.0, 58)),
    ("A10G", DevicePeak("A10G", 70.0, 600.0, 80)),
    ("RTX 4090", DevicePeak("RTX 4090", 165.2, 1008.0, 128)),
    ("RTX 3090", DevicePeak("RTX 3090", 71.0, 936.0, 82)),
]

# The two reference points every report quotes (see the project's performance culture).
H100 = dict(PEAKS)["H100"]
A100 = DevicePeak("A100 80GB", 312.0, 2000.0, 108)


def lookup(name: str | None) -> DevicePeak | None:
    """Peak figures for a CUDA device name, or None when the GPU is not in the table."""
    if not name:
        return None
    for key, peak in PEAKS:
        if key.lower() in name.lower():
            return peak
    return None


def roofline_seconds(flops: float, nbytes: float, peak: DevicePeak) -> float:
    """Lower bound on a kernel's time: max(FLOPs / peak FLOP/s, bytes / bandwidth)."""
    return max(flops / (peak.bf16_tflops * 1e12), nbytes / (peak.bandwidth_gbs * 1e9))
