"""The ``m3bench`` command starts without the heavy libraries: only the sub-command that runs imports
its stage (m3bench/cli.py). ``m3bench --help`` lists every command, ``m3bench tasks`` works without
torch, vLLM or Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "vllm", "ray", "locust", "matplotlib")


def _modules_after(args: list[str]) -> tuple[set[str], str]:
    code = (
        "import sys\n"
        "from m3bench.cli import main\n"
        f"sys.argv = ['m3bench', *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write('\\nMODULES ' + ' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    return set(done.stderr.rsplit("MODULES ", 1)[1].split()), done.stdout


@pytest.mark.parametrize("args", [["--help"], ["tasks", "--help"], ["load", "--help"], ["report", "--help"]])
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    modules, out = _modules_after(args)
    assert "Usage" in out
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_top_level_help_lists_every_command() -> None:
    from m3bench.cli import COMMANDS

    _, out = _modules_after(["--help"])
    for name in COMMANDS:
        assert name in out
