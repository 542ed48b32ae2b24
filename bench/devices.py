"""GPU peak figures for the benchmarks: the table lives in ``tritongpt.engine.gpu_peaks`` (training's MFU
reads it too); this name stays importable for the bench modules and their users."""

from tritongpt.engine.gpu_peaks import A100, H100, PEAKS, DevicePeak, lookup, roofline_seconds

__all__ = ["A100", "H100", "PEAKS", "DevicePeak", "lookup", "roofline_seconds"]
