"""The hub as a Google Cloud Speech v1 server, driven by the official ``google-cloud-speech``
client (insecure channel, no Google credentials) on real speech with the real default engine
(faster-whisper tiny.en): streaming with interim results and word offsets, single utterance,
Recognize, the errors a Google client must see as gRPC statuses (unknown model, bad audio, API
key), health and reflection, and a client that vanishes mid-stream."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import speech_v1
from google.cloud.speech_v1.services.speech.transports import SpeechGrpcAsyncIOTransport, SpeechGrpcTransport
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from asrhub.door import Door
from asrhub.transports.door import DOOR
from asrhub.transports.grpc_server import GrpcServer
from tests.audio_utils import encode, fixture, fixture_entry, load_wav, pcm16_bytes, wer
from tests.transports.conftest import KEY, ServerThread, frames, make_settings, speech

Encoding = speech_v1.RecognitionConfig.AudioEncoding
Events = speech_v1.StreamingRecognizeResponse.SpeechEventType
AUTH = [("x-goog-api-key", KEY)]


class Metadata(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self.metadata = metadata

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), *self.metadata])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class Hub:
    def __init__(self, thread: ServerThread, grpc_server: GrpcServer) -> None:
        self.thread = thread
        self.grpc = grpc_server
        self.address = f"127.0.0.1:{grpc_server.port}"

    def client(self, metadata: list[tuple[str, str]] | None = None) -> speech_v1.SpeechClient:
        """The official client on an insecure channel; ``metadata`` (default: the API key) goes
        on every call through a channel interceptor — the client's ``streaming_recognize``
        helper does not forward per-call metadata."""
        channel = grpc.intercept_channel(
            grpc.insecure_channel(self.address), Metadata(AUTH if metadata is None else metadata)
        )
        return speech_v1.SpeechClient(transport=SpeechGrpcTransport(channel=channel))

    def grpc_sessions(self) -> int:
        return self.thread.call(
            lambda: sum(1 for s in self.thread.hub.sessions.values() if s.ctx.transport == "grpc")
        )


@pytest.fixture(scope="module")
def hub(whisper_server: ServerThread) -> Iterator[Hub]:
    async def start() -> GrpcServer:
        server = GrpcServer(whisper_server.hub, whisper_server.app[DOOR], whisper_server.settings)
        await server.start("127.0.0.1", 0)
        return server

    server = asyncio.run_coroutine_threadsafe(start(), whisper_server.loop).result(timeout=30)
    yield Hub(whisper_server, server)
    asyncio.run_coroutine_threadsafe(server.stop(1.0), whisper_server.loop).result(timeout=30)


def streaming_config(**kw: Any) -> speech_v1.StreamingRecognitionConfig:
    recognition = {"encoding": Encoding.LINEAR16, "sample_rate_hertz": 16_000, "language_code": "en-US"}
    recognition.update(kw.pop("config", {}))
    return speech_v1.StreamingRecognitionConfig(config=speech_v1.RecognitionConfig(**recognition), **kw)


def audio_requests(pcm: bytes, ms: int = 100) -> Iterator[speech_v1.StreamingRecognizeRequest]:
    for chunk in frames(pcm, ms):
        yield speech_v1.StreamingRecognizeRequest(audio_content=chunk)


def finals(
    responses: list[speech_v1.StreamingRecognizeResponse],
) -> list[speech_v1.StreamingRecognitionResult]:
    return [r for resp in responses for r in resp.results if r.is_final]


def test_streaming_with_interim_results_and_word_offsets(hub: Hub) -> None:
    pcm, text = speech("address_time.wav")
    config = streaming_config(interim_results=True, config={"enable_word_time_offsets": True})
    heard = threading.Event()

    def requests() -> Iterator[speech_v1.StreamingRecognizeRequest]:
        for i, request in enumerate(audio_requests(pcm)):
            if i == 25:  # mid-sentence: hold the rest until the hub has said something
                heard.wait(60)
            yield request

    responses = []
    for response in hub.client().streaming_recognize(config, requests()):
        responses.append(response)
        heard.set()
    interim = [r for resp in responses for r in resp.results if not r.is_final]
    assert interim, "interim_results asked for partials"
    assert all(0.0 < r.stability <= 0.9 for r in interim)
    assert all(r.alternatives[0].transcript for r in interim)
    (final,) = finals(responses)
    best = final.alternatives[0]
    assert wer(text, best.transcript) < 0.3, best.transcript
    assert 0.0 < best.confidence <= 1.0
    assert best.words, "enable_word_time_offsets asked for words"
    starts = [w.start_time.total_seconds() for w in best.words]
    assert starts == sorted(starts)
    assert 0.0 <= starts[0] < best.words[-1].end_time.total_seconds() <= len(pcm) / 32_000 + 0.1
    assert best.words[-1].end_time.total_seconds() <= final.result_end_time.total_seconds() + 0.5
    assert final.language_code.startswith("en")
    assert hub.grpc_sessions() == 0


def test_no_interim_no_words_unless_asked(hub: Hub) -> None:
    pcm, text = speech("quick_fox.wav")
    responses = list(hub.client().streaming_recognize(streaming_config(), audio_requests(pcm)))
    assert all(r.is_final for resp in responses for r in resp.results)
    (final,) = finals(responses)
    assert wer(text, final.alternatives[0].transcript) < 0.3
    assert not final.alternatives[0].words


def test_single_utterance_ends_at_the_first_pause(hub: Hub) -> None:
    """Two sentences with a pause: END_OF_SINGLE_UTTERANCE after the first, its final, the end —
    although the client still had audio to send."""
    first, first_text = speech("quick_fox.wav")
    second, _ = speech("weather_question.wav")
    pcm = first + bytes(32_000) + second
    config = streaming_config(single_utterance=True)
    responses = list(hub.client().streaming_recognize(config, audio_requests(pcm)))
    kinds = [r.speech_event_type for r in responses if r.speech_event_type]
    assert kinds == [Events.END_OF_SINGLE_UTTERANCE]
    (final,) = finals(responses)
    assert wer(first_text, final.alternatives[0].transcript) < 0.3
    assert responses.index(next(r for r in responses if r.speech_event_type)) < responses.index(
        next(r for r in responses if r.results and r.results[0].is_final)
    )


def test_compressed_audio_flac(hub: Hub) -> None:
    samples, rate = load_wav(fixture("reminder.wav"))
    data = encode(samples, rate, "flac")
    config = streaming_config(config={"encoding": Encoding.FLAC, "sample_rate_hertz": 0})
    responses = list(hub.client().streaming_recognize(config, audio_requests(data, 50)))
    text = " ".join(r.alternatives[0].transcript for r in finals(responses))
    assert wer(speech("reminder.wav")[1], text) < 0.3, text


def test_recognize_whole_clip_with_words(hub: Hub) -> None:
    pcm, text = speech("weather_question.wav")
    config = speech_v1.RecognitionConfig(
        encoding=Encoding.LINEAR16,
        sample_rate_hertz=16_000,
        language_code="en-US",
        model="whisper",
        enable_word_time_offsets=True,
    )
    response = hub.client().recognize(config=config, audio=speech_v1.RecognitionAudio(content=pcm))
    (result,) = response.results
    assert wer(text, result.alternatives[0].transcript) < 0.3
    assert result.alternatives[0].words
    assert hub.grpc_sessions() == 0


def test_unknown_model_names_the_available_ones(hub: Hub) -> None:
    config = streaming_config(config={"model": "nonexistent"})
    with pytest.raises(gexc.InvalidArgument, match="whisper"):
        list(hub.client().streaming_recognize(config, audio_requests(bytes(3200))))
    with pytest.raises(gexc.InvalidArgument, match="whisper"):
        hub.client().recognize(
            config=speech_v1.RecognitionConfig(
                model="nonexistent", encoding=Encoding.LINEAR16, sample_rate_hertz=16_000
            ),
            audio=speech_v1.RecognitionAudio(content=bytes(3200)),
        )


def test_bad_audio_is_invalid_argument(hub: Hub) -> None:
    garbage = bytes(range(256)) * 64
    config = streaming_config(config={"encoding": Encoding.OGG_OPUS, "sample_rate_hertz": 48_000})
    with pytest.raises(gexc.InvalidArgument, match="cannot read the ogg stream"):
        list(
            hub.client().streaming_recognize(
                config, iter([speech_v1.StreamingRecognizeRequest(audio_content=garbage)])
            )
        )
    assert hub.grpc_sessions() == 0


def test_unsupported_encoding_and_missing_config(hub: Hub) -> None:
    config = streaming_config(config={"encoding": Encoding.AMR, "sample_rate_hertz": 8000})
    with pytest.raises(gexc.InvalidArgument, match="AMR"):
        list(hub.client().streaming_recognize(config, audio_requests(bytes(3200))))
    stub = hub.client().transport.streaming_recognize
    with pytest.raises(grpc.RpcError) as refused:  # the raw stub: audio first, no config
        list(stub(iter([speech_v1.StreamingRecognizeRequest(audio_content=bytes(320))])))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "streaming_config" in refused.value.details()
    twice = [speech_v1.StreamingRecognizeRequest(streaming_config=streaming_config())] * 2
    with pytest.raises(grpc.RpcError) as refused:  # a second config mid-stream
        list(stub(iter(twice), metadata=AUTH))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "only allowed in the first request" in refused.value.details()
    assert hub.grpc_sessions() == 0


@pytest.mark.parametrize(
    "metadata",
    [[], [("x-goog-api-key", "wrong")], [("authorization", "Bearer wrong")]],
    ids=["none", "wrong-goog-key", "wrong-bearer"],
)
def test_api_key_required(hub: Hub, metadata: list[tuple[str, str]]) -> None:
    with pytest.raises(gexc.Unauthenticated):
        list(hub.client(metadata).streaming_recognize(streaming_config(), audio_requests(bytes(3200))))
    with pytest.raises(gexc.Unauthenticated):
        hub.client(metadata).recognize(
            config=speech_v1.RecognitionConfig(encoding=Encoding.LINEAR16, sample_rate_hertz=16_000),
            audio=speech_v1.RecognitionAudio(content=bytes(3200)),
        )


def test_bearer_key_accepted(hub: Hub) -> None:
    pcm, text = speech("quick_fox.wav")
    responses = hub.client([("authorization", f"Bearer {KEY}")]).streaming_recognize(
        streaming_config(), audio_requests(pcm)
    )
    assert wer(text, " ".join(r.alternatives[0].transcript for r in finals(list(responses)))) < 0.3


def test_health_and_reflection(hub: Hub) -> None:
    with grpc.insecure_channel(hub.address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        for service in ("", "google.cloud.speech.v1.Speech", "google.longrunning.Operations"):
            assert (
                check(health_pb2.HealthCheckRequest(service=service)).status
                == health_pb2.HealthCheckResponse.SERVING
            )
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {
            "google.cloud.speech.v1.Speech",
            "google.longrunning.Operations",
            "grpc.health.v1.Health",
        } <= services
        from google.protobuf.descriptor_pool import DescriptorPool

        pool = DescriptorPool(database)
        speech_service = pool.FindServiceByName("google.cloud.speech.v1.Speech")
        methods = {m.name: m for m in speech_service.methods}
        assert (
            methods["StreamingRecognize"].input_type.full_name
            == "google.cloud.speech.v1.StreamingRecognizeRequest"
        )
        assert "streaming_config" in methods["StreamingRecognize"].input_type.fields_by_name
        assert methods["LongRunningRecognize"].output_type.full_name == "google.longrunning.Operation"
        operations = pool.FindServiceByName("google.longrunning.Operations")
        assert {"GetOperation", "CancelOperation"} <= {m.name for m in operations.methods}


def test_client_vanishing_mid_stream_leaves_nothing(hub: Hub) -> None:
    """The client cancels while it is still sending: the hub's session closes, nothing stays."""
    pcm, _ = speech("long_40s.wav")
    release = threading.Event()

    def requests() -> Iterator[speech_v1.StreamingRecognizeRequest]:
        yield speech_v1.StreamingRecognizeRequest(streaming_config=streaming_config(interim_results=True))
        for i, chunk in enumerate(frames(pcm, 100)):
            if i == 30:
                release.wait(60)  # the stream stays open, mid-audio, until the client cancels
            yield speech_v1.StreamingRecognizeRequest(audio_content=chunk)

    stream = hub.client().transport.streaming_recognize(requests())
    try:
        assert next(stream).results  # an interim result: the session is live
        (session,) = hub.thread.call(
            lambda: [s for s in hub.thread.hub.sessions.values() if s.ctx.transport == "grpc"]
        )
        stream.cancel()
    finally:
        release.set()
    loop = hub.thread.loop
    reason = asyncio.run_coroutine_threadsafe(session.wait_closed(), loop).result(timeout=30)
    assert reason == "disconnected"
    asyncio.run_coroutine_threadsafe(hub.grpc.wait_idle(), loop).result(timeout=30)
    assert hub.grpc_sessions() == 0


async def test_a_stalled_engine_pushes_back_through_http2_flow_control() -> None:
    """With the engine held (a Fake that gates the real provider), the hub stops reading the
    stream at the session's pending bound: the client's writes wait (HTTP/2 flow control), the
    hub holds no more than a window of the audio; released, every utterance gets its final.
    Meanwhile the hub is at its session limit: gRPC says RESOURCE_EXHAUSTED, Wyoming an error."""
    from tests.transports.test_backpressure import engine, stalled_hub

    limits = {"max_pending_segments": 2, "max_utterance_s": 5.0, "max_sessions": 1}
    with ServerThread(make_settings(limits=limits), hub_factory=stalled_hub) as thread:
        server = asyncio.run_coroutine_threadsafe(_grpc_on(thread), thread.loop).result(timeout=30)
        gate = engine(thread).gate
        thread.call(gate.clear)
        samples, _ = load_wav(fixture("long_40s.wav"))
        pcm, reference = pcm16_bytes(samples), fixture_entry("long_40s.wav")["text"]
        sent = [0]

        async def requests() -> AsyncIterator[speech_v1.StreamingRecognizeRequest]:
            yield speech_v1.StreamingRecognizeRequest(streaming_config=streaming_config())
            for chunk in frames(pcm, 100):
                yield speech_v1.StreamingRecognizeRequest(audio_content=chunk)
                sent[0] += len(chunk)

        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        client = speech_v1.SpeechAsyncClient(transport=SpeechGrpcAsyncIOTransport(channel=channel))
        texts: list[str] = []

        async def read() -> None:
            async for response in await client.streaming_recognize(requests=requests(), metadata=AUTH):
                texts.extend(r.alternatives[0].transcript for r in response.results if r.is_final)

        reader = asyncio.create_task(read())

        def taken() -> int:
            return thread.call(lambda: sum(s.bytes_in for s in thread.hub.sessions.values()))

        def at_bound() -> bool:
            return any(not s.ctx.pending.ready for s in thread.hub.sessions.values())

        # a condition on the hub thread's loop, checked from here
        while not await asyncio.to_thread(thread.call, at_bound):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        before = await asyncio.to_thread(taken)
        await asyncio.sleep(1.0)  # no event marks "nothing more happened": watch a second
        after = await asyncio.to_thread(taken)
        print(f"\nengine stalled: hub took {after / len(pcm):.0%}, client sent {sent[0] / len(pcm):.0%}")
        assert after - before <= 2 * 64 * 1024, "the hub kept reading past the pending bound"
        assert after < 0.6 * len(pcm) and sent[0] < len(pcm), "the client pushed the whole file"
        # the hub is at its session limit (1): another stream, or a Wyoming request, is refused
        with pytest.raises(gexc.ResourceExhausted, match="limit"):
            await client.recognize(
                config=speech_v1.RecognitionConfig(encoding=Encoding.LINEAR16, sample_rate_hertz=16_000),
                audio=speech_v1.RecognitionAudio(content=bytes(3200)),
                metadata=AUTH,
            )
        assert await _wyoming_refused(thread) == "capacity"
        await asyncio.to_thread(thread.call, gate.set)
        await asyncio.wait_for(reader, 120)
        await channel.close()
        assert wer(reference, " ".join(texts)) <= 0.2
        asyncio.run_coroutine_threadsafe(server.stop(1.0), thread.loop).result(timeout=30)


async def _wyoming_refused(thread: ServerThread) -> str | None:
    from wyoming.asr import Transcribe
    from wyoming.audio import AudioStart
    from wyoming.client import AsyncTcpClient
    from wyoming.error import Error

    from asrhub.transports.wyoming import WyomingServer

    async def start() -> WyomingServer:
        server = WyomingServer(thread.hub, thread.app[DOOR])
        await server.start("127.0.0.1", 0)
        return server

    server = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(start(), thread.loop))
    try:
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(Transcribe().event())
            await client.write_event(AudioStart(rate=16_000, width=2, channels=1).event())
            while (event := await asyncio.wait_for(client.read_event(), 60)) is not None:
                if Error.is_type(event.type):
                    return Error.from_event(event).code
            return None
    finally:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(server.stop(1.0), thread.loop))


async def _grpc_on(thread: ServerThread) -> GrpcServer:
    server = GrpcServer(thread.hub, thread.app[DOOR], thread.settings)
    await server.start("127.0.0.1", 0)
    return server


def opened_sessions(thread: ServerThread, transport: str) -> float:
    """``asrhub_sessions_opened_total{transport=…}`` from the hub's /metrics."""
    import re
    import urllib.request

    request = urllib.request.Request(f"{thread.http}/metrics", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        text = resp.read().decode()
    found = re.search(rf'^asrhub_sessions_opened_total\{{transport="{transport}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_streams_are_counted_under_their_transport(hub: Hub) -> None:
    before = opened_sessions(hub.thread, "grpc")
    pcm, _ = speech("quick_fox.wav")
    list(hub.client().streaming_recognize(streaming_config(), audio_requests(pcm)))
    assert opened_sessions(hub.thread, "grpc") == before + 1


def test_a_port_in_use_is_an_error_not_a_shared_port(hub: Hub) -> None:
    """Without --workers the listeners do not set SO_REUSEPORT: a second hub on the same port
    fails to start instead of silently taking half the connections."""
    from asrhub.transports.grpc_server import ListenError
    from asrhub.transports.wyoming import WyomingServer

    thread = hub.thread

    async def second_grpc() -> None:
        server = GrpcServer(thread.hub, Door.from_settings(thread.settings), thread.settings)
        await server.start("127.0.0.1", hub.grpc.port)

    with pytest.raises(ListenError, match="cannot listen for gRPC"):
        asyncio.run_coroutine_threadsafe(second_grpc(), thread.loop).result(timeout=30)

    async def second_wyoming() -> None:
        await WyomingServer(thread.hub, thread.app[DOOR]).start("127.0.0.1", hub.grpc.port)

    with pytest.raises(RuntimeError, match="cannot listen for Wyoming"):
        asyncio.run_coroutine_threadsafe(second_wyoming(), thread.loop).result(timeout=30)
