"""The settings of a one-shot command, loaded once, with its logging configured from them."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asrhub.settings.loader import Loaded


def settings_or_report(args: argparse.Namespace, prog: str) -> Loaded | None:
    """The command's settings (file < ``ASRHUB_…`` environment < flags), with logging
    configured for a one-shot command (``warning`` unless ``log.level`` is set); None after
    printing ``prog: <the error>`` to stderr (the command then exits 2)."""
    from asrhub.logging import configure_command
    from asrhub.settings.loader import SettingsError, load_from_args

    try:
        loaded = load_from_args(args)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    configure_command(loaded, stream=sys.stderr)
    return loaded
