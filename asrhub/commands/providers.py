"""``asrhub providers``: every registered engine, whether it can run here now, and what it offers.

    asrhub providers [--json] [--no-probe] [--probe-timeout S] [--config FILE]
                     [--set providers.NAME.KEY=VALUE] [--url URL [--api-key KEY]]

Providers come from the ``asrhub.providers`` entry-point group (built-in and third-party). For
each: its status with these settings, capabilities and model, then ``none`` (no engine: VAD and
wake-word events only, always available). Status:

* ``available`` — an engine of this process whose package and model are here, or a remote
  engine (FunASR, an OpenAI-compatible server, Google) that answered just now: the remote ones
  are probed at once, each within ``--probe-timeout`` seconds (default 2);
* ``unreachable`` — a remote engine, configured, that did not answer (why: the address and what
  happened);
* ``configured, not checked`` — a remote engine with ``--no-probe``;
* ``unavailable`` — it cannot run with these settings (why, and how to fix it).

Then the routing table of ``provider: "auto"`` (docs/routing.md): per language the engines in
order of preference. With ``--url`` (a running hub's HTTP address, e.g.
``http://127.0.0.1:8080``; ``--api-key`` or ``ASRHUB_API_KEY`` when it wants one) the table is
the hub's own (``GET /v1/routing``) with live figures per engine — circuit state, moving time
per audio second (``rtf``), calls in flight, calls and failures; without it, the table these
settings give (engines this configuration does not run are marked ``not configured``).

No model is loaded. A table on a terminal, plain aligned text otherwise, one JSON object per
line with ``--json`` (``status``, and ``available``: true, false, or null when not checked;
with ``--url``, the hub's routing table last, as ``{"routing": …}``: a line with no ``name``).
Exit status 0; 1 when ``--url`` does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

PROBE_TIMEOUT_S = 2.0
AVAILABLE, UNAVAILABLE, UNREACHABLE, NOT_CHECKED = (
    "available",
    "unavailable",
    "unreachable",
    "configured, not checked",
)


def add_parser(subparsers: Any) -> None:
    from asrhub.settings.loader import add_settings_arguments

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "providers",
        help="list the speech engines, their availability and capabilities",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per provider and line")
    parser.add_argument(
        "--no-probe", action="store_true", help="do not contact remote engines (configured, not checked)"
    )
    parser.add_argument(
        "--probe-timeout",
        type=float,
        default=PROBE_TIMEOUT_S,
        metavar="S",
        help=f"seconds each remote engine has to answer (default {PROBE_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--url", metavar="URL", help="a running hub's HTTP address: its routing table with live figures"
    )
    parser.add_argument("--api-key", metavar="KEY", help="the key --url wants (default: $ASRHUB_API_KEY)")
    add_settings_arguments(parser, server_flags=False)
    parser.set_defaults(func=run)


def static_routing(settings: Any) -> dict[str, Any]:
    """The routing table these settings give (no hub running, no figures)."""
    running = set(settings.provider_names())
    routing = settings.routing
    engines = sorted({n for row in routing.languages.values() for n in row})
    return {
        "languages": {lang: list(row) for lang, row in routing.languages.items()},
        "detect_with": routing.detect_with,
        "detect_among": list(routing.detect_among),
        "engines": {
            n: {"state": "configured" if n.partition(":")[0] in running else "not configured"}
            for n in engines
        },
    }


def live_routing(url: str, key: str | None, timeout_s: float = 5.0) -> dict[str, Any]:
    """``GET /v1/routing`` of the hub at ``url``. Raises OSError (with the reason) when it does
    not answer."""
    request = urllib.request.Request(url.rstrip("/") + "/v1/routing")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            table: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise OSError(f"{url} answered {exc.code}: {exc.read()[:200].decode(errors='replace')}") from None
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        raise OSError(f"{url} did not answer: {getattr(exc, 'reason', exc)}") from None
    return table


def routing_lines(table: dict[str, Any]) -> list[str]:
    """The routing table as aligned text: the languages' rows, then the engines' figures."""
    lines = ['routing (provider "auto"):']
    width = max((len(lang) for lang in table["languages"]), default=1)
    for lang, row in table["languages"].items():
        lines.append(f"  {lang:<{width}}  → {', '.join(row) or '(no engine)'}")
    among = ", ".join(table.get("detect_among") or ()) or "any language"
    lines.append(f"  identification: {table.get('detect_with') or 'none (hints only)'}, among {among}")
    engines = table["engines"]
    if not engines:
        return lines
    name_w = max(len(n) for n in engines)
    live = any("rtf" in e for e in engines.values())
    header = f"  {'engine':<{name_w}}  {'state':<14}"
    if live:
        header += f"  {'rtf':>6}  {'in flight':>9}  {'calls':>6}  {'failures':>8}"
    lines.append(header.rstrip())
    for name, e in engines.items():
        line = f"  {name:<{name_w}}  {e['state']:<14}"
        if live:
            rtf = "-" if e.get("rtf") is None else f"{e['rtf']:.3f}"
            line += (
                f"  {rtf:>6}  {e.get('in_flight', 0):>9}  {e.get('calls', 0):>6}  {e.get('failures', 0):>8}"
            )
        lines.append(line.rstrip())
    return lines


def rows(settings: Any, *, probe: bool = True, timeout_s: float = PROBE_TIMEOUT_S) -> list[dict[str, Any]]:
    """One row per provider (and ``none``); remote engines probed at once unless ``probe`` is
    False."""
    from asrhub.engine.registry import ProviderRegistry

    registry = ProviderRegistry.from_entry_points()
    names = registry.names()
    problems = {name: registry.availability(name, settings.providers.get(name, {})) for name in names}
    remote = [n for n in names if problems[n] is None and registry.remote(n)]
    unreached: dict[str, str | None] = {}
    if probe and remote:
        unreached = asyncio.run(_reach(registry, settings, remote, timeout_s))
    out = []
    for name in names:
        spec = registry.spec(name)
        options = settings.providers.get(name, {})
        problem = problems[name]
        status = UNAVAILABLE if problem is not None else AVAILABLE
        if name in remote:
            problem = unreached.get(name)
            status = NOT_CHECKED if not probe else UNREACHABLE if problem is not None else AVAILABLE
        row: dict[str, Any] = {
            "name": name,
            "status": status,
            "available": None if status == NOT_CHECKED else status == AVAILABLE,
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
            row["available"], row["status"] = False, UNAVAILABLE
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
            "status": AVAILABLE,
            "available": True,
            "problem": None,
            "default": settings.default_provider in ("", NO_PROVIDER),
            "description": "no engine: VAD and wake-word events only (no transcripts)",
            "capabilities": None,
            "model": None,
        }
    )
    return out


async def _reach(registry: Any, settings: Any, names: list[str], timeout_s: float) -> dict[str, str | None]:
    """Every remote engine probed at once: the listing takes one timeout, not one per engine."""
    found = await asyncio.gather(
        *(registry.reachability(n, settings.providers.get(n, {}), timeout_s) for n in names)
    )
    return dict(zip(names, found, strict=True))


def _caps(caps: dict[str, Any] | None) -> str:
    if not caps:
        return "-"
    flags = ["streaming" if caps.get("streaming") else "batch"]
    flags += [k.replace("_", " ") for k in ("partials", "word_timestamps") if caps.get(k)]
    langs = caps.get("languages")
    flags.append("languages: " + (",".join(langs) if langs else "any"))
    return ", ".join(flags)


def run(args: argparse.Namespace) -> int:
    from asrhub.commands.loading import settings_or_report

    loaded = settings_or_report(args, "asrhub providers")
    if loaded is None:
        return 2
    settings = loaded.settings
    if args.url:
        try:
            routing = live_routing(args.url, args.api_key or os.environ.get("ASRHUB_API_KEY"))
        except OSError as exc:
            print(f"asrhub providers: {exc}", file=sys.stderr)
            return 1
    else:
        routing = static_routing(settings)
    table = rows(settings, probe=not args.no_probe, timeout_s=args.probe_timeout)
    if args.json:
        for row in table:
            print(json.dumps(row, ensure_ascii=False))
        if args.url:  # asked for: one object per provider stays the default contract
            print(json.dumps({"routing": routing}, ensure_ascii=False))
        return 0
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        t = Table("provider", "status", "capabilities", "model")
        for r in table:
            color = {AVAILABLE: "green", NOT_CHECKED: "yellow"}.get(r["status"], "red")
            why = f": {escape(r['problem'])}" if r["problem"] else ""
            status = f"[{color}]{r['status']}[/{color}]{why}"
            name = r["name"] + (" (default)" if r["default"] else "")
            t.add_row(name, status, _caps(r["capabilities"]), str(r["model"] or "-"))
        console = Console()
        console.print(t)
        console.print(escape("\n".join(routing_lines(routing))))
        return 0
    width = max(len(r["name"]) + (10 if r["default"] else 0) for r in table) if table else 0
    column = max(len(r["status"]) for r in table)
    for r in table:
        name = r["name"] + (" (default)" if r["default"] else "")
        status = r["status"]
        print(f"{name:<{width}}  {status:<{column}}  {_caps(r['capabilities'])}  model: {r['model'] or '-'}")
        if r["problem"]:
            print(f"{'':<{width}}  why: {r['problem']}")
    print()
    print("\n".join(routing_lines(routing)))
    return 0
