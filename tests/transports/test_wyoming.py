"""The hub as a Wyoming speech-to-text and wake-word service, driven by the ``wyoming``
package's ``AsyncTcpClient`` the way Home Assistant drives one (``describe``; ``transcribe`` +
audio → ``transcript``; ``detect`` + audio → ``detection``, then hang up), on real speech with
the real default engine (faster-whisper tiny.en) and the real openWakeWord models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.wake import Detect, Detection, NotDetected

from asrhub.operators import wakeword_models
from asrhub.transports.door import DOOR
from asrhub.transports.wyoming import WyomingServer
from asrhub.transports.wyoming_info import AgreedText
from tests.audio_utils import wer
from tests.transports.conftest import ServerThread, frames, speech

RATE, WIDTH, CHANNELS = 16_000, 2, 1
TIMEOUT = 60


class Service:
    def __init__(self, thread: ServerThread, server: WyomingServer) -> None:
        self.thread = thread
        self.server = server

    def client(self) -> AsyncTcpClient:
        return AsyncTcpClient("127.0.0.1", self.server.port)

    def sessions(self) -> list[object]:
        return self.thread.call(
            lambda: [s for s in self.thread.hub.sessions.values() if s.ctx.transport == "wyoming"]
        )

    async def wait_closed(self, session: object) -> str:
        waiting = asyncio.run_coroutine_threadsafe(session.wait_closed(), self.thread.loop)  # type: ignore[attr-defined]
        return await asyncio.wrap_future(waiting)

    async def wait_idle(self) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.server.wait_idle(), self.thread.loop))


@pytest.fixture(scope="module")
def service(whisper_server: ServerThread) -> Iterator[Service]:
    async def start() -> WyomingServer:
        server = WyomingServer(
            whisper_server.hub, whisper_server.app[DOOR], wake_words=lambda: wakeword_models.available()
        )
        await server.start("127.0.0.1", 0)
        return server

    server = asyncio.run_coroutine_threadsafe(start(), whisper_server.loop).result(timeout=30)
    yield Service(whisper_server, server)
    asyncio.run_coroutine_threadsafe(server.stop(1.0), whisper_server.loop).result(timeout=30)


async def send_audio(client: AsyncTcpClient, pcm: bytes, ms: int = 100) -> None:
    for chunk in frames(pcm, ms):
        await client.write_event(AudioChunk(rate=RATE, width=WIDTH, channels=CHANNELS, audio=chunk).event())


async def start_audio(client: AsyncTcpClient, pcm: bytes) -> None:
    """``audio-start`` (16 kHz mono PCM16), then ``pcm`` as 100 ms ``audio-chunk`` events."""
    await client.write_event(AudioStart(rate=RATE, width=WIDTH, channels=CHANNELS).event())
    await send_audio(client, pcm)


async def read_until(client: AsyncTcpClient, *kinds: str) -> list[Event]:
    """Events up to and including the first of ``kinds`` (or the end of the connection)."""
    events: list[Event] = []
    while True:
        event = await asyncio.wait_for(client.read_event(), TIMEOUT)
        if event is None:
            return events
        events.append(event)
        if event.type in kinds:
            return events


async def test_describe_lists_providers_and_wake_words(service: Service) -> None:
    async with service.client() as client:
        await client.write_event(Describe().event())
        (event,) = await read_until(client, "info")
    info = Info.from_event(event)
    assert info.asr[0].name == "whisper"  # the default first: Home Assistant uses asr[0]
    models = {m.name: m for m in info.asr[0].models}
    assert models["tiny.en"].languages == ["en"]  # whisper's models, the default first
    assert info.asr[0].models[0].name == "tiny.en"
    assert len(models.get("base", models["tiny.en"]).languages) >= 1
    assert info.asr[0].supports_transcript_streaming
    assert info.asr[0].models[0].installed
    (wake,) = info.wake
    assert {"hey_jarvis", "alexa"} <= {m.name for m in wake.models}


async def test_transcribe_like_home_assistant(service: Service) -> None:
    pcm, text = speech("weather_question.wav")
    async with service.client() as client:
        await client.write_event(Transcribe(language="en").event())
        await start_audio(client, pcm)
        await client.write_event(AudioStop().event())
        events = await read_until(client, "transcript-stop")
    kinds = [e.type for e in events]
    assert kinds[0] == "transcript-start" and kinds[-2:] == ["transcript", "transcript-stop"]
    transcript = Transcript.from_event(events[-2])
    assert wer(text, transcript.text) < 0.3, transcript.text
    assert transcript.language == "en"
    assert TranscriptStart.from_event(events[0]).language == "en"
    chunks = "".join(TranscriptChunk.from_event(e).text for e in events if e.type == "transcript-chunk")
    assert wer(transcript.text, chunks) < 0.2, (chunks, transcript.text)
    assert not service.sessions()


async def test_transcript_chunks_stream_before_audio_stop(service: Service) -> None:
    """Two sentences and a pause: the first one's text arrives as transcript-chunk while the
    client is still streaming; the transcript at the end has both."""
    first, first_text = speech("quick_fox.wav")
    second, second_text = speech("science.wav")
    async with service.client() as client:
        await client.write_event(Transcribe().event())
        await start_audio(client, first + bytes(RATE * 2))  # speech, then 1 s of silence
        early = await read_until(client, "transcript-chunk")
        assert early[-1].type == "transcript-chunk"
        await send_audio(client, second)
        await client.write_event(AudioStop().event())
        events = early + await read_until(client, "transcript-stop")
    transcript = Transcript.from_event(next(e for e in events if e.type == "transcript"))
    assert wer(f"{first_text} {second_text}", transcript.text) < 0.3, transcript.text
    chunks = "".join(TranscriptChunk.from_event(e).text for e in events if e.type == "transcript-chunk")
    assert wer(transcript.text, chunks) < 0.2, (chunks, transcript.text)
    assert [e.type for e in events[-2:]] == ["transcript", "transcript-stop"]


async def test_wake_word_detected_then_hang_up(service: Service) -> None:
    """Home Assistant's wake-word flow: detect, audio until a detection, hang up."""
    pcm, _ = speech("hey_jarvis_weather.wav")
    async with service.client() as client:
        await client.write_event(Detect(names=["hey_jarvis"]).event())
        await start_audio(client, pcm)
        events = await read_until(client, "detection", "not-detected")
        detection = Detection.from_event(events[-1])
        assert detection.name == "hey_jarvis"
        assert detection.timestamp is not None and 0 < detection.timestamp < len(pcm) * 1000 // (RATE * 2)
        (session,) = service.sessions()
    # the client hung up without audio-stop: the session goes with the connection
    assert await service.wait_closed(session) == "disconnected"
    await service.wait_idle()
    assert not service.sessions()


async def test_no_wake_word_is_not_detected(service: Service) -> None:
    pcm, _ = speech("no_wake_weather.wav")
    async with service.client() as client:
        await client.write_event(Detect(names=["hey_jarvis"]).event())
        await start_audio(client, pcm)
        await client.write_event(AudioStop().event())
        events = await read_until(client, "detection", "not-detected")
    assert [e.type for e in events] == ["not-detected"]
    assert NotDetected.is_type(events[0].type)


async def test_disconnect_mid_audio_leaves_nothing(service: Service) -> None:
    pcm, _ = speech("long_40s.wav")
    async with service.client() as client:
        await client.write_event(Transcribe(language="en").event())
        await start_audio(client, pcm[: len(pcm) // 4])
        await client.write_event(Ping(text="sync").event())  # answered after every chunk before it
        assert [e.type for e in await read_until(client, "pong")][-1] == "pong"
        (session,) = service.sessions()
    assert await service.wait_closed(session) == "disconnected"
    await service.wait_idle()
    assert not service.sessions()
    assert service.server.connections == 0


async def test_errors_are_wyoming_error_events(service: Service) -> None:
    async with service.client() as client:
        await client.write_event(Transcribe(name="nonexistent").event())
        await client.write_event(AudioStart(rate=RATE, width=WIDTH, channels=CHANNELS).event())
        error = Error.from_event((await read_until(client, "error"))[-1])
        assert error.code == "unknown_provider" and "whisper" in error.text
        await client.write_event(Transcribe().event())
        await client.write_event(AudioStart(rate=RATE, width=4, channels=CHANNELS).event())
        error = Error.from_event((await read_until(client, "error"))[-1])
        assert error.code == "bad_audio" and "width" in error.text
        await client.write_event(Detect(names=["no_such_word"]).event())
        await client.write_event(AudioStart(rate=RATE, width=WIDTH, channels=CHANNELS).event())
        error = Error.from_event((await read_until(client, "error"))[-1])
        assert "no_such_word" in error.text and "hey_jarvis" in error.text
        await client.write_event(Ping().event())  # the connection is still usable
        assert Pong.is_type((await read_until(client, "pong"))[-1].type)
    assert not service.sessions()


async def test_an_oversized_event_is_refused_before_it_is_read(service: Service) -> None:
    limit = service.thread.hub.limits.max_frame_bytes
    async with service.client() as client:
        assert client._writer is not None
        # A header announcing a payload over the limit; the payload itself is never sent.
        client._writer.write(b'{"type": "audio-chunk", "payload_length": %d}\n' % (limit + 1))
        await client._writer.drain()
        events = await read_until(client, "error")
        assert Error.from_event(events[-1]).code == "too_large"
        assert await asyncio.wait_for(client.read_event(), TIMEOUT) is None  # closed


def test_agreed_text_appends_only_what_two_decodes_agree_on() -> None:
    text = AgreedText()
    assert text.partial(0, "The quick") is None  # one decode: nothing agreed yet
    assert text.partial(0, "The quick brown") == "The quick"
    assert text.partial(0, "The quick brown fox.") == " brown"
    assert text.partial(0, "The quick brown fix") is None  # "fox" still uncertain
    assert text.final(0, "The quick brown fox jumps.") == " fox jumps."
    assert text.partial(1, "Over") is None  # a new utterance starts from scratch
    assert text.final(1, "Over the dog.") == " Over the dog."
    assert text.final(2, "") is None


def test_agreed_text_sends_the_hubs_stable_words_as_they_grow() -> None:
    text = AgreedText()
    assert text.partial(0, "Please deliver.", "") is None
    assert text.partial(0, "Please deliver the package to 4.", "Please deliver") == "Please deliver"
    assert text.partial(0, "Please deliver the package", "Please deliver") is None
    assert text.partial(0, "Please deliver the package to 42", "Please deliver the package to") == (
        " the package to"
    )
    assert text.final(0, "Please deliver the package to 42 Baker Street.") == " 42 Baker Street."


def test_a_language_without_a_model_picks_the_model_that_knows_it(service: Service) -> None:
    """Home Assistant (and Google clients) name a language, rarely a model."""
    from asrhub.transports.model_choice import model_for_language

    hub = service.thread.hub
    assert model_for_language(hub, None, None, "en") is None  # the default model knows English
    if "base" in hub.providers["whisper"].capabilities.models:
        assert model_for_language(hub, None, None, "de") == "base"
    assert model_for_language(hub, None, "tiny.en", "de") == "tiny.en"  # a named model stays
    assert model_for_language(hub, None, None, None) is None


async def test_requests_are_counted_under_their_transport(service: Service) -> None:
    from tests.transports.test_grpc_speech import opened_sessions

    before = await asyncio.to_thread(opened_sessions, service.thread, "wyoming")
    pcm, _ = speech("quick_fox.wav")
    async with service.client() as client:
        await client.write_event(Transcribe().event())
        await start_audio(client, pcm)
        await client.write_event(AudioStop().event())
        await read_until(client, "transcript-stop")
    assert await asyncio.to_thread(opened_sessions, service.thread, "wyoming") == before + 1


async def test_zeroconf_without_its_extra_is_a_clear_error() -> None:
    """``server.wyoming_zeroconf`` needs the optional ``zeroconf`` package (never used on the
    network by the tests): without it, start-up stops with the install hint."""
    from importlib.util import find_spec

    from asrhub.transports.listeners import _advertise

    if find_spec("zeroconf") is not None:
        pytest.skip("the zeroconf extra is installed here: advertising would leave loopback")
    with pytest.raises(RuntimeError, match=r"asrhub\[zeroconf\]"):
        await _advertise("127.0.0.1", 10300)
