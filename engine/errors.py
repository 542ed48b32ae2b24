"""How the command line reports an error: one ``error: ...`` line, or the traceback when debugging.

Every command's handler raises; ``tritongpt.cli.main`` and the few handlers that catch errors
themselves (to keep a partial result, or to return their own exit code) print through here, so
``--debug`` and ``TRITONGPT_DEBUG=1`` show the traceback everywhere.
"""

from __future__ import annotations

import os
import sys

DEBUG_ENV = "TRITONGPT_DEBUG"


def debug_enabled() -> bool:
    """``TRITONGPT_DEBUG`` set true (``--debug`` sets it for one command): show tracebacks instead of one line."""
    return os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def describe_error(e: BaseException) -> str:
    """One line for a user: what went wrong and with which file, argument or key."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
        if not isinstance(e, (ValueError, OSError, KeyError)) and type(e).__name__ not in text:
            text = f"{type(e).__name__}: {text}"
    return " ".join(text.split())


def report_error(e: BaseException, code: int = 2) -> int:
    """Print ``e`` as one ``error:`` line on stderr and return ``code``; re-raise it when debugging."""
    if debug_enabled():
        raise e
    print(f"error: {describe_error(e)}", file=sys.stderr)
    return code


def missing_extra(e: ImportError, extra: str, what: str) -> ValueError:
    """The error for a command whose optional dependencies are not installed: which extra brings them."""
    return ValueError(f"{what} needs the '{extra}' extra ({e.name or e} is missing): pip install 'tritongpt[{extra}]'")
