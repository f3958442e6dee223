"""Imports point one way (shared/DESIGN.md): operators, providers and transports use the core's
vocabulary and never each other — except that a provider may use an operator (the whisper engine
groups its requests with the ``batch`` operator); an operator never imports a provider. In the
core only the composition points — ``wiring`` (the session graph), ``api`` (the in-process
façade's file decoding) and ``commands/serve`` (the server) — reach into them. Checked on the
source, so a new arrow fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ("operators", "providers", "transports")
COMPOSITION = {"asrhub/wiring.py", "asrhub/api.py", "asrhub/commands/serve.py"}
ALLOWED = {("providers", "operators")}
"""(importer, imported): a provider may use an operator (never the other way round)."""


def imported(path: Path) -> set[str]:
    """Every module a file imports (relative imports resolved against the asrhub namespace)."""
    package = "asrhub." + ".".join(path.relative_to(ROOT).parent.parts).removeprefix("asrhub").strip(".")
    package = package.rstrip(".")
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def plugin_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "asrhub" and parts[1] in PLUGINS:
        return parts[1]
    return parts[0] if parts[0] in PLUGINS else None


def test_plugins_do_not_import_each_other() -> None:
    wrong = []
    for plugin in PLUGINS:
        for path in sorted((ROOT / plugin).rglob("*.py")):
            for module in imported(path):
                other = plugin_of(module)
                if other is not None and other != plugin and (plugin, other) not in ALLOWED:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_only_the_composition_points_of_the_core_reach_the_plugins() -> None:
    wrong = []
    for path in sorted((ROOT / "asrhub").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if path.is_symlink() or rel.parts[1] in PLUGINS or str(rel) in COMPOSITION:
            continue
        wrong += [f"{rel} imports {m}" for m in imported(path) if plugin_of(m) is not None]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_an_arrow() -> None:
    """The checker itself finds a relative and an absolute import of a plug-in."""
    assert plugin_of("asrhub.operators.decode") == "operators"
    assert {"asrhub.operators.decode"} <= imported(ROOT / "asrhub" / "wiring.py")
    assert "asrhub.transports.app" in imported(ROOT / "asrhub" / "commands" / "serve.py")
