#!/usr/bin/env python3
"""Check the import contracts ([tool.importlinter] in pyproject.toml) on the package as a wheel
lays it out.

    .venv/bin/python scripts/lint_imports.py [lint-imports options, e.g. --verbose]

In a checkout ``asrhub.operators``, ``asrhub.providers`` and ``asrhub.transports`` live in the
top-level folders ``operators/``, ``providers/`` and ``transports/`` (an import finder maps them,
see ``asrhub/_layout.py``); the wheel puts them inside ``asrhub/``. import-linter (grimp) finds a
package's modules by walking its directory, so it would see the core without its plug-ins. This
script copies the sources into a temporary directory in the wheel's layout (``asrhub/`` with the
three folders inside, as the hatch ``sources`` mapping does) and runs ``lint-imports`` there with
the repository's contracts. The exit status is lint-imports' own: 0 when every contract is kept.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PACKAGES = ("operators", "providers", "transports")
"""The folders mapped into ``asrhub/`` (as in ``asrhub/_layout.py`` and pyproject's wheel sources)."""


def stage(source: Path, dest: Path) -> Path:
    """``source``'s package in the wheel's layout under ``dest``; returns ``dest/asrhub``."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = dest / "asrhub"
    shutil.copytree(source / "asrhub", package, ignore=skip)
    for name in PLUGIN_PACKAGES:
        if (source / name / "__init__.py").is_file():
            shutil.copytree(source / name, package / name, ignore=skip)
    return package


def lint(source: Path = ROOT, *args: str) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on ``source`` (a checkout) with ``source``'s pyproject.toml contracts."""
    with tempfile.TemporaryDirectory(prefix="asrhub-imports-") as tmp:
        stage(source, Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--no-logo"]
        return subprocess.run(
            [*command, *args, str(source / "pyproject.toml")],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )


def main(argv: list[str]) -> int:
    done = lint(ROOT, *argv)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
