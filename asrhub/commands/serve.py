"""``asrhub serve``: run the hub — every transport on one port (plus gRPC and Wyoming on their own
ports when ``--grpc-port`` / ``--wyoming-port`` are given).

    asrhub serve [--host H] [--port P] [--workers N] [--config FILE] [--api-key KEY …]
                 [--default-provider NAME] [--grpc-port P] [--wyoming-port P]
                 [--log-level LEVEL] [--set KEY=VALUE …]

Settings come from defaults < the TOML file < ``ASRHUB_…`` variables (``ASRHUB_API_KEYS`` is a
comma-separated list) < these flags. Models load before the port opens; the line
``asrhub: listening on http://HOST:PORT`` (on stdout) says the hub is ready. SIGTERM or SIGINT
stops accepting, flushes every open session's finals to its client, then exits (0).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from asrhub.settings.schema import Settings


def add_parser(subparsers: Any) -> None:
    from asrhub.settings.loader import add_settings_arguments

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the hub: WebSocket, Socket.io, HTTP+SSE, batch and OpenAI endpoints, web UI",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=run)


def load_settings(args: argparse.Namespace) -> Settings:
    """The process's settings (file < environment < flags). Swap here to change the loading."""
    from asrhub.settings.loader import load_from_args

    return load_from_args(args).settings


def run(args: argparse.Namespace) -> int:
    from asrhub.commands import event_loop, workers
    from asrhub.commands.server import serve
    from asrhub.logging import configure
    from asrhub.plugin import ProviderUnavailable
    from asrhub.settings.loader import SettingsError

    try:
        settings = load_settings(args)
    except SettingsError as exc:
        print(f"asrhub: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        event_loop.loop_factory(settings.server.loop)  # before any worker starts
    except RuntimeError as exc:
        print(f"asrhub: configuration error: {exc}", file=sys.stderr)
        return 2
    if workers.worker_count(settings.server.workers) > 1:
        try:
            return workers.run_workers(settings)
        except OSError as exc:
            print(
                f"asrhub: cannot listen on {settings.server.host}:{settings.server.port}: {exc}",
                file=sys.stderr,
            )
            return 1
    configure(settings.log)
    try:
        event_loop.run(serve(settings, gc_tuning=True), settings.server.loop)
    except ProviderUnavailable as exc:
        print(f"asrhub: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{settings.server.host}:{settings.server.port}"
        print(f"asrhub: cannot listen on {where}: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a gRPC/Wyoming port in use, zeroconf's extra missing
        print(f"asrhub: {exc}", file=sys.stderr)
        return 1
    return 0
