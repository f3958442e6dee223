"""Stopping background tasks within a bound.

A process's shutdown must not hang on one task. Cancelling is not always enough: on Python 3.11
``asyncio.wait_for`` loses a cancellation that arrives as its inner call completes (fixed in
3.12), and a client library may swallow one (a usage flush loop was seen "cancelling" yet
asleep in its next turn); a loop around such a call runs on. So the hub's background loops
also check a stopping flag, and are stopped with :func:`stop_tasks`, which waits for them no
longer than it is told.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def stop_tasks(tasks: Iterable[asyncio.Future[Any]], within_s: float) -> list[str]:
    """Cancel ``tasks`` and wait for them at most ``within_s``; returns the names of those
    still running then (the caller says so in its log and goes on)."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return []
    _done, stuck = await asyncio.wait(pending, timeout=within_s)
    return sorted(task.get_name() if isinstance(task, asyncio.Task) else repr(task) for task in stuck)
