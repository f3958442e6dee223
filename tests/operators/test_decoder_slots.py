"""The hub's decoder threads (``limits.max_decoder_threads``) over real sessions: a slot is never
lost, whatever closes while it waits (issue 23, item 1).

Real pieces: the standard chain (``build_hub``, provider ``none``: decode → resample → VAD), real
WebM/Opus encoded from the speech fixture, PyAV decoder threads."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from asrhub.config import Limits
from asrhub.flow import Slots
from asrhub.frames import ErrorEvent, Event, SpeechStarted
from asrhub.hub import Hub
from asrhub.session.session import Session
from asrhub.settings.schema import Settings
from asrhub.wiring import build_hub
from tests.audio_utils import encode, fixture, load_wav

SPEECH, RATE = load_wav(fixture("quick_fox.wav"))
WEBM = encode(SPEECH, RATE, "webm")
WEBM_CONFIG: dict[str, Any] = {"audio": {"encoding": "webm"}, "provider": "none"}


def hub_with(**limits: Any) -> Hub:
    return build_hub(Settings(default_provider="none", limits=msgspec.structs.replace(Limits(), **limits)))


async def until(check: Any, within: float = 30.0) -> bool:
    """Wait (polling the loop) until ``check()`` holds; False if it never did within ``within``."""
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def speech_heard(hub: Hub, within: float = 60.0) -> bool:
    """A new WebM session gets a decoder: its speech reaches the VAD."""
    session = hub.open(WEBM_CONFIG)
    heard = asyncio.Event()
    sub = session.events.subscribe(lambda e: heard.set() if isinstance(e, SpeechStarted) else None)
    feeding = asyncio.ensure_future(session.feed(WEBM[: len(WEBM) // 2]))
    try:
        await asyncio.wait_for(heard.wait(), within)
    except TimeoutError:
        return False
    finally:
        sub.dispose()
        session.close()  # a feed still waiting for a decoder returns
        await feeding
    return True


async def test_a_slot_passes_over_700_closed_waiters_and_is_never_lost() -> None:
    """One decoder slot, held by a live session; 750 WebM sessions queue for it and close while
    they wait. When the holder ends, the slot must reach the next session that asks. The old
    hand-over called ``Slots.give`` once per closed waiter, recursively: ``RecursionError``
    inside a loop callback, the slot gone for good, and every later WebM session hung."""
    hub = hub_with(max_decoder_threads=1)
    holder = hub.open(WEBM_CONFIG)
    await holder.feed(WEBM[:2000])  # starts the only decoder thread; the stream stays open
    waiting = [hub.open(WEBM_CONFIG) for _ in range(750)]
    feeds = [asyncio.ensure_future(s.feed(WEBM[:2000])) for s in waiting]
    await asyncio.sleep(0)  # every feed ran up to its wait for a decoder
    assert not any(f.done() for f in feeds)  # all of them wait for the one slot
    for session in waiting:
        session.close()
    await asyncio.gather(*feeds)  # a closed session's feed returns
    assert await asyncio.wait_for(holder.end(), 60) == "end"  # its thread ends: the slot comes back
    assert await speech_heard(hub)
    await hub.shutdown(grace_s=5)
    assert await until(lambda: hub.decoder_slots.free == 1)  # the last thread ended: nothing held
    assert hub.decoder_slots.waiting == 0


# ------------------------------------------------------------------ Slots, alone


def test_slots_hand_over_in_a_loop_and_keep_a_share_per_key() -> None:
    """Hand-over is a loop (10,000 waiters leaving, then a give: no recursion), a key holds at
    most ``per_key`` slots while other keys' waiters are served past it, and a ``start`` that
    gives its slot back at once only passes it on."""
    slots = Slots(3, per_key=2)
    started: list[str] = []
    a1, a2 = slots.take(lambda: started.append("a1"), "a"), slots.take(lambda: started.append("a2"), "a")
    a3 = slots.take(lambda: started.append("a3"), "a")  # a slot is free, but key a is at its share
    assert a1.held and a2.held and not a3.held and slots.free == 1
    b1 = slots.take(lambda: started.append("b1"), "b")
    assert b1.held and slots.free == 0
    gone = [slots.take(lambda: started.append("gone"), None) for _ in range(10_000)]
    for claim in gone:
        slots.leave(claim)  # disposed while waiting: out of the line
    c1 = slots.take(lambda: started.append("c1"), None)
    slots.leave(b1)  # a's waiter is first in line but a is at its share: c1 gets it
    assert started == ["c1"] and c1.held and not a3.held
    slots.leave(a1)  # now a is under its share
    assert started == ["c1", "a3"] and a3.held and slots.waiting == 0
    relay = slots.take(lambda: slots.leave(relay), None)  # gives it back as it starts
    last = slots.take(lambda: started.append("last"), None)
    slots.leave(c1)
    assert started[-1] == "last" and last.held and not relay.held
    for claim in (a2, a3, last, a1, last):  # leave is idempotent
        slots.leave(claim)
    assert slots.free == 3 and slots.held_by("a") == 0


# ------------------------------------------------------------------ deadlines and shares


def events_of(session: Session) -> list[Event]:
    out: list[Event] = []
    session.events.subscribe(out.append)
    return out


async def test_a_key_at_its_share_waits_then_gets_capacity_while_other_keys_decode() -> None:
    """Two decoder threads, a share of one per key: key A's second WebM session waits although
    a thread is free, key B's session takes it; A's waiter gets a fatal ``capacity`` error after
    ``decoder_wait_s``, its ``feed`` returns, and no slot stays taken."""
    hub = hub_with(max_decoder_threads=2, decoder_key_share=0.5, decoder_wait_s=1.0)
    first = hub.open(WEBM_CONFIG, key="a")
    await first.feed(WEBM[:2000])
    second = hub.open(WEBM_CONFIG, key="a")
    events = events_of(second)
    feeding = asyncio.ensure_future(second.feed(WEBM[:2000]))
    await asyncio.sleep(0)
    assert not feeding.done() and hub.decoder_slots.free == 1  # held back although a thread is free
    other = hub.open(WEBM_CONFIG, key="b")
    heard = asyncio.Event()
    other.events.subscribe(lambda e: heard.set() if isinstance(e, SpeechStarted) else None)
    await other.feed(WEBM)
    await asyncio.wait_for(heard.wait(), 30)  # key b decodes meanwhile
    await asyncio.wait_for(feeding, 30)  # the deadline ends the wait
    assert await second.wait_closed() == "error"
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [(e.code, e.fatal) for e in errors] == [("capacity", True)]
    assert "1 per API key" in errors[0].message
    for session in (first, other):
        session.close()
    assert await until(lambda: hub.decoder_slots.free == 2)
    assert hub.decoder_slots.waiting == 0
    await hub.shutdown(grace_s=5)


async def test_a_decoder_that_produces_nothing_is_stopped_and_its_thread_freed() -> None:
    """A client trickling WebM a byte at a time (its decoder never gets a whole packet) holds
    the only decoder thread until ``decoder_stall_s``: then a fatal ``timeout``, the session
    closes, and the next session decodes. Before, it held the thread as long as it trickled."""
    hub = hub_with(max_decoder_threads=1, decoder_stall_s=1.0)
    slow = hub.open(WEBM_CONFIG)
    events = events_of(slow)

    async def trickle() -> None:
        for i in range(len(WEBM)):
            if slow.closed:
                return
            await slow.feed(WEBM[i : i + 1])
            await asyncio.sleep(0.05)  # 20 bytes a second: the client's pace, not a wait for the hub

    trickling = asyncio.ensure_future(trickle())
    assert await asyncio.wait_for(slow.wait_closed(), 30) == "error"
    await trickling
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [(e.code, e.fatal) for e in errors] == [("timeout", True)]
    assert "produced no audio for 1 s" in errors[0].message
    assert await until(lambda: hub.decoder_slots.free == 1)
    assert await speech_heard(hub)
    await hub.shutdown(grace_s=5)
