import json
import subprocess
import sys

import pytest

from tritongpt.engine.cli import main


def test_help_lists_subcommands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for cmd in ("info", "assets", "presets", "demo"):
        assert cmd in out


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    for key in ("python", "torch", "triton", "tiktoken", "device"):
        assert key in env
    if env["device"]["type"] == "cpu":
        assert "Triton interpreter" in env["device"]["kernels"]


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "tritongpt.engine.cli", "info"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "torch" in out.stdout and "device" in out.stdout


@pytest.mark.parametrize("argv", [
    ["generate", "--preset", "nope", "--prompt", "x"],  # raised out of the handler
    ["generate", "--preset", "tiny", "--prompt", "x", "--max-new-tokens", "-3"],  # caught inside the handler
    ["bench", "compare", "--threshold", "5", "a.json", "b.json"],  # caught inside bench compare
])
def test_errors_are_one_line_and_debug_shows_the_traceback(argv, capsys, monkeypatch):
    import os

    from tritongpt.engine.cli import main

    monkeypatch.delenv("TRITONGPT_DEBUG", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(ValueError):
        main([*argv, "--debug"])
    assert "TRITONGPT_DEBUG" not in os.environ  # --debug lasts one call
    monkeypatch.setenv("TRITONGPT_DEBUG", "1")
    with pytest.raises(ValueError):
        main(argv)
