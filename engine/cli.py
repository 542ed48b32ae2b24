"""An alias of the command line, ``tritongpt.cli``: ``from tritongpt.engine.cli import main`` and
``python -m tritongpt.engine.cli`` work through it. It reaches up to ``tritongpt.cli`` only when a name is used
(the one import from the engine to the layer above, see tests/test_structure.py)."""

from __future__ import annotations

import sys
from typing import Any


def __getattr__(name: str) -> Any:
    from tritongpt import cli

    return getattr(cli, name)


if __name__ == "__main__":  # pragma: no cover
    from tritongpt.cli import main

    sys.exit(main())
