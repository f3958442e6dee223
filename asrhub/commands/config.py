"""``asrhub config``: the effective configuration, and the reference of every key.

    asrhub config show [--config FILE] [--set KEY=VALUE …]   effective settings as TOML, keys masked
    asrhub config reference                                  docs/configuration.md, generated

``show`` exits with status 2 and a message naming the bad key when the configuration is invalid,
so it doubles as a check before ``asrhub serve``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from asrhub.settings.loader import SettingsError, add_settings_arguments, load_from_args, show


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "config",
        help="show the effective configuration, or the configuration reference",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="config_action", required=True, metavar="ACTION")
    show_parser = actions.add_parser(
        "show", help="print the effective settings as TOML (API keys masked, origins as comments)"
    )
    add_settings_arguments(show_parser)
    actions.add_parser("reference", help="print the configuration reference (Markdown)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.config_action == "reference":
        from asrhub.settings.reference import render

        sys.stdout.write(render())
        return 0
    try:
        loaded = load_from_args(args)
    except SettingsError as exc:
        print(f"asrhub: configuration error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(show(loaded))
    return 0
