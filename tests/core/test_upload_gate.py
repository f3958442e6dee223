"""The hub's upload line (:class:`asrhub.engine.uploads.UploadGate`): first come, first served,
a deadline in line, and a turn never lost, however a caller stops."""

from __future__ import annotations

import asyncio

import pytest

from asrhub.engine.uploads import UploadGate
from asrhub.errors import HubError


async def test_turns_go_in_order_and_the_line_has_a_deadline() -> None:
    gate = UploadGate(2, wait_s=30.0)
    order: list[int] = []
    release = [asyncio.Event() for _ in range(4)]

    async def upload(i: int) -> None:
        async with gate.turn():
            order.append(i)
            await release[i].wait()

    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(upload(i)))
        await asyncio.sleep(0)  # arrive in order
    assert (gate.busy, gate.waiting, order) == (2, 2, [0, 1])
    release[1].set()
    await tasks[1]
    assert order == [0, 1, 2] and gate.waiting == 1  # the turn went straight to the first in line
    for event in release:
        event.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3] and (gate.busy, gate.waiting) == (0, 0)

    short = UploadGate(1, wait_s=0.05)
    async with short.turn():
        with pytest.raises(HubError) as info:
            async with short.turn():
                pass
        assert info.value.code == "capacity" and short.waiting == 0
    assert short.busy == 0


async def test_a_caller_that_stops_waiting_leaves_the_line_and_loses_no_turn() -> None:
    gate = UploadGate(1, wait_s=30.0)
    entered = asyncio.Event()

    async def upload() -> None:
        async with gate.turn():
            entered.set()

    async with gate.turn():
        cancelled = asyncio.create_task(upload())
        waiting = asyncio.create_task(upload())
        await asyncio.sleep(0)
        assert gate.waiting == 2
        cancelled.cancel()
        await asyncio.sleep(0)
        assert gate.waiting == 1
    await asyncio.wait_for(entered.wait(), 5)  # the turn skipped the cancelled caller
    await waiting
    assert (gate.busy, gate.waiting) == (0, 0)

    # handed the turn in the same step as it is cancelled: the turn passes on
    async with gate.turn():
        first = asyncio.create_task(upload())
        second = asyncio.create_task(upload())
        await asyncio.sleep(0)
    first.cancel()  # its turn was set a moment ago, its task has not run yet
    await asyncio.gather(first, second, return_exceptions=True)
    assert (gate.busy, gate.waiting) == (0, 0)
