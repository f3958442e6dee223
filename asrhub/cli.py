"""``asrhub`` command line: the composition root's entry point.

Each subcommand lives in its own module under :mod:`asrhub.commands` and exposes
``add_parser(subparsers)``; the parser it adds carries ``func=run`` (``run(args) -> int``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = ("serve", "transcribe", "stream", "providers", "config", "bench")


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
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
