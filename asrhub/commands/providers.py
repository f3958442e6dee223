"""``asrhub providers``: every registered engine, whether it can run here, and what it offers.

    asrhub providers [--json] [--config FILE] [--set providers.NAME.KEY=VALUE]

Providers come from the ``asrhub.providers`` entry-point group (built-in and third-party). For
each: availability with these settings (and, when unavailable, why and how to fix it),
capabilities and model, then ``none`` (no engine: VAD and wake-word events only, always
available). Nothing is loaded. A table on a terminal, plain aligned text otherwise,
one JSON object per line with ``--json``. Exit status 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    from asrhub.settings.loader import add_settings_arguments

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "providers",
        help="list the speech engines, their availability and capabilities",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per provider and line")
    add_settings_arguments(parser, server_flags=False)
    parser.set_defaults(func=run)


def rows(settings: Any) -> list[dict[str, Any]]:
    from asrhub.engine.registry import ProviderRegistry

    registry = ProviderRegistry.from_entry_points()
    out = []
    for name in registry.names():
        spec = registry.spec(name)
        options = settings.providers.get(name, {})
        problem = registry.availability(name, options)
        row: dict[str, Any] = {
            "name": name,
            "available": problem is None,
            "problem": problem,
            "default": name == settings.default_provider,
            "description": spec.description,
            "capabilities": None,
            "model": None,
        }
        try:
            provider = spec.factory(options)
            described = provider.describe()
        except Exception as exc:  # listing must never fail because one engine is broken
            row["problem"] = row["problem"] or f"{type(exc).__name__}: {exc}"
            row["available"] = False
        else:
            caps = described.get("capabilities") or getattr(provider, "capabilities", None)
            if dataclasses.is_dataclass(caps) and not isinstance(caps, type):
                caps = dataclasses.asdict(caps)
            row["capabilities"] = caps
            row["model"] = described.get("model")
        out.append(row)
    from asrhub.hub import NO_PROVIDER

    out.append(
        {
            "name": NO_PROVIDER,
            "available": True,
            "problem": None,
            "default": settings.default_provider in ("", NO_PROVIDER),
            "description": "no engine: VAD and wake-word events only (no transcripts)",
            "capabilities": None,
            "model": None,
        }
    )
    return out


def _caps(caps: dict[str, Any] | None) -> str:
    if not caps:
        return "-"
    flags = ["streaming" if caps.get("streaming") else "batch"]
    flags += [k.replace("_", " ") for k in ("partials", "word_timestamps") if caps.get(k)]
    langs = caps.get("languages")
    flags.append("languages: " + (",".join(langs) if langs else "any"))
    return ", ".join(flags)


def run(args: argparse.Namespace) -> int:
    from asrhub.settings.loader import SettingsError, load_from_args

    try:
        settings = load_from_args(args).settings
    except SettingsError as exc:
        print(f"asrhub providers: {exc}", file=sys.stderr)
        return 2
    table = rows(settings)
    if args.json:
        for row in table:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        t = Table("provider", "available", "capabilities", "model")
        for r in table:
            status = "[green]yes[/green]" if r["available"] else f"[red]no[/red]: {r['problem']}"
            name = r["name"] + (" (default)" if r["default"] else "")
            t.add_row(name, status, _caps(r["capabilities"]), str(r["model"] or "-"))
        Console().print(t)
        return 0
    width = max(len(r["name"]) + (10 if r["default"] else 0) for r in table) if table else 0
    for r in table:
        name = r["name"] + (" (default)" if r["default"] else "")
        status = "available" if r["available"] else "unavailable"
        print(f"{name:<{width}}  {status:<11}  {_caps(r['capabilities'])}  model: {r['model'] or '-'}")
        if r["problem"]:
            print(f"{'':<{width}}  why: {r['problem']}")
    return 0
