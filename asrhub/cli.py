"""``asrhub`` command line: the composition root's entry point.

Each subcommand lives in its own module under :mod:`asrhub.commands` and exposes
``add_parser(subparsers)``; the parser it adds carries ``func=run`` (``run(args) -> int``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = ("serve", "transcribe", "stream", "providers", "config", "bench", "replay")
QUIET_BEFORE_RUN = ("stream",)
"""One-shot commands that load no settings of their own: their logging is configured here, at
``warning`` unless ``log.level`` is set (``serve`` logs ``info``). The other one-shot commands
(``transcribe``, ``providers``, ``replay``) configure it from the settings they load
(:func:`asrhub.commands.loading.settings_or_report`), so nothing is loaded twice."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asrhub", description="Speech recognition hub: several ASR engines behind one streaming API."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"asrhub.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"asrhub.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in QUIET_BEFORE_RUN:
        _quiet_logs(args)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return result


def _quiet_logs(args: argparse.Namespace) -> None:
    """Logging for a one-shot command before it runs; settings that cannot be loaded leave the
    defaults."""
    from asrhub.logging import configure_command
    from asrhub.settings.loader import SettingsError, load_from_args

    try:
        loaded = load_from_args(args)
    except SettingsError:
        loaded = None
    configure_command(loaded, stream=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
