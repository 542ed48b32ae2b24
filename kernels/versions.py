"""The running Triton's release, as the version guards and the spill tables key it."""

from __future__ import annotations

import re

import triton


def triton_version() -> tuple[int, int]:
    """(major, minor) of the running Triton ("3.3.1" -> (3, 3); local and dev suffixes ignored)."""
    m = re.match(r"(\d+)\.(\d+)", triton.__version__)
    if m is None:
        raise RuntimeError(f"unrecognised Triton version {triton.__version__!r}")
    return int(m.group(1)), int(m.group(2))
