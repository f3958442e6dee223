"""Partials that settle (issue 25, item 3): LocalAgreement's stable prefix.

The unit tests state the policy on word lists; the real-speech test streams every English
fixture and the alsa-utils recordings (real human speech) through a hub with whisper tiny.en
and checks, on every partial of every utterance, that the words once marked stable never
change: each partial's ``stable`` begins with the previous partial's ``stable``, verbatim, and
its ``text`` begins with its ``stable``.
"""

from __future__ import annotations

import numpy as np

from asrhub.engine.local_agreement import StablePrefix, agrees
from asrhub.frames import Event, FinalTranscript, PartialTranscript
from asrhub.providers.whisper import WhisperProvider
from tests.audio_utils import fixture, load_wav, room_noise

from .conftest import make_hub, run_session
from .test_real_speech import SPOKEN, at_16k, recording

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


def speech_set() -> np.ndarray:
    """The English fixtures and the eight alsa-utils recordings, 1 s of room tone apart."""
    parts: list[np.ndarray] = [room_noise(0.5, seed=1, level_db=-70.0)]
    for i, name in enumerate(ENGLISH):
        samples, rate = load_wav(fixture(name))
        assert rate == 16_000
        parts += [samples, room_noise(1.0, seed=2 + i, level_db=-70.0)]
    for i, name in enumerate(SPOKEN):
        parts += [at_16k(recording(name)), room_noise(1.0, seed=20 + i, level_db=-70.0)]
    return np.concatenate(parts).astype(np.float32)


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
    events = await run_session(hub, speech_set(), {"language": "en"}, speed=2.0)
    partials, with_stable = check_settled(events)
    n_finals = sum(1 for e in events if isinstance(e, FinalTranscript) and e.text)
    print(f"\n{partials} partials ({with_stable} with stable words), {n_finals} finals")
    assert n_finals >= len(ENGLISH) + 1  # the short recordings may run together into one
    assert with_stable >= len(ENGLISH)  # every sentence settled some words before its final


async def test_stable_partials_off_gives_the_decodes_own_text(whisper: WhisperProvider) -> None:
    hub = make_hub({"whisper": whisper}, stable_partials=False)
    samples, _ = load_wav(fixture("reminder.wav"))
    events = await run_session(hub, samples, {"language": "en"}, speed=2.0)
    partials = [e for e in events if isinstance(e, PartialTranscript)]
    assert partials
    assert all(p.stable is None and "stable" not in p.to_dict() for p in partials)
