"""The core's ordered engine stage, failover and circuit breaker, through real hub sessions.

Real parts: faster-whisper (tiny.en), the standard chain (decode → resample → VAD → segment),
real fixture speech. The fakes inject faults and say so: ``FakeDeadStream`` is a streaming
engine whose every stream fails; ``FakeBrokenReply`` raises what a real client library raises on
a reply it did not expect (``KeyError``, ``RuntimeError``); ``FakeHung`` never answers. What they
share (a named engine with nothing to start or close) is ``FakeBatchEngine``.

The third-party engines here import only the core (``asrhub.*`` minus providers/): that is the
point of the core stage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from asrhub.engine.batch_stage import batch_stage
from asrhub.engine.breaker import Breakers
from asrhub.engine.stream_stage import stream_stage
from asrhub.errors import HubError
from asrhub.frames import ErrorEvent, Samples
from asrhub.plugin import Capabilities, Operator, Provider, ProviderError, SessionContext, Transcription
from asrhub.providers.whisper import WhisperProvider
from tests.audio_utils import fixture, fixture_entry, load_wav

from .conftest import finals, make_hub, run_session

SILENCES, _ = load_wav(fixture("silences.wav"))
UTTERANCES = len(fixture_entry("silences.wav")["segments"])


class FakeBatchEngine:
    """What the fakes below share: a batch engine of this name with nothing to start or close.
    A subclass supplies ``transcribe`` (the fault it injects)."""

    capabilities = Capabilities(streaming=False, partials=False)

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def transcribe(self, samples: Samples, **_: Any) -> Transcription:
        raise NotImplementedError

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        return batch_stage(self, ctx, fallbacks)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class FakeBrokenReply(FakeBatchEngine):
    """A batch engine whose client library chokes on every reply: raises ``exc_type``."""

    def __init__(self, name: str, exc_type: type[Exception] = KeyError) -> None:
        super().__init__(name)
        self.exc_type = exc_type

    async def transcribe(self, samples: Samples, **_: Any) -> Transcription:
        self.calls += 1
        raise self.exc_type("text")  # a malformed reply, as the openai SDK would surface it


class FakeDeadStream(FakeBatchEngine):
    """A remote streaming engine (FunASR/Google shape) whose every stream fails."""

    capabilities = Capabilities(streaming=True, partials=True)

    def __init__(self, name: str = "dead_stream") -> None:
        super().__init__(name)
        self.streams = 0

    async def transcribe(self, samples: Samples, **_: Any) -> Transcription:
        raise ProviderError(f"{self.name}: connection refused")

    async def recognize(
        self, audio: AsyncIterator[Samples], on_partial: Callable[[str], None]
    ) -> Transcription:
        self.streams += 1
        async for _ in audio:
            raise ProviderError(f"{self.name}: the stream broke")
        raise ProviderError(f"{self.name}: no audio")

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        return stream_stage(self, self.recognize, ctx, fallbacks)


class FakeHung(FakeBatchEngine):
    """A batch engine that never answers (a dead endpoint behind a black-holing network)."""

    def __init__(self, name: str = "hung") -> None:
        super().__init__(name)
        self.answer: Transcription | None = None

    async def transcribe(self, samples: Samples, **_: Any) -> Transcription:
        self.calls += 1
        if self.answer is not None:
            return self.answer
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def ended(hub: Any, config: dict[str, Any]) -> list[Any]:
    """A whole session of silences.wav; fails (instead of hanging) if ``end()`` never returns."""
    return await asyncio.wait_for(run_session(hub, SILENCES, {**config, "partials": False}), 120)


@pytest.mark.parametrize("exc_type", [KeyError, RuntimeError])
async def test_a_fallback_raising_anything_fails_over_instead_of_hanging_the_session(
    whisper: WhisperProvider, exc_type: type[Exception]
) -> None:
    """Stream dies → the first fallback raises KeyError/RuntimeError → whisper serves."""
    dead, broken = FakeDeadStream(), FakeBrokenReply("broken", exc_type)
    hub = make_hub({"dead_stream": dead, "broken": broken, "whisper": whisper})
    events = await ended(hub, {"provider": ["dead_stream", "broken", "whisper"]})
    got = finals(events)
    assert [f.segment_id for f in got] == list(range(1, UTTERANCES + 1))
    assert {f.provider for f in got} == {"whisper"}
    assert not [e for e in events if isinstance(e, ErrorEvent)]
    assert events[-1].to_dict() == {"type": "session.closed", "reason": "end"}


async def test_no_provider_left_after_a_crash_is_one_error_per_utterance() -> None:
    hub = make_hub({"dead_stream": FakeDeadStream(), "broken": FakeBrokenReply("broken", KeyError)})
    events = await ended(hub, {"provider": ["dead_stream", "broken"]})
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [e.segment_id for e in errors] == list(range(1, UTTERANCES + 1))
    assert all(e.code == "provider_failed" and not e.fatal for e in errors)
    assert "KeyError" in errors[0].message
    assert events[-1].to_dict() == {"type": "session.closed", "reason": "end"}


async def test_a_batch_engine_raising_keyerror_alone_is_one_error_per_utterance() -> None:
    hub = make_hub({"broken": FakeBrokenReply("broken", KeyError)})
    events = await ended(hub, {"provider": "broken"})
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [e.segment_id for e in errors] == list(range(1, UTTERANCES + 1))
    assert "KeyError" in errors[0].message


async def test_a_dead_endpoint_costs_one_timeout_per_window_not_one_per_session(
    whisper: WhisperProvider,
) -> None:
    """Two sessions one after another, each [hung, whisper]: the hung engine is waited for
    once in the whole hub, because its breaker is shared by every session (each session used to
    find it out on its own)."""
    hung = FakeHung()
    hub = make_hub({"hung": hung, "whisper": whisper}, provider_timeout_s=15.0, breaker_window_s=600.0)
    for _ in range(2):
        events = await ended(hub, {"provider": ["hung", "whisper"]})
        assert [f.provider for f in finals(events)] == ["whisper"] * UTTERANCES
        assert not [e for e in events if isinstance(e, ErrorEvent)]
    assert hung.calls == 1


async def test_an_open_circuit_is_skipped_and_recovery_is_probed_in_the_background() -> None:
    hung = FakeHung()
    breakers = Breakers(failures_to_open=2, window_s=0.05, probe_timeout_s=0.5)
    samples = np.zeros(16_000, np.float32)
    opened = breakers.of(hung)
    for _ in range(2):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(hung.transcribe(samples), 0.01)
        opened.failed("hung: no answer")
    assert opened.state == "open" and not opened.usable
    hung.answer = Transcription("")  # the endpoint comes back: the background probe sees it
    await asyncio.wait_for(opened.wait_closed(), 30)
    assert opened.usable and hung.calls >= 3 and str(opened.state) == "closed"
    await breakers.close()


async def test_hub_transcribe_fails_over_on_any_exception(whisper: WhisperProvider) -> None:
    broken = FakeBrokenReply("broken", KeyError)
    hub = make_hub({"broken": broken, "whisper": whisper})
    samples, _ = load_wav(fixture("quick_fox.wav"))
    name, result = await hub.transcribe(samples, provider=("broken", "whisper"))
    assert name == "whisper" and "fox" in result.text.lower()
    with pytest.raises(HubError) as info:
        await hub.transcribe(samples, provider="broken")
    assert info.value.code == "provider_failed" and "KeyError" in str(info.value)
