"""``LongRunningRecognize`` and ``google.longrunning.Operations`` on the hub, driven by the
official ``google-cloud-speech`` client (insecure channel, no Google credentials) exactly as a
Google user calls it: ``long_running_recognize`` then ``operation.result()``, which polls
``GetOperation`` over the same channel. The real default engine (faster-whisper tiny.en) on real
recordings; the operation bound, ownership and cancel run against a hub whose engine is held by
a Fake gate (so an operation is certainly still running while they are checked)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import msgspec
import pytest
from google.api_core import exceptions as gexc
from google.api_core.future import polling
from google.cloud import speech_v1
from google.longrunning import operations_pb2, operations_pb2_grpc

from asrhub.door import Door
from asrhub.transports.grpc_server import GrpcServer
from tests.audio_utils import encode, fixture, fixture_entry, load_wav, wer
from tests.transports.conftest import KEY, OTHER_KEY, ServerThread, make_settings, speech
from tests.transports.test_grpc_speech import Hub

Encoding = speech_v1.RecognitionConfig.AudioEncoding
POLL = polling.DEFAULT_POLLING.with_delay(initial=0.1, maximum=0.5, multiplier=1.5)
"""The client's own polling, faster than its 1 s-and-up default (the answer is the same)."""
OTHER = [("x-goog-api-key", OTHER_KEY)]


def start_grpc(thread: ServerThread, **kw: Any) -> Hub:
    async def start() -> GrpcServer:
        server = msgspec.structs.replace(thread.settings.server, api_keys=(KEY, OTHER_KEY))
        settings = msgspec.structs.replace(thread.settings, server=server)
        grpc_server = GrpcServer(thread.hub, Door.from_settings(settings), settings, **kw)
        await grpc_server.start("127.0.0.1", 0)
        return grpc_server

    return Hub(thread, asyncio.run_coroutine_threadsafe(start(), thread.loop).result(timeout=30))


def stop_grpc(hub: Hub) -> None:
    asyncio.run_coroutine_threadsafe(hub.grpc.stop(1.0), hub.thread.loop).result(timeout=30)


@pytest.fixture(scope="module")
def hub(whisper_server: ServerThread) -> Iterator[Hub]:
    started = start_grpc(whisper_server)
    yield started
    stop_grpc(started)


def config(**kw: Any) -> speech_v1.RecognitionConfig:
    fields: dict[str, Any] = {
        "encoding": Encoding.LINEAR16,
        "sample_rate_hertz": 16_000,
        "language_code": "en-US",
    }
    return speech_v1.RecognitionConfig(**{**fields, **kw})


def audio(content: bytes) -> speech_v1.RecognitionAudio:
    return speech_v1.RecognitionAudio(content=content)


def test_a_multi_utterance_file_with_word_offsets(hub: Hub) -> None:
    """silences.wav: four sentences between long pauses, raw LINEAR16 as Google users send it."""
    pcm, text = speech("silences.wav")
    operation = hub.client().long_running_recognize(
        config=config(enable_word_time_offsets=True), audio=audio(pcm)
    )
    assert operation.operation.name
    response = operation.result(timeout=120, polling=POLL)
    assert isinstance(response, speech_v1.LongRunningRecognizeResponse)
    heard = " ".join(r.alternatives[0].transcript for r in response.results)
    assert wer(text, heard) < 0.3, heard
    expected = [segment["end"] for segment in fixture_entry("silences.wav")["segments"]]
    assert len(response.results) == len(expected), "one result per utterance, not one per file"
    ends = [r.result_end_time.total_seconds() for r in response.results]
    assert ends == sorted(ends) and len(set(ends)) == len(ends), ends
    assert all(abs(end - reference) < 1.0 for end, reference in zip(ends, expected, strict=True)), ends
    for result in response.results:
        words = result.alternatives[0].words
        assert words, "enable_word_time_offsets asked for words"
        starts = [w.start_time.total_seconds() for w in words]
        assert starts == sorted(starts)
        assert words[-1].end_time.total_seconds() <= result.result_end_time.total_seconds() + 0.5
        assert result.language_code.startswith("en")
    assert response.total_billed_time.total_seconds() == 24  # 23.7 s, rounded up
    assert operation.metadata.progress_percent == 100
    assert operation.metadata.last_update_time >= operation.metadata.start_time


def test_a_compressed_file_without_words(hub: Hub) -> None:
    samples, rate = load_wav(fixture("reminder.wav"))
    flac = encode(samples, rate, "flac")
    operation = hub.client().long_running_recognize(
        config=config(encoding=Encoding.FLAC, sample_rate_hertz=0), audio=audio(flac)
    )
    response = operation.result(timeout=120, polling=POLL)
    heard = " ".join(r.alternatives[0].transcript for r in response.results)
    assert wer(fixture_entry("reminder.wav")["text"], heard) < 0.3, heard
    assert not any(r.alternatives[0].words for r in response.results)


def test_bad_requests_fail_the_call_not_the_operation(hub: Hub) -> None:
    client = hub.client()
    with pytest.raises(gexc.InvalidArgument, match="uri"):
        client.long_running_recognize(
            config=config(), audio=speech_v1.RecognitionAudio(uri="gs://bucket/file.wav")
        )
    with pytest.raises(gexc.InvalidArgument, match="empty"):
        client.long_running_recognize(config=config(), audio=audio(b""))
    with pytest.raises(gexc.InvalidArgument, match="whisper"):
        client.long_running_recognize(config=config(model="nonexistent"), audio=audio(bytes(3200)))
    with pytest.raises(gexc.InvalidArgument, match="AMR"):
        client.long_running_recognize(config=config(encoding=Encoding.AMR), audio=audio(bytes(3200)))
    with pytest.raises(gexc.Unauthenticated):
        hub.client([("x-goog-api-key", "wrong")]).long_running_recognize(
            config=config(), audio=audio(bytes(3200))
        )
    with pytest.raises(gexc.NotFound):
        client.transport.operations_client.get_operation("12345")


def test_undecodable_audio_fails_the_operation(hub: Hub) -> None:
    operation = hub.client().long_running_recognize(
        config=config(encoding=Encoding.OGG_OPUS, sample_rate_hertz=48_000),
        audio=audio(bytes(range(256)) * 64),
    )
    with pytest.raises(gexc.InvalidArgument, match="cannot decode"):
        operation.result(timeout=60, polling=POLL)
    assert operation.operation.error.code == 3  # INVALID_ARGUMENT in google.rpc.Status


def test_owner_bound_cancel_delete_and_shutdown() -> None:
    """On a hub whose engine is held: a running operation is seen by its key only, the bound
    (1 here) refuses a second one, cancel ends it (CANCELLED) and frees the slot; released, the
    next one completes; delete forgets it; a shutdown stops what still runs (UNAVAILABLE)."""
    from tests.transports.test_backpressure import engine, stalled_hub

    with ServerThread(make_settings(keys=(KEY, OTHER_KEY)), hub_factory=stalled_hub) as thread:
        hub = start_grpc(thread, max_operations=1)
        gate = engine(thread).gate
        thread.call(gate.clear)
        pcm, text = speech("quick_fox.wav")
        client, other = hub.client(), hub.client(OTHER)
        first = client.long_running_recognize(config=config(), audio=audio(pcm))
        name = first.operation.name

        seen = client.transport.operations_client.get_operation(name)
        assert not seen.done
        metadata = speech_v1.LongRunningRecognizeMetadata.deserialize(seen.metadata.value)
        assert metadata.progress_percent == 0 and metadata.start_time
        with pytest.raises(gexc.NotFound):
            other.transport.operations_client.get_operation(name)
        with pytest.raises(gexc.NotFound):
            other.transport.operations_client.cancel_operation(name)
        assert [op.name for op in _list(other)] == []
        assert [op.name for op in _list(client)] == [name]
        with grpc.insecure_channel(hub.address) as channel:  # the raw stub: a token no client makes
            with pytest.raises(grpc.RpcError) as refused:
                operations_pb2_grpc.OperationsStub(channel).ListOperations(
                    operations_pb2.ListOperationsRequest(page_token="-1"), metadata=[("x-goog-api-key", KEY)]
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        with pytest.raises(gexc.ResourceExhausted, match="running operations"):
            client.long_running_recognize(config=config(), audio=audio(pcm))

        assert first.cancel()
        assert first.cancelled()
        with pytest.raises(gexc.Cancelled, match="cancelled by the client"):
            first.result(timeout=30)

        second = client.long_running_recognize(config=config(), audio=audio(pcm))  # the slot is free
        thread.call(gate.set)
        response = second.result(timeout=120, polling=POLL)
        assert wer(text, " ".join(r.alternatives[0].transcript for r in response.results)) < 0.3
        client.transport.operations_client.delete_operation(second.operation.name)
        with pytest.raises(gexc.NotFound):
            client.transport.operations_client.get_operation(second.operation.name)

        thread.call(gate.clear)
        third = client.long_running_recognize(config=config(), audio=audio(pcm))
        stop_grpc(hub)
        entries = thread.call(lambda: dict(hub.grpc.speech.operations._entries))
        stopped = entries[third.operation.name]
        assert stopped.done and stopped.error.code == 14 and "shutting down" in stopped.error.message
        thread.call(gate.set)


def _list(client: speech_v1.SpeechClient) -> list[operations_pb2.Operation]:
    return list(client.transport.operations_client.list_operations("", filter_=""))


def test_finished_operations_are_kept_within_their_bound(whisper_server: ServerThread) -> None:
    """keep_finished=1: the older of two finished operations is forgotten (NOT_FOUND)."""
    hub = start_grpc(whisper_server)
    try:
        hub.thread.call(lambda: setattr(hub.grpc.speech.operations, "keep_finished", 1))
        pcm, _ = speech("quick_fox.wav")
        client = hub.client()
        done = []
        for _ in range(2):  # one after the other: the first is certainly the older
            done.append(client.long_running_recognize(config=config(), audio=audio(pcm)))
            done[-1].result(timeout=120, polling=POLL)
        with pytest.raises(gexc.NotFound):
            client.transport.operations_client.get_operation(done[0].operation.name)
        assert client.transport.operations_client.get_operation(done[1].operation.name).done
    finally:
        stop_grpc(hub)
