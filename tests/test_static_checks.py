"""The code stays lint-clean, formatted and type-checked: ruff (the rules in pyproject.toml) and
mypy ``--strict`` over the hub's packages, run from the repository root as a developer would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "."),
        ("ruff", "format", "--check", "--exclude", "*.md", "."),  # Markdown's code samples stay as written
        ("mypy",),  # files and --strict: [tool.mypy] in pyproject.toml
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_static_check_passes(command: tuple[str, ...]) -> None:
    done = run(str(BIN / command[0]), *command[1:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
