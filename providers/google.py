"""``google`` — Google Cloud Speech-to-Text v1 through the official ``google-cloud-speech`` client.

* Live sessions (``streaming = true``, the default): one ``StreamingRecognize`` call per
  utterance, opened when the hub's VAD hears speech and half-closed when it stops; interim
  results → ``transcript.partial``, the ``is_final`` results joined → ``transcript.final`` with
  word times (see :mod:`asrhub.engine.stream_stage`).
* Segments and files (``streaming = false``, ``transcribe``, failover): ``Recognize`` on the
  whole audio, in pieces of at most 55 s (the synchronous call's limit is one minute).

Credentials come from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS`` or
``gcloud auth application-default login``) or ``credentials_file``; without any, the hub refuses
to start and says how to set them. ``insecure = true`` talks plaintext gRPC without credentials to
``endpoint`` (an emulator or the test server). Every call is made with ``retry=None`` and an
explicit deadline, so a failing service fails the utterance (``provider_failed``, or failover)
instead of retrying behind a session's back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from asrhub.config import SessionConfig
from asrhub.engine.provider_settings import check_from, read_settings
from asrhub.engine.registry import ProviderSpec
from asrhub.engine.stream_stage import stream_stage
from asrhub.frames import Samples, Word
from asrhub.pcm import float_to_pcm16
from asrhub.plugin import (
    Capabilities,
    Operator,
    Priority,
    Provider,
    ProviderError,
    ProviderUnavailable,
    SessionContext,
    TimedText,
    Transcription,
    hint_prompt,
)

RATE = 16_000
CHUNK_BYTES = 6400  # 200 ms of PCM16 per streaming request (Google's limit is 25 KB)
RECOGNIZE_MAX_S = 55.0
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
NO_CREDENTIALS = (
    "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service-account key "
    "file (export GOOGLE_APPLICATION_CREDENTIALS=/path/to/key.json), run "
    "`gcloud auth application-default login`, or set credentials_file in [providers.google]"
)


class GoogleSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    endpoint: str | None = None
    """``host:port`` of the API (default: speech.googleapis.com); passed as ``api_endpoint``."""
    insecure: bool = False
    """Plaintext gRPC, no credentials: only for an emulator or test server on a trusted host."""
    credentials_file: str | None = None
    """A service-account key file; default: Application Default Credentials."""
    language_code: str = "en-US"
    """BCP-47 code; a session's ``language`` overrides it."""
    model: str | None = None
    """``latest_long``, ``latest_short``, ``phone_call``, ``command_and_search``, ``default``…"""
    phrases: tuple[str, ...] = ()
    """Phrase hints (``speech_contexts``); a session's ``prompt`` words are added to them."""
    boost: Annotated[float, Meta(ge=0, le=20)] | None = None
    punctuation: bool = True
    streaming: bool = True
    timeout: Annotated[float, Meta(gt=0)] = 30.0
    """Deadline of one Recognize call, and the wait for a stream's final after its audio ended."""


def parse_settings(options: dict[str, Any]) -> GoogleSettings:
    settings = read_settings("google", options, GoogleSettings, strict=False)
    if settings.insecure and not settings.endpoint:
        raise ProviderUnavailable("google: insecure = true needs an endpoint (host:port)")
    return settings


def load_credentials(settings: GoogleSettings) -> Any:
    """The credentials the client will use; :class:`ProviderUnavailable` when there are none."""
    import google.auth
    from google.auth import credentials as ga_credentials
    from google.auth import exceptions as ga_exceptions

    if settings.insecure:
        return ga_credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
    if settings.credentials_file:
        from google.oauth2 import service_account

        try:
            return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                settings.credentials_file, scopes=SCOPES
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ProviderUnavailable(
                f"google: cannot load the service-account key {settings.credentials_file}: {exc}"
            ) from None
    try:
        credentials, _project = google.auth.default(scopes=SCOPES)
    except ga_exceptions.DefaultCredentialsError:
        raise ProviderUnavailable(f"google: {NO_CREDENTIALS}") from None
    return credentials


class GoogleProvider:
    name = "google"

    def __init__(self, settings: GoogleSettings) -> None:
        self.settings = settings
        self.capabilities = Capabilities(
            streaming=settings.streaming, partials=settings.streaming, word_timestamps=True, keyterms=True
        )
        self._client: Any = None
        self._transport: Any = None

    async def start(self) -> None:
        if self._client is not None:
            return
        from google.cloud import speech_v1

        s = self.settings
        credentials = load_credentials(s)
        if s.insecure:
            import grpc
            from google.cloud.speech_v1.services.speech.transports import SpeechGrpcAsyncIOTransport

            assert s.endpoint is not None
            channel = grpc.aio.insecure_channel(s.endpoint)
            self._transport = SpeechGrpcAsyncIOTransport(host=s.endpoint, channel=channel)
            self._client = speech_v1.SpeechAsyncClient(transport=self._transport)
        else:
            from google.api_core.client_options import ClientOptions

            options = ClientOptions(api_endpoint=s.endpoint) if s.endpoint else None
            self._client = speech_v1.SpeechAsyncClient(credentials=credentials, client_options=options)
            self._transport = self._client.transport

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
        self._client = self._transport = None

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "name": self.name,
            "endpoint": s.endpoint or "speech.googleapis.com",
            "model": s.model or "default",
            "language_code": s.language_code,
            "streaming": s.streaming,
            "partials": self.capabilities.partials,
            "word_timestamps": True,
            "languages": None,
        }

    # ------------------------------------------------------------------ requests

    def recognition_config(self, language: str | None, prompt: str | None) -> Any:
        from google.cloud import speech_v1

        s = self.settings
        phrases = list(s.phrases) + ([w for w in prompt.replace(",", " ").split() if w] if prompt else [])
        contexts = []
        if phrases:
            context = speech_v1.SpeechContext(phrases=phrases)
            if s.boost is not None:
                context.boost = s.boost
            contexts.append(context)
        config = speech_v1.RecognitionConfig(
            encoding=speech_v1.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=RATE,
            audio_channel_count=1,
            language_code=language or s.language_code,
            speech_contexts=contexts,
            enable_word_time_offsets=True,
            enable_word_confidence=True,
            enable_automatic_punctuation=s.punctuation,
        )
        if s.model:
            config.model = s.model
        return config

    async def transcribe(
        self,
        samples: Samples,
        *,
        language: str | None = None,
        prompt: str | None = None,
        priority: Priority = Priority.FINAL,
        **options: Any,
    ) -> Transcription:
        """``Recognize`` on pieces of at most 55 s; times stay relative to the audio's start."""
        from google.cloud import speech_v1

        await self.start()
        config = self.recognition_config(language, hint_prompt(prompt, options.get("keyterms")))
        step = int(RECOGNIZE_MAX_S * RATE)
        texts: list[str] = []
        words: list[Word] = []
        segments: list[TimedText] = []
        detected: str | None = None
        for offset in range(0, max(len(samples), 1), step):
            piece = samples[offset : offset + step]
            audio = speech_v1.RecognitionAudio(content=_pcm16(piece))
            response = await self._call(
                self._client.recognize(config=config, audio=audio, retry=None, timeout=self.settings.timeout)
            )
            base = offset / RATE
            for result in response.results:
                if not result.alternatives:
                    continue
                best = result.alternatives[0]
                text = best.transcript.strip()
                if not text:
                    continue
                texts.append(text)
                piece_words = _words(best, base)
                words.extend(piece_words)
                end = base + result.result_end_time.total_seconds() if result.result_end_time else base
                start = piece_words[0].start if piece_words else base
                segments.append(TimedText(text, start, max(end, start)))
                detected = detected or (result.language_code or None)
        return Transcription(
            text=" ".join(texts),
            language=detected or language,
            words=tuple(words) or None,
            segments=tuple(segments),
            duration=len(samples) / RATE,
        )

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        if not self.settings.streaming:
            from asrhub.engine.batch_stage import batch_stage

            return batch_stage(self, ctx, fallbacks)
        stream_deadline = ctx.limits.max_utterance_s + self.settings.timeout * 2

        async def recognize(
            audio: AsyncIterator[Samples], on_partial: Callable[[str], None] | None, config: SessionConfig
        ) -> Transcription:
            return await self.stream(
                audio,
                on_partial,
                language=config.fixed_language,
                prompt=hint_prompt(config.prompt, config.keyterms),
                deadline=stream_deadline,
            )

        return stream_stage(
            self,
            recognize,
            ctx,
            fallbacks,
            final_timeout_s=self.settings.timeout,
        )

    async def stream(
        self,
        audio: AsyncIterator[Samples],
        on_partial: Callable[[str], None] | None,
        *,
        language: str | None,
        prompt: str | None,
        deadline: float,
    ) -> Transcription:
        """One ``StreamingRecognize`` call for one utterance."""
        from google.cloud import speech_v1

        await self.start()
        streaming_config = speech_v1.StreamingRecognitionConfig(
            config=self.recognition_config(language, prompt),
            interim_results=on_partial is not None,  # no interim traffic when the session wants no partials
            single_utterance=False,
        )

        async def requests() -> AsyncIterator[Any]:
            yield speech_v1.StreamingRecognizeRequest(streaming_config=streaming_config)
            pending = b""
            async for samples in audio:
                pending += _pcm16(samples)
                while len(pending) >= CHUNK_BYTES:
                    yield speech_v1.StreamingRecognizeRequest(audio_content=pending[:CHUNK_BYTES])
                    pending = pending[CHUNK_BYTES:]
            if pending:
                yield speech_v1.StreamingRecognizeRequest(audio_content=pending)

        finals: list[str] = []
        words: list[Word] = []
        detected: str | None = None

        async def consume() -> None:
            nonlocal detected
            responses = await self._client.streaming_recognize(
                requests=requests(), retry=None, timeout=deadline
            )
            async for response in responses:
                if response.error and response.error.code:
                    raise ProviderError(f"google: {response.error.message or 'stream error'}")
                interim: list[str] = []
                for result in response.results:
                    if not result.alternatives:
                        continue
                    best = result.alternatives[0]
                    if result.is_final:
                        finals.append(best.transcript.strip())
                        words.extend(_words(best, 0.0))
                        detected = detected or (result.language_code or None)
                    else:
                        interim.append(best.transcript.strip())
                if on_partial is not None:
                    on_partial(" ".join(t for t in (*finals, *interim) if t))

        await self._call(consume())
        return Transcription(
            text=" ".join(t for t in finals if t), language=detected or language, words=tuple(words) or None
        )

    async def _call(self, awaitable: Any) -> Any:
        """Await one API call; every API failure becomes :class:`ProviderError` with its message."""
        from google.api_core import exceptions as gexc

        try:
            return await awaitable
        except gexc.GoogleAPICallError as exc:
            status = getattr(exc, "grpc_status_code", None)
            code = getattr(status, "name", None) or type(exc).__name__
            raise ProviderError(f"google: {code}: {exc.message}") from exc
        except gexc.RetryError as exc:
            raise ProviderError(f"google: {exc.message}") from exc
        except TimeoutError as exc:
            raise ProviderError(f"google: no answer within {self.settings.timeout:g} s") from exc


def _pcm16(samples: Samples) -> bytes:
    return float_to_pcm16(samples)


def _words(alternative: Any, base: float) -> list[Word]:
    out = []
    for info in alternative.words:
        start = info.start_time.total_seconds() if info.start_time else 0.0
        end = info.end_time.total_seconds() if info.end_time else start
        confidence = float(info.confidence or alternative.confidence or 0.0)
        out.append(Word(info.word, round(base + start, 3), round(base + end, 3), confidence))
    return out


# ---------------------------------------------------------------------- registration


def _probe(options: dict[str, Any]) -> None:
    try:
        import google.cloud.speech_v1  # noqa: F401
    except ImportError as exc:
        raise ProviderUnavailable(
            f"google-cloud-speech is not installed ({exc}); install it with: pip install 'asrhub[google]'"
        ) from None
    load_credentials(parse_settings(options))


def _factory(options: dict[str, Any]) -> Provider:
    return GoogleProvider(parse_settings(options))


DEFAULT_ENDPOINT = "speech.googleapis.com:443"


async def reach(options: dict[str, Any], timeout_s: float) -> str | None:
    """Whether the API answers now (``asrhub providers``): a gRPC channel to the endpoint (TLS
    unless ``insecure``) ready within ``timeout_s``. The credentials are ``check``'s."""
    import grpc

    settings = parse_settings(options)
    target = settings.endpoint or DEFAULT_ENDPOINT
    if ":" not in target:
        target += ":443"
    if settings.insecure:
        channel = grpc.aio.insecure_channel(target)
    else:
        channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials())
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout_s)
    except TimeoutError:
        return f"no connection to {target} within {timeout_s:g} s"
    finally:
        await channel.close()
    return None


spec = ProviderSpec(
    name="google",
    description="Google Cloud Speech-to-Text v1 (streaming_recognize / recognize)",
    factory=_factory,
    check=check_from(_probe),
    extra="google",
    reach=reach,
)
