import json
import subprocess
import sys

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
