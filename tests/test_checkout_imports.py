"""The checkout used as users use it: ``python -c``/``-m`` from the repository root put the root first
on sys.path, where the top-level ``kernels/`` folder meets PyPI's ``kernels`` (transformers imports it).

Each check runs in a fresh interpreter whose working directory is the repository root, because the
shadowing only happens there and a module imported once cannot be imported "fresh" in-process.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _python(code: str, *, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -c code`` from the repository root (so '' = the root is first on sys.path)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.latest
def test_pypi_kernels_and_transformers_import_from_the_checkout():
    code = (
        "import sys, json\n"
        "assert sys.path[0] == '', sys.path[:2]\n"
        "import kernels, transformers\n"
        "from transformers import GPT2LMHeadModel\n"
        "from kernels import CUDAProperties\n"
        "import tritongpt.kernels as tk\n"
        "print(json.dumps({'kernels': kernels.__file__, 'tritongpt': tk.__file__,\n"
        "                  'ours_loaded': sorted(m for m in sys.modules if m.startswith('kernels.flash'))}))\n"
    )
    r = _python(code)
    assert r.returncode == 0, r.stderr[-2000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    # `import kernels` is the installed distribution, not this checkout's folder ...
    assert not pathlib.Path(seen["kernels"]).resolve().is_relative_to(ROOT / "kernels")
    # ... and tritongpt.kernels keeps working beside it, without a second copy of our kernel modules.
    assert pathlib.Path(seen["tritongpt"]).resolve() == ROOT / "kernels" / "__init__.py"
    assert seen["ours_loaded"] == []


def test_top_level_kernels_without_the_pypi_package_is_module_not_found():
    # The interpreter's own site-packages removed: no distribution named 'kernels' is importable.
    code = (
        "import sys\n"
        "sys.path[:] = [p for p in sys.path if 'site-packages' not in p and 'dist-packages' not in p]\n"
        "try:\n"
        "    import kernels\n"
        "except ModuleNotFoundError as e:\n"
        "    assert e.name == 'kernels', e.name\n"
        "    assert 'kernels' not in sys.modules\n"
        "    assert not [m for m in sys.modules if m.startswith('kernels.')], 'kernel modules were imported'\n"
        "    print('MNF:', e)\n"
        "else:\n"
        "    raise SystemExit(f'imported {kernels!r}')\n"
    )
    r = _python(code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MNF: No module named 'kernels'" in r.stdout and "not installed" in r.stdout


def test_top_level_kernels_hands_over_in_process(monkeypatch):
    """Imported in-process under the name ``kernels`` (the checkout first on sys.path), the folder gives
    way to the installed distribution and never registers the ``tritongpt::`` custom ops again."""
    import importlib

    import kernels as pypi  # the test extra installs it; from the checkout this import is a handover too
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.delitem(sys.modules, "kernels")
    got = importlib.import_module("kernels")
    assert got.__file__ == pypi.__file__
    assert not pathlib.Path(got.__file__).resolve().is_relative_to(ROOT / "kernels")
    assert not any(m.startswith("kernels.") and "flash" in m for m in sys.modules)


@pytest.mark.latest
def test_python_m_tritongpt_runs_from_the_checkout(tmp_path):
    """A CLI smoke run through ``python -m tritongpt`` from the root: a tiny preset generates a few tokens
    with a character tokenizer (no download)."""
    tok = tmp_path / "tok.json"
    tok.write_text(json.dumps({"type": "char", "chars": "abcdefghijklmnopqrstuvwxyz "}), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "tritongpt", "generate", "--preset", "tiny", "--tokenizer", str(tok),
                        "--prompt", "hello", "--max-new-tokens", "3", "--seed", "0", "--device", "cpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=240,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("hello") and "tokens/s" in r.stderr


@pytest.mark.kernel
def test_plain_python_use_on_the_interpreter_installs_its_fixes():
    """``TRITON_INTERPRET=1`` and a plain ``import tritongpt.kernels``: no test harness, no CLI. The bf16
    interpreter bugs (and, on Triton 3.3/3.6 with NumPy >= 2.4, the scalar-index bug) must be patched by
    the import itself, so the kernels agree with PyTorch."""
    code = (
        "import torch, tritongpt.kernels as tk\n"
        "import torch.nn.functional as F\n"
        "torch.manual_seed(0)\n"
        "worst = 0.0\n"
        "for dtype in (torch.bfloat16, torch.float16, torch.float32):\n"
        "    for T, D, causal in ((1, 16, True), (17, 32, True), (33, 64, False)):\n"
        "        q, k, v = (torch.randn(1, 2, T, D, dtype=dtype) for _ in range(3))\n"
        "        got = tk.attention(q, k, v, causal=causal).float()\n"
        "        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)\n"
        "        worst = max(worst, (got - ref).abs().max().item())\n"
        "    x = torch.randn(5, 48, dtype=dtype)\n"
        "    w, b = torch.randn(48, dtype=dtype), torch.randn(48, dtype=dtype)\n"
        "    got = tk.layer_norm(x, w, b).float()\n"
        "    ref = F.layer_norm(x.float(), (48,), w.float(), b.float())\n"
        "    worst = max(worst, (got - ref).abs().max().item())\n"
        "print(worst)\n"
    )
    r = _python(code, env={"TRITON_INTERPRET": "1", "TRITON_DEFAULT_FP_FUSION": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert float(r.stdout.strip().splitlines()[-1]) < 0.05
