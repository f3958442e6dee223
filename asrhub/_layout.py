"""Maps ``asrhub.operators|providers|transports`` onto the top-level folders of a source checkout.

In a wheel those packages sit inside ``asrhub/`` and this finder never matches; in a checkout it
is a :class:`importlib.abc.MetaPathFinder` for exactly the three names, so ``asrhub.tests`` or
``asrhub.scripts`` do not become importable by accident (which appending the repository root to
``asrhub.__path__`` would do).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PLUGIN_PACKAGES = ("operators", "providers", "transports")


class SourceLayoutFinder(importlib.abc.MetaPathFinder):
    """Finds ``asrhub.<plugin>`` in ``<root>/<plugin>/`` when ``asrhub/<plugin>/`` is absent."""

    def __init__(self, roots: dict[str, Path]) -> None:
        self.roots = roots

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        folder = self.roots.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


def install(package_path: Sequence[str]) -> None:
    """Install the finder once, for the plug-in folders this checkout has and the package lacks."""
    package_dir = Path(next(iter(package_path))).resolve()
    root = package_dir.parent
    roots = {
        f"asrhub.{name}": root / name
        for name in PLUGIN_PACKAGES
        if not (package_dir / name).is_dir() and (root / name / "__init__.py").is_file()
    }
    if roots and not any(isinstance(f, SourceLayoutFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceLayoutFinder(roots))
