"""Failover through real hub sessions: a provider dies mid-session, no utterance is lost."""

from __future__ import annotations

from asrhub.frames import ErrorEvent
from asrhub.providers.whisper import WhisperProvider
from tests.audio_utils import fixture, fixture_entry, load_wav, wer

from .conftest import FakeFailingProvider, finals, make_hub, run_session


async def test_first_provider_dies_mid_session_and_no_utterance_is_lost(whisper: WhisperProvider) -> None:
    """silences.wav has four utterances; the first provider serves one, then its engine dies."""
    dying = FakeFailingProvider(whisper, name="dying", ok_calls=1)
    hub = make_hub({"dying": dying, "whisper": whisper})
    samples, _ = load_wav(fixture("silences.wav"))
    entry = fixture_entry("silences.wav")
    events = await run_session(hub, samples, {"provider": ["dying", "whisper"], "partials": False})
    got = finals(events)
    assert [f.segment_id for f in got] == list(range(1, len(entry["segments"]) + 1))
    assert [f.provider for f in got] == ["dying"] + ["whisper"] * (len(got) - 1)
    assert not [e for e in events if isinstance(e, ErrorEvent)]
    assert wer(entry["text"], " ".join(f.text for f in got)) <= 0.1
    assert dying.calls >= 2  # it really was asked again, and failed


async def test_hanging_provider_times_out_and_the_fallback_serves(whisper: WhisperProvider) -> None:
    hung = FakeFailingProvider(whisper, name="hung", mode="hang")
    hub = make_hub({"hung": hung, "whisper": whisper}, provider_timeout_s=8.0)
    samples, _ = load_wav(fixture("silences.wav"))
    events = await run_session(hub, samples, {"provider": ["hung", "whisper"], "partials": False})
    got = finals(events)
    assert len(got) == len(fixture_entry("silences.wav")["segments"])
    assert {f.provider for f in got} == {"whisper"}
    assert hung.calls < len(got)  # after a timeout it is tried last, not on every utterance


async def test_no_provider_left_gives_one_error_per_utterance(whisper: WhisperProvider) -> None:
    dead = FakeFailingProvider(whisper, name="dead")
    hub = make_hub({"dead": dead})
    samples, _ = load_wav(fixture("silences.wav"))
    events = await run_session(hub, samples, {"provider": "dead", "partials": False})
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [e.segment_id for e in errors] == [1, 2, 3, 4] and not finals(events)
    assert all(e.code == "provider_failed" and not e.fatal and "lost its engine" in e.message for e in errors)
    assert events[-1].to_dict() == {"type": "session.closed", "reason": "end"}
