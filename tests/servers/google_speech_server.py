"""A local gRPC server implementing ``google.cloud.speech.v1.Speech`` (Recognize and
StreamingRecognize), so the official ``google-cloud-speech`` client can be tested unchanged.

No protoc: the request/response classes of ``google.cloud.speech_v1`` are proto-plus messages
that serialise themselves (``RecognizeRequest.deserialize``, ``RecognizeResponse.serialize``),
registered with ``grpc.method_handlers_generic_handler``. Transcripts are real: faster-whisper
``tiny.en`` on the audio received (``tiny_whisper``), with word times and confidences.

Behaviour follows the v1 service where the tests touch it: one ``streaming_config`` first, then
audio; interim results (``is_final: false``) about every second of audio when
``interim_results`` is set; a final result when the client half-closes; ``InvalidArgument`` for a
wrong encoding or rate, a language this English-only engine cannot serve, a missing config, or a
synchronous request over one minute. ``phrases`` of ``speech_contexts`` become the recogniser's
hot words. Faults on demand: :attr:`LocalSpeechServer.fault` = a ``grpc.StatusCode`` (e.g.
``INVALID_ARGUMENT``, ``UNAVAILABLE``) with :attr:`fault_message`: a Recognize call fails at once,
a stream once :attr:`fault_after_bytes` of audio arrived (0: at its first audio);
:attr:`delay_s` holds every answer back (deadlines).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from google.cloud import speech_v1

from tests.servers import tiny_whisper

SERVICE = "google.cloud.speech.v1.Speech"
RATE = 16_000
INTERIM_EVERY_S = 1.0


class LocalSpeechServer:
    def __init__(self) -> None:
        self.fault: grpc.StatusCode | None = None
        self.fault_message = "injected fault"
        self.fault_after_bytes = 0
        self.delay_s = 0.0
        self.interim_every_s = INTERIM_EVERY_S
        self.configs: list[speech_v1.RecognitionConfig] = []
        self.streaming_configs: list[speech_v1.StreamingRecognitionConfig] = []
        self.calls: list[str] = []
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="google-speech")
        self._server: grpc.aio.Server | None = None
        self.endpoint = ""

    async def start(self, host: str = "127.0.0.1") -> str:
        server = grpc.aio.server()
        handlers = {
            "Recognize": grpc.unary_unary_rpc_method_handler(
                self._recognize,
                request_deserializer=speech_v1.RecognizeRequest.deserialize,
                response_serializer=speech_v1.RecognizeResponse.serialize,
            ),
            "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
                self._streaming_recognize,
                request_deserializer=speech_v1.StreamingRecognizeRequest.deserialize,
                response_serializer=speech_v1.StreamingRecognizeResponse.serialize,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port(f"{host}:0")
        await server.start()
        self._server = server
        self.endpoint = f"{host}:{port}"
        return self.endpoint

    async def close(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ RPCs

    async def _recognize(
        self, request: speech_v1.RecognizeRequest, context: grpc.aio.ServicerContext
    ) -> speech_v1.RecognizeResponse:
        self.calls.append("Recognize")
        self.configs.append(request.config)
        await self._maybe_fail(context)
        await self._validate(request.config, context)
        pcm = request.audio.content
        if len(pcm) > 60 * RATE * 2:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Sync input too long. For audio longer than 1 min use LongRunningRecognize "
                "with a 'uri' parameter.",
            )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        result = await self._final(request.config, pcm)
        return speech_v1.RecognizeResponse(
            results=[result] if result else [],
            total_billed_time=dt.timedelta(seconds=round(len(pcm) / 2 / RATE + 0.5)),
        )

    async def _streaming_recognize(
        self, requests: AsyncIterator[speech_v1.StreamingRecognizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[speech_v1.StreamingRecognizeResponse]:
        self.calls.append("StreamingRecognize")
        config: speech_v1.StreamingRecognitionConfig | None = None
        pcm = bytearray()
        interim_at = self.interim_every_s * RATE * 2
        async for request in requests:
            if config is None:
                if "streaming_config" not in request:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "Malordered Data Received. Send exactly one config, followed by audio data.",
                    )
                config = request.streaming_config
                self.configs.append(config.config)
                self.streaming_configs.append(config)
                await self._validate(config.config, context)
                continue
            if "streaming_config" in request:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "Malordered Data Received. Expected audio."
                )
            pcm += request.audio_content
            if self.fault is not None and len(pcm) > self.fault_after_bytes:
                # Read what the client is still sending before failing the call: a grpc.aio
                # client that is writing while the server aborts reports INTERNAL instead of
                # the status (a client-side race), which would hide the error under test.
                async for _ in requests:
                    pass
                await context.abort(self.fault, self.fault_message)
            if config.interim_results and len(pcm) >= interim_at:
                interim_at = len(pcm) + self.interim_every_s * RATE * 2
                text = await self._run(tiny_whisper.transcribe_text, _samples(bytes(pcm)))
                if text:
                    alternative = speech_v1.SpeechRecognitionAlternative(transcript=text)
                    yield speech_v1.StreamingRecognizeResponse(
                        results=[
                            speech_v1.StreamingRecognitionResult(alternatives=[alternative], stability=0.5)
                        ]
                    )
        if config is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "No config was sent.")
            return
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        final = await self._final(config.config, bytes(pcm))
        if final is not None:
            yield speech_v1.StreamingRecognizeResponse(
                results=[
                    speech_v1.StreamingRecognitionResult(
                        alternatives=final.alternatives,
                        is_final=True,
                        stability=1.0,
                        result_end_time=final.result_end_time,
                        language_code=final.language_code,
                    )
                ],
                total_billed_time=dt.timedelta(seconds=round(len(pcm) / 2 / RATE + 0.5)),
            )

    # ------------------------------------------------------------------ helpers

    async def _maybe_fail(self, context: grpc.aio.ServicerContext) -> None:
        if self.fault is not None and self.fault_after_bytes == 0:
            await context.abort(self.fault, self.fault_message)

    async def _validate(self, config: speech_v1.RecognitionConfig, context: grpc.aio.ServicerContext) -> None:
        linear16 = speech_v1.RecognitionConfig.AudioEncoding.LINEAR16
        if config.encoding != linear16 or config.sample_rate_hertz != RATE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid recognition 'config': this server takes LINEAR16 at {RATE} Hz only.",
            )
        if not config.language_code:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Invalid recognition 'config': missing language_code."
            )
        if not config.language_code.lower().startswith("en"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Invalid recognition 'config': language {config.language_code!r} "
                "is not supported by this server.",
            )

    async def _final(
        self, config: speech_v1.RecognitionConfig, pcm: bytes
    ) -> speech_v1.SpeechRecognitionResult | None:
        phrases = " ".join(p for c in config.speech_contexts for p in c.phrases)
        words = await self._run(tiny_whisper.transcribe_words, _samples(pcm), hotwords=phrases or None)
        if not words:
            return None
        infos = [
            speech_v1.WordInfo(
                word=w.word,
                start_time=dt.timedelta(seconds=w.start),
                end_time=dt.timedelta(seconds=w.end),
                confidence=w.probability if config.enable_word_confidence else 0.0,
            )
            for w in words
        ]
        alternative = speech_v1.SpeechRecognitionAlternative(
            transcript=" ".join(w.word for w in words),
            confidence=float(np.mean([w.probability for w in words])),
            words=infos if config.enable_word_time_offsets else [],
        )
        return speech_v1.SpeechRecognitionResult(
            alternatives=[alternative],
            result_end_time=dt.timedelta(seconds=len(pcm) / 2 / RATE),
            language_code=config.language_code.lower(),
        )

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))


def _samples(pcm: bytes) -> np.ndarray:
    usable = len(pcm) - len(pcm) % 2
    return np.frombuffer(pcm[:usable], "<i2").astype(np.float32) / 32768.0
