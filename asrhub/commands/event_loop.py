"""The event loop the server runs on: ``server.loop`` = ``asyncio`` | ``uvloop`` | ``auto``.

``asyncio`` (the default) is the standard library's loop; ``uvloop`` (libuv, the ``uvloop``
extra) is the loop aiohttp suggests for servers, and fails with a hint where it cannot import;
``auto`` takes uvloop where it imports and the standard loop elsewhere. ``asrhub serve``, each
worker of ``--workers N`` and an embedding that builds its own loop (:func:`new_loop`) follow
the same setting. Everything the hub does on its loop — aiohttp, python-socketio, gRPC
(``grpc.aio`` binds to whichever loop it starts on), the Wyoming server, Ray's awaitable calls,
the SIGTERM/SIGINT handlers, worker threads handing results back with ``call_soon_threadsafe``
— runs on either (tests/transports/test_event_loop.py). Why the standard loop is the default:
docs/benchmarks.md, "The event loop".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from asrhub.settings.schema import EventLoop

T = TypeVar("T")

UVLOOP_HINT = "server.loop = 'uvloop' needs the uvloop package: pip install 'asrhub[uvloop]' (not on Windows)"


def loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new event loop for ``choice``. ``uvloop`` where it cannot be imported:
    :class:`RuntimeError` naming the package (``auto`` falls back to the standard loop)."""
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError(UVLOOP_HINT) from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def new_loop(choice: EventLoop) -> asyncio.AbstractEventLoop:
    """A new event loop of the chosen kind (for a loop run by hand, e.g. in a thread)."""
    return loop_factory(choice)()


def run(main: Coroutine[Any, Any, T], choice: EventLoop) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    try:
        factory = loop_factory(choice)
    except RuntimeError:
        main.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: the kind of a running loop, for logs and tests."""
    return "uvloop" if type(loop).__module__.split(".")[0] == "uvloop" else "asyncio"
