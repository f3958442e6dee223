"""Partials that settle (issue 25, item 3): LocalAgreement's stable prefix.

The unit tests state the policy on word lists; the real-speech test streams every English
fixture and the alsa-utils recordings (real human speech) through a hub with whisper tiny.en
and checks, on every partial of every utterance, that the words once marked stable never
change: each partial's ``stable`` begins with the previous partial's ``stable``, verbatim, and
its ``text`` begins with its ``stable``.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np

from asrhub.engine.local_agreement import StablePrefix, agrees
from asrhub.frames import Event, FinalTranscript, PartialTranscript
from asrhub.hub import Hub
from asrhub.providers.whisper import WhisperProvider
from tests.audio_utils import fixture, fixture_entry, load_wav, pcm16_bytes, room_noise

from .conftest import make_hub
from .test_real_speech import SPOKEN, at_16k, recording

HOLD_S = 10.0
ENGLISH = ("quick_fox.wav", "weather_question.wav", "address_time.wav", "reminder.wav", "science.wav")


def test_two_decodes_that_agree_make_their_common_prefix_stable() -> None:
    p = StablePrefix()
    assert p.update("The quick brown.") == ("", "The quick brown.")
    assert p.update("the quick brown fox jump") == ("the quick brown", "the quick brown fox jump")
    assert p.update("The quick Brown fox jumps") == ("the quick brown fox", "the quick brown fox jumps")
    # a decode's last word does not settle (cut off, or a guessed full stop): "jumps." waits
    assert p.update("the quick brown fox jumps.") == ("the quick brown fox", "the quick brown fox jumps.")
    assert p.update("the quick brown fox jumps over") == (
        "the quick brown fox jumps",
        "the quick brown fox jumps over",
    )


def test_a_decode_that_rewrites_stable_words_only_changes_the_tail() -> None:
    p = StablePrefix()
    p.update("remind me to call")
    p.update("remind me to call the")
    assert p.text == "remind me to call"
    # the decoder changed its mind about a stable word: it stays, the words after it follow
    # (and "the", which this decode repeats before another word, settles)
    assert p.update("remind me to fall the dentist") == (
        "remind me to call the",
        "remind me to call the dentist",
    )
    # a decode that lost a word: aligned on the stable words it kept
    assert p.update("remind to call the dentist and") == (
        "remind me to call the dentist",
        "remind me to call the dentist and",
    )
    # a shorter decode shows the stable words alone
    assert p.update("remind") == ("remind me to call the dentist", "remind me to call the dentist")


def test_agrees_compares_without_case_and_punctuation() -> None:
    assert agrees("", "anything")
    assert agrees("the quick brown,", "The quick brown fox.")
    assert not agrees("the quick brown fox", "The quick brown.")
    assert not agrees("the quick", "A quick")


def speech_set() -> list[tuple[np.ndarray, tuple[float, ...]]]:
    """The English fixtures and the eight alsa-utils recordings, 1 s of room tone apart: each
    piece with the points (seconds into it) after which the rest waits for one more partial —
    every 0.6 s through a sentence's speech — so every sentence is decoded several times as
    it grows however loaded the machine is (the recordings, two words each, are not held)."""
    pieces: list[tuple[np.ndarray, tuple[float, ...]]] = [(room_noise(0.5, seed=1, level_db=-70.0), ())]
    for i, name in enumerate(ENGLISH):
        samples, rate = load_wav(fixture(name))
        assert rate == 16_000
        segs = fixture_entry(name)["segments"]
        held = tuple(np.arange(segs[0]["start"] + 0.6, segs[-1]["end"] - 0.2, 0.6))
        pieces += [(samples, held), (room_noise(1.0, seed=2 + i, level_db=-70.0), ())]
    for i, name in enumerate(SPOKEN):
        pieces += [(at_16k(recording(name)), ()), (room_noise(1.0, seed=20 + i, level_db=-70.0), ())]
    return pieces


async def stream(hub: Hub, pieces: list[tuple[np.ndarray, tuple[float, ...]]]) -> list[Event]:
    """Stream the pieces in 100 ms chunks as fast as the session takes them; at each point the
    rest waits until a partial arrived since the previous point (at most ``HOLD_S``: a decode
    may find no words, or a snapshot be shed while the previous sentence's final runs)."""
    session = hub.open({"language": "en"})
    events: list[Event] = []
    partials = 0
    arrived = asyncio.Event()

    def on(event: Event) -> None:
        nonlocal partials
        events.append(event)
        if isinstance(event, PartialTranscript):
            partials += 1
            arrived.set()

    async def one_more(seen: int) -> None:
        while partials <= seen:
            arrived.clear()
            await arrived.wait()

    session.events.subscribe(on)
    step, seen = 1600, 0
    for samples, held in pieces:
        points = list(held)
        for i in range(0, len(samples), step):
            await session.feed(pcm16_bytes(samples[i : i + step]))
            if points and (i + step) / 16_000 >= points[0]:
                points.pop(0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(one_more(seen), HOLD_S)
                seen = partials
    await session.end()
    return events


def check_settled(events: list[Event]) -> tuple[int, int]:
    """Assert that no stable word changes; (partials, partials with stable words)."""
    last: dict[int, list[str]] = {}
    finals = {e.segment_id for e in events if isinstance(e, FinalTranscript)}
    partials = with_stable = 0
    for e in events:
        if isinstance(e, FinalTranscript):
            last.pop(e.segment_id, None)
        if not isinstance(e, PartialTranscript):
            continue
        assert e.segment_id in finals, e
        assert e.stable is not None, e
        stable = e.stable.split()
        assert e.text.split()[: len(stable)] == stable, e
        before = last.get(e.segment_id, [])
        assert stable[: len(before)] == before, (before, e)
        last[e.segment_id] = stable
        partials += 1
        with_stable += bool(stable)
    return partials, with_stable


async def test_stable_words_never_change_on_real_speech(whisper: WhisperProvider) -> None:
    hub = make_hub({"whisper": whisper})
    events = await stream(hub, speech_set())
    partials, with_stable = check_settled(events)
    n_finals = sum(1 for e in events if isinstance(e, FinalTranscript) and e.text)
    print(f"\n{partials} partials ({with_stable} with stable words), {n_finals} finals")
    assert n_finals >= len(ENGLISH) + 1  # the short recordings may run together into one
    assert with_stable >= len(ENGLISH)  # every sentence settled some words before its final


async def test_stable_partials_off_gives_the_decodes_own_text(whisper: WhisperProvider) -> None:
    hub = make_hub({"whisper": whisper}, stable_partials=False)
    samples, _ = load_wav(fixture("reminder.wav"))
    events = await stream(hub, [(samples, (1.0, 2.0))])
    partials = [e for e in events if isinstance(e, PartialTranscript)]
    assert partials
    assert all(p.stable is None and "stable" not in p.to_dict() for p in partials)
