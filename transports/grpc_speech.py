"""``google.cloud.speech.v1.Speech`` served by the hub: ``StreamingRecognize`` and ``Recognize``
on ordinary hub sessions (transport label ``grpc``), ``LongRunningRecognize`` as an operation on
the upload path (:mod:`~asrhub.transports.grpc_long_running`, :mod:`~asrhub.transports.grpc_operations`).

StreamingRecognize::

    client: config ── audio ── audio ── … ── (half-close)
    hub:          (partials: is_final=false, stability) ── final ── … ── final ── OK

* the first request must carry ``streaming_config`` (else ``INVALID_ARGUMENT``); it opens one
  session (see :mod:`~asrhub.transports.google_speech_config` for the mapping);
* a reader task awaits ``session.feed`` for each request before reading the next, so a busy
  engine stops the reads and HTTP/2 flow control (a bounded window, no BDP growth) pushes back
  on the client; the client's half-close is ``session.end()``: the last utterance's final, then
  the call ends with OK;
* the answers come from the session through a bounded :class:`~asrhub.session.delivery.EventQueue`
  (superseded partials shed first; a client that cannot take its finals gets
  ``RESOURCE_EXHAUSTED``);
* ``single_utterance``: at the first end of turn the hub sends ``END_OF_SINGLE_UTTERANCE``
  (semantic end of turn, eagerness ``auto``, where the hub allows it — ``limits.semantic_turns``
  —, so a pause inside the command does not cut it; else the VAD's first end of speech),
  ends the session (audio after it is read and ignored), sends the
  final and ends the call; ``enable_voice_activity_events``: ``SPEECH_ACTIVITY_BEGIN``/``END``;
* errors: see :data:`STATUS`. An error that ends the session, and ``bad_audio``, end the call
  with that status; an utterance that failed alone (the engine) is reported in-stream in the
  response's ``error`` field and the stream goes on;
* a client that goes away (cancel, reset) cancels the handler: the session is closed at once;
* the first request must come within ``limits.start_timeout_s`` (else ``OUT_OF_RANGE``, the
  ``timeout`` status); the key and connection caps were checked before it was read
  (:mod:`~asrhub.transports.grpc_door`).

Recognize runs the same session over the whole ``audio.content`` (``uri`` is refused) and
answers every final as one result.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.cloud import speech_v1
from google.longrunning import operations_pb2
from google.rpc import code_pb2, status_pb2

from asrhub import telemetry
from asrhub.errors import HubError
from asrhub.frames import (
    ErrorEvent,
    FinalTranscript,
    PartialTranscript,
    SessionClosed,
    SpeechEnded,
    SpeechStarted,
)
from asrhub.hub import Hub
from asrhub.logging import get_logger
from asrhub.session.session import Session, State

from .google_speech_config import SpeechOptions, speech_options
from .google_speech_results import (
    Stability,
    all_words_result,
    recognize_result,
    speech_event,
    streaming_final,
    streaming_partial,
)
from .grpc_door import CALLER, STATUS
from .grpc_long_running import file_fields, file_job
from .grpc_operations import MAX_RUNNING, OperationFailed, Operations

log = get_logger("asrhub.transports")
T = TypeVar("T")

SERVICE = "google.cloud.speech.v1.Speech"
TRANSPORT = "grpc"
Events = speech_v1.StreamingRecognizeResponse.SpeechEventType

ENDS_THE_CALL = frozenset({"bad_audio"})
"""Non-fatal hub errors that still end a gRPC call: Google answers bad audio with an error status."""


def status_of(code: str, hub: Hub) -> grpc.StatusCode:
    if code == "capacity" and not hub.accepting:
        return grpc.StatusCode.UNAVAILABLE  # shutting down: try another replica
    return STATUS.get(code, grpc.StatusCode.INTERNAL)


class SpeechService:
    """The three RPCs; one instance per server, state per call only (the operations of
    ``LongRunningRecognize`` live in :attr:`operations`)."""

    def __init__(
        self,
        hub: Hub,
        *,
        start_timeout_s: float = 10.0,
        on_call: Callable[[int], None] = lambda _d: None,
        max_operations: int = MAX_RUNNING,
    ) -> None:
        self.hub = hub
        self.start_timeout_s = start_timeout_s
        self._on_call = on_call  # +1 / -1: the server counts live calls for the drain
        self.operations = Operations(self.identify, max_running=max_operations)

    async def _fail(self, context: grpc.aio.ServicerContext[Any, Any], error: HubError) -> None:
        await context.abort(status_of(error.code, self.hub), error.message)

    async def identify(self, _context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The caller's key identity (the door admitted the call: :data:`CALLER`)."""
        return CALLER.get()

    async def _open(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        config: speech_v1.RecognitionConfig,
        *,
        interim: bool,
        single: bool = False,
    ) -> tuple[Session, SpeechOptions]:
        key = await self.identify(context)
        try:
            options = speech_options(self.hub, config, interim=interim)
            if single and self.hub.limits.semantic_turns:  # one command: end it when it is said
                options.session["turn_detection"] = {"type": "semantic", "eagerness": "auto"}
            with telemetry.incoming(dict(context.invocation_metadata() or ())):  # a caller's traceparent
                session = await self.hub.open_async(options.session, key=key, transport=TRANSPORT)
        except HubError as exc:
            await self._fail(context, exc)
            raise  # not reached: abort raises
        if session.closed:  # failed while being built: its first error says why
            early = [e async for e in session.iter_events()]
            error = next((e for e in early if isinstance(e, ErrorEvent)), None)
            await self._fail(
                context,
                HubError(
                    error.code if error else "bad_message", error.message if error else "session failed"
                ),
            )
        return session, options

    # ------------------------------------------------------------------ StreamingRecognize

    async def streaming_recognize(
        self,
        requests: AsyncIterator[speech_v1.StreamingRecognizeRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[speech_v1.StreamingRecognizeResponse]:
        self._on_call(1)
        try:
            async for response in self._stream(requests, context):
                yield response
        finally:
            self._on_call(-1)

    async def _stream(
        self,
        requests: AsyncIterator[speech_v1.StreamingRecognizeRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[speech_v1.StreamingRecognizeResponse]:
        try:
            async with asyncio.timeout(self.start_timeout_s):
                first = await anext(aiter(requests), None)
        except TimeoutError:
            limit = self.start_timeout_s
            await self._fail(
                context, HubError("timeout", f"no request within {limit:g} s of the call's start")
            )
            return
        except HubError as exc:  # the first message was refused unread (too large, malformed)
            await self._fail(context, exc)
            return
        if first is None or "streaming_config" not in first:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry streaming_config (then audio)"
            )
            return
        streaming = first.streaming_config
        session, options = await self._open(
            context, streaming.config, interim=streaming.interim_results, single=streaming.single_utterance
        )
        queue = session.queue(self.hub.limits.subscriber_queue)
        reader = _Reader(session, self.hub.limits.max_frame_bytes)
        reading = asyncio.create_task(reader.run(requests), name="grpc-speech-reader")
        stability = Stability()
        single, voice_events = streaming.single_utterance, streaming.enable_voice_activity_events
        ended_single = False
        try:
            async for event in queue:
                if isinstance(event, FinalTranscript):
                    stability.forget(event.segment_id, event.channel)
                    yield streaming_final(
                        event, word_offsets=options.word_offsets, language_code=options.language_code
                    )
                elif isinstance(event, PartialTranscript):
                    yield streaming_partial(event, stability.of(event), language_code=options.language_code)
                elif isinstance(event, SpeechEnded) and single and not ended_single:
                    ended_single = True
                    reader.stop_feeding()
                    yield speech_event(Events.END_OF_SINGLE_UTTERANCE, event.t)
                    reader.end_soon()
                elif isinstance(event, (SpeechStarted, SpeechEnded)) and voice_events:
                    kind = (
                        Events.SPEECH_ACTIVITY_BEGIN
                        if isinstance(event, SpeechStarted)
                        else Events.SPEECH_ACTIVITY_END
                    )
                    yield speech_event(kind, event.t)
                elif isinstance(event, ErrorEvent):
                    if event.fatal or event.code in ENDS_THE_CALL:
                        await self._fail(context, HubError(event.code, event.message))
                    yield speech_v1.StreamingRecognizeResponse(
                        error=status_pb2.Status(
                            code=code_pb2.INTERNAL, message=f"{event.code}: {event.message}"
                        )
                    )
                elif isinstance(event, SessionClosed):
                    break
            if reader.failure is not None:
                await self._fail(context, reader.failure)
        finally:
            reading.cancel()
            queue.close()
            session.close("disconnected")  # no-op after a normal end

    # ------------------------------------------------------------------ Recognize

    async def _counted(self, handler: Callable[[Any, Any], Awaitable[T]], request: Any, context: Any) -> T:
        """A unary call, counted as live while it runs (the server's drain waits for it)."""
        self._on_call(1)
        try:
            return await handler(request, context)
        finally:
            self._on_call(-1)

    async def recognize(
        self, request: speech_v1.RecognizeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> speech_v1.RecognizeResponse:
        return await self._counted(self._recognize, request, context)

    async def _recognize(
        self, request: speech_v1.RecognizeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> speech_v1.RecognizeResponse:
        await _check_audio(request.audio, context)
        session, options = await self._open(context, request.config, interim=False)
        results: list[speech_v1.SpeechRecognitionResult] = []
        finals: list[FinalTranscript] = []
        failure: list[HubError] = []

        def take(event: Any) -> None:
            if isinstance(event, FinalTranscript):
                finals.append(event)
                results.append(
                    recognize_result(
                        event, word_offsets=options.word_offsets, language_code=options.language_code
                    )
                )
            elif (
                isinstance(event, ErrorEvent) and (event.fatal or event.code in ENDS_THE_CALL) and not failure
            ):
                failure.append(HubError(event.code, event.message))
                session.close("error")

        # Finals of a long file are collected as they come (no queue to overflow).
        watch = session.events.subscribe(on_next=take)
        try:
            reader = _Reader(session, self.hub.limits.max_frame_bytes)
            await reader.feed(request.audio.content)
            await session.end()
        finally:
            watch.dispose()
            session.close("disconnected")
        if failure:
            await self._fail(context, failure[0])
        if options.diarize:
            results.append(all_words_result(finals, language_code=options.language_code))
        return speech_v1.RecognizeResponse(results=results)

    # ------------------------------------------------------------------ LongRunningRecognize

    async def long_running_recognize(
        self, request: speech_v1.LongRunningRecognizeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> operations_pb2.Operation:
        return await self._counted(self._long_running, request, context)

    async def _long_running(
        self, request: speech_v1.LongRunningRecognizeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> operations_pb2.Operation:
        key = await self.identify(context)
        await _check_audio(request.audio, context)
        if request.output_config.gcs_uri:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "output_config is not supported: the result comes in the operation",
            )
        try:
            options = speech_options(self.hub, request.config, interim=False)
            self.hub.resolve_config(file_fields(options))  # a bad model or language: now, not later
        except HubError as exc:
            await self._fail(context, exc)
            raise  # not reached: abort raises
        if not self.hub.accepting:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the hub is shutting down")
        try:
            return self.operations.start(key, file_job(self.hub, request.audio.content, options, status_of))
        except OperationFailed as exc:
            await context.abort(exc.code, exc.message)
            raise  # not reached: abort raises


async def _check_audio(
    audio: speech_v1.RecognitionAudio, context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    if audio.uri:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, "audio.uri is not supported by this hub: send audio.content"
        )
    if not audio.content:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audio.content is empty")


class _Reader:
    """Feeds a call's audio into its session, one request at a time (backpressure)."""

    def __init__(self, session: Session, max_frame: int) -> None:
        self.session = session
        self.max_frame = max_frame
        self.failure: HubError | None = None
        self._feeding = True
        self._end: asyncio.Task[str] | None = None

    async def feed(self, audio: bytes) -> None:
        for i in range(0, len(audio), self.max_frame):  # big requests: frames within the limit
            if not self._feeding or self.session.state is not State.OPEN:
                return
            await self.session.feed(audio[i : i + self.max_frame])

    async def run(self, requests: AsyncIterator[speech_v1.StreamingRecognizeRequest]) -> None:
        try:
            async for request in requests:
                if "streaming_config" in request:
                    self._refuse(
                        HubError("bad_message", "streaming_config is only allowed in the first request")
                    )
                    return
                if request.audio_content:
                    await self.feed(request.audio_content)
        except HubError as exc:
            self._refuse(exc)
            return
        except Exception as exc:  # the call is gone (cancelled, reset): the handler closes the session
            log.debug("grpc stream stopped reading", error=repr(exc))
            return
        await self.session.end()  # half-close: flush the last utterance

    def stop_feeding(self) -> None:
        self._feeding = False

    def end_soon(self) -> None:
        """single_utterance: end the session now, whatever the client still sends."""
        if self._end is None:
            self._end = asyncio.ensure_future(self.session.end())

    def _refuse(self, error: HubError) -> None:
        self.failure = error
        self.session.close("error")
