"""Atomic file and folder writes: a crash or Ctrl-C never leaves a file that looks complete."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: str | Path) -> None:
    """Make a rename or unlink in ``path`` durable (best effort)."""
    with contextlib.suppress(OSError):  # not every filesystem lets us open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_file(folder: str | Path, prefix: str) -> Path:
    """A new empty ``prefix*.tmp`` file in ``folder`` with ordinary permissions (mkstemp makes 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success fsync it and rename it onto ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = temp_file(dest.parent, f".{dest.name}.")
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, dest)
        fsync_dir(dest.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(dest: str | Path, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def atomic_write_text(dest: str | Path, text: str) -> Path:
    return atomic_write_bytes(dest, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest``; on success it replaces ``dest`` whole."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_OLD = re.compile(r"^\.(?P<name>.+)\.old-\d+$")


def recover_leftovers(folder: str | Path, prefix: str = "") -> list[str]:
    """Clean up after ``atomic_dir``/``atomic_path`` writes that a kill or power loss cut short: their
    ``.NAME.*.tmp`` temporaries in ``folder`` are removed (never complete), and a ``.NAME.old-PID``
    folder is renamed back to ``NAME`` when ``NAME`` is missing (the kill fell between the two
    renames), else removed. Only names starting with ``.prefix``. Returns one line per action."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    done = []
    for p in sorted(folder.iterdir()):
        if not p.name.startswith("." + prefix):
            continue
        old = _OLD.match(p.name)
        if old and not (folder / old["name"]).exists():
            os.replace(p, folder / old["name"])
            done.append(f"restored {folder / old['name']} from {p.name}")
        elif old or p.name.endswith(".tmp"):
            _remove(p)
            done.append(f"removed {p} (left by an interrupted write)")
    if done:
        fsync_dir(folder)
    return done


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)
