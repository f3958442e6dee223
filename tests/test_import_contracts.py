"""The layering is a check, not a hope: the import-linter contracts of pyproject.toml
(``[tool.importlinter]``: the core's rooms, no import circles anywhere — type-only imports
included —, only the composition points reach the plug-in folders, transports reach engines
through sessions) hold on the package as a wheel lays it out (``scripts/lint_imports.py``).

The other tests plant an arrow in a copy of the sources and see the check fail on it, so a
contract that silently matched nothing (a renamed module, a lost option) would show here."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lint_imports", ROOT / "scripts" / "lint_imports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LINT = _script()


def test_the_import_contracts_hold() -> None:
    done = LINT.lint(ROOT)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "4 kept, 0 broken" in done.stdout, done.stdout[-3000:]


def planted(tmp_path: Path, plant: Callable[[Path], None]) -> str:
    """lint-imports' report on a copy of the sources with ``plant`` applied to it."""
    source = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("asrhub", *LINT.PLUGIN_PACKAGES):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", source / "pyproject.toml")
    plant(source)
    done = LINT.lint(source)
    assert done.returncode != 0, "the planted arrow passed the contracts:\n" + done.stdout[-4000:]
    report: str = done.stdout
    return report


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


TYPE_ONLY = "\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import {module}  # planted\n"


def test_a_planted_circle_fails_even_when_type_only(tmp_path: Path) -> None:
    """Two operators importing each other, one of the arrows only for a type hint."""

    def plant(source: Path) -> None:
        append(source / "operators" / "resample.py", "\nimport asrhub.operators.segment  # planted\n")
        append(source / "operators" / "segment.py", TYPE_ONLY.format(module="asrhub.operators.resample"))

    report = planted(tmp_path, plant)
    assert "No cycles are allowed in asrhub.operators" in report, report[-3000:]
    assert ".resample -> .segment" in report or ".segment -> .resample" in report, report[-3000:]


@pytest.mark.parametrize(
    ("where", "module", "says"),
    [
        ("asrhub/metrics/hub.py", "asrhub.hub", "asrhub.metrics is not allowed to import asrhub.hub"),
        (
            "asrhub/plugin.py",
            "asrhub.session.context",
            "asrhub.plugin is not allowed to import asrhub.session",
        ),
        ("asrhub/hub.py", "asrhub.providers.whisper", "asrhub.hub is not allowed to import asrhub.providers"),
        (
            "asrhub/commands/stream.py",
            "asrhub.transports.app",
            "asrhub.commands.stream -> asrhub.transports.app",
        ),
        ("transports/sse.py", "asrhub.providers.vosk", "asrhub.transports.sse -> asrhub.providers.vosk"),
    ],
    ids=[
        "metrics-reads-the-hub",
        "contract-names-concrete",
        "core-names-engine",
        "command-serves",
        "transport-engine",
    ],
)
def test_a_planted_arrow_against_the_rooms_fails(tmp_path: Path, where: str, module: str, says: str) -> None:
    report = planted(tmp_path, lambda source: append(source / where, TYPE_ONLY.format(module=module)))
    assert says in report, report[-3000:]
