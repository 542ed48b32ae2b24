"""Test harness: run kernels on the Triton interpreter when no CUDA device is present.

TRITON_INTERPRET is read when a kernel is decorated, so it is set here, before any test module
imports ``tritongpt.kernels``.
"""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

from tritongpt.kernels.interpreter import interpreter_enabled, patch_interpreter  # noqa: E402

if interpreter_enabled():
    # The interpreter computes bf16 tl.dot on raw bits and truncates fp32 -> bf16 casts; see
    # kernels/interpreter.py (tests/test_interpreter.py shows both bugs and the fixes).
    patch_interpreter()

DEVICE = "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def device() -> str:
    return DEVICE


@pytest.fixture(scope="session")
def prepare_char(tmp_path_factory):
    """``prepare_char(text)``: a folder prepared from ``text`` by ``tritongpt prepare`` (char tokenizer)."""
    from tritongpt.engine.cli import main

    def prepare(text: str):
        root = tmp_path_factory.mktemp("data")
        (root / "corpus.txt").write_text(text)
        assert main(["prepare", "--source", str(root / "corpus.txt"), "--tokenizer", "char", "--out",
                     str(root / "prepared")]) == 0
        return root / "prepared"

    return prepare


@pytest.fixture
def poison_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every buffer the launchers allocate (``launch.alloc``) starts as NaN, so an element a kernel never
    writes shows."""
    from tritongpt.kernels import launch

    def alloc(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(launch, "alloc", alloc)
