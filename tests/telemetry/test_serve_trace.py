"""``asrhub serve`` (a subprocess) with ``[telemetry]`` on from the environment: a Google
Speech client's gRPC stream that carries a ``traceparent`` in its metadata becomes a session
span under that client span, with its utterance and engine call; SIGTERM exports what is left
(the shutdown flushes) to a real OTLP/HTTP receiver (tests/telemetry/collector.py)."""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import Iterator

import grpc
from google.cloud import speech_v1

from tests.transports.conftest import frames, free_port, serve_process, speech

from .collector import Collector


def recognize(port: int, pcm: bytes, traceparent: str) -> list[str]:
    config = speech_v1.StreamingRecognitionConfig(
        config=speech_v1.RecognitionConfig(
            encoding=speech_v1.RecognitionConfig.AudioEncoding.LINEAR16, sample_rate_hertz=16_000
        )
    )

    def requests() -> Iterator[speech_v1.StreamingRecognizeRequest]:
        yield speech_v1.StreamingRecognizeRequest(streaming_config=config)
        for chunk in frames(pcm):
            yield speech_v1.StreamingRecognizeRequest(audio_content=chunk)

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        transport = speech_v1.services.speech.transports.SpeechGrpcTransport(channel=channel)
        call = transport.streaming_recognize(requests(), metadata=[("traceparent", traceparent)])
        return [r.alternatives[0].transcript for response in call for r in response.results if r.is_final]


async def test_a_grpc_callers_traceparent_parents_the_session_of_asrhub_serve() -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    fox, _ = speech("quick_fox.wav")
    grpc_port = free_port()
    with Collector() as collector:
        env = {"ASRHUB_TELEMETRY__ENABLED": "true", "ASRHUB_TELEMETRY__ENDPOINT": collector.endpoint}
        with serve_process("--grpc-port", str(grpc_port), env=env) as (proc, _port):
            finals = await asyncio.to_thread(recognize, grpc_port, fox, f"00-{trace_id}-{parent}-01")
            assert finals and "fox" in " ".join(finals).lower(), finals
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 60) == 0
        ours = [s for s in collector.spans if s.trace_id == trace_id]
    by_name = {s.name: s for s in ours}
    assert sorted(by_name) == ["engine.call", "session", "utterance"], ours
    assert by_name["session"].parent_id == parent
    assert by_name["session"].attributes["asrhub.transport"] == "grpc"
    assert by_name["utterance"].parent_id == by_name["session"].span_id
    assert by_name["engine.call"].parent_id == by_name["utterance"].span_id
    assert {s.service for s in ours} == {"asrhub"}
