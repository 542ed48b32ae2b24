"""The environment a benchmark ran in: the capture lives in ``tritongpt.engine.environment`` (``tritongpt
info`` reads the same NVML snapshot); this name stays importable for the bench modules and their users."""

from tritongpt.engine.environment import (
    THROTTLE_SHARE,
    THROTTLING,
    EnvironmentRecorder,
    capture,
    cpu_model,
    format_environment_line,
    git_state,
    nvml_for_device,
    nvml_snapshot,
    reason_names,
    software,
    throttle_warning,
)

__all__ = ["THROTTLE_SHARE", "THROTTLING", "EnvironmentRecorder", "capture", "cpu_model", "format_environment_line",
           "git_state", "nvml_for_device", "nvml_snapshot", "reason_names", "software", "throttle_warning"]
