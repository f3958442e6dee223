"""Session configuration (what a client asks for) and hub limits (what the operator allows).

Both are msgspec Structs: parsing a client's ``session.start`` config validates every field and
fills defaults in one step, and the error names the offending path (``$.audio.sample_rate``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Encoding = Literal["pcm_s16le", "pcm_f32le", "wav", "opus", "ogg", "webm", "mp3", "flac", "auto"]
"""``auto`` (an extension) lets the decoder probe a container; the contract's names are kept."""


class AudioFormat(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    encoding: Encoding = "pcm_s16le"
    sample_rate: Annotated[int, Meta(ge=4000, le=384_000)] = 16_000
    channels: Annotated[int, Meta(ge=1, le=32)] = 1


VadEngine = Literal["webrtc", "silero"]


class VadConfig(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool = True
    engine: VadEngine | None = None
    """How a frame is judged speech: ``webrtc`` (webrtcvad, cheap) or ``silero`` (Silero VAD v5,
    a neural model that stays shut on noise webrtcvad takes for speech, at ~10× the CPU, most of
    it off the event loop); None: the hub's default (``vad.engine`` in the settings)."""
    aggressiveness: Annotated[int, Meta(ge=0, le=3)] = 2
    """webrtc: 0 (keeps the most speech) … 3 (drops the most noise)."""
    threshold: Annotated[float, Meta(ge=0.05, le=0.95)] = 0.5
    """silero: the speech probability that opens speech (it goes on down to threshold − 0.15)."""
    silence_ms: Annotated[int, Meta(ge=50, le=10_000)] = 500
    """Hangover: how long speech must be absent before ``vad.speech_ended``."""
    start_ms: Annotated[int, Meta(ge=10, le=2_000)] = 90
    """How much voiced audio (within a short window) opens an utterance."""
    preroll_ms: Annotated[int, Meta(ge=0, le=2_000)] = 300
    """Audio kept from before the start so the first syllable is not cut."""


class WakewordConfig(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool = False
    names: tuple[str, ...] = ("hey_jarvis",)
    threshold: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.5
    timeout_s: Annotated[float, Meta(gt=0.0, le=120.0)] = 8.0
    """After a detection, how long the gate stays open waiting for the utterance to end."""


RedactClass = Literal["pci", "ssn", "numbers", "email", "phone"]
"""What ``format.redact`` can hide: card numbers (Luhn-checked), US social security numbers,
any run of three or more digits, e-mail addresses, phone numbers (docs/protocol.md)."""


class FormatConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Extension ``format``: how finals (and partials) are rewritten before a client sees them
    (:mod:`asrhub.format`). Word times are kept: a rewritten token spans the words it replaced."""

    numerals: bool = False
    """Spoken numbers, times, money and percentages as digits (languages text2num covers)."""
    profanity_filter: bool = False
    """Profane words masked: the first letter kept, the rest asterisks (``f***``)."""
    redact: Annotated[tuple[RedactClass, ...], Meta(max_length=5)] = ()
    """Classes replaced by a marker (``[CREDIT_CARD]``, ``[SSN]``, ``[NUMBER]``,
    ``[EMAIL_ADDRESS]``, ``[PHONE_NUMBER]``)."""
    punctuate: bool = True
    """False: punctuation removed from the engine's text (Google's default without
    ``enableAutomaticPunctuation``); True: the engine's punctuation as it is."""

    @property
    def active(self) -> bool:
        return self.numerals or self.profanity_filter or bool(self.redact) or not self.punctuate


Eagerness = Literal["low", "medium", "high", "auto"]

TURN_TIMING: dict[str, tuple[int, int]] = {
    "high": (100, 1000),
    "medium": (200, 2000),
    "auto": (200, 2000),
    "low": (400, 4000),
}
"""Semantic turn detection, per eagerness: (the short silence after which the turn model is
asked, ms; the longest silence an unfinished turn is waited for, ms). Both are counted in
unvoiced VAD frames, so webrtcvad's own hangover (80–160 ms) comes on top."""


class TurnDetection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How an utterance ends (``turn_detection`` of a session's config).

    ``silence``: after ``vad.silence_ms`` of silence. ``semantic``: at each short silence the
    smart-turn model reads the last 8 s of the utterance; a complete turn ends there, an
    unfinished one is waited for up to a longer silence (:data:`TURN_TIMING` by ``eagerness``)."""

    type: Literal["silence", "semantic"] = "silence"
    eagerness: Eagerness = "auto"
    """``semantic`` only: ``high`` ends sooner, ``low`` waits longer; ``auto`` is ``medium``."""

    @property
    def semantic(self) -> bool:
        return self.type == "semantic"

    @property
    def timing_ms(self) -> tuple[int, int]:
        """(short silence, maximum silence) of a semantic turn, in ms."""
        return TURN_TIMING[self.eagerness]


Task = Literal["transcribe", "translate"]

MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 100
MAX_PROMPT_CHARS = 4096
"""A prompt is a hint of a few sentences (Whisper reads its last 224 tokens, about 900 characters);
longer is refused, not tokenized on every decode."""
MAX_PROVIDERS = 8
"""Providers in one failover list."""
MAX_NAME_CHARS = 128
"""A provider or model name."""

Keyterm = Annotated[str, Meta(min_length=1, max_length=MAX_KEYTERM_CHARS)]
LanguageCode = Annotated[str, Meta(min_length=2, max_length=16)]
Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_CHARS)]


def base_language(code: str) -> str:
    """``de-DE`` / ``pt_BR`` → ``de`` / ``pt``: engines know languages, not regions (the one
    rule every engine and the hub's checks normalise a language code with)."""
    return code.split("-")[0].split("_")[0].lower()


MAX_SPEAKERS = 8
"""Speakers a diarized file or session is split into at most (unless the request asks for
fewer or more, up to 32)."""


class SessionConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The ``config`` object of ``session.start`` (every field optional)."""

    provider: Name | Annotated[tuple[Name, ...], Meta(min_length=1, max_length=MAX_PROVIDERS)] | None = None
    """One provider name, or an ordered failover list (at most ``MAX_PROVIDERS``). ``None``: the
    hub's default."""
    model: Name | None = None
    """Extension: one of the provider's models (``/v1/models`` lists them); None: its default."""
    language: LanguageCode | Annotated[tuple[LanguageCode, ...], Meta(min_length=1, max_length=32)] | None = (
        None
    )
    """A language code, or (extension) a list of codes to restrict language identification to;
    None: the provider's default (multilingual models detect it per utterance)."""
    task: Task = "transcribe"
    """Extension: ``translate`` gives English text from speech in another language."""
    keyterms: Annotated[tuple[Keyterm, ...], Meta(max_length=MAX_KEYTERMS)] = ()
    """Extension: names and jargon to bias recognition toward (engines that accept hints)."""
    audio: AudioFormat = AudioFormat()
    vad: VadConfig = VadConfig()
    wakeword: WakewordConfig = WakewordConfig()
    turn_detection: TurnDetection | None = None
    """How an utterance ends (VAD on): by silence or by the semantic turn model; None: the
    hub's default (``limits.turn_detection``, ``limits.turn_eagerness``)."""
    partials: bool = True
    prompt: Annotated[str, Meta(max_length=MAX_PROMPT_CHARS)] | None = None
    """Extension: initial prompt / vocabulary hint passed to engines that take one (at most
    ``MAX_PROMPT_CHARS`` characters)."""
    word_timestamps: bool = True
    format: FormatConfig = FormatConfig()
    """Extension: numerals, profanity filter, redaction (:class:`FormatConfig`)."""
    diarize: bool = False
    """Extension (issue 26): a ``speaker`` on every final and word, labels stable for the
    session (and across a resume)."""
    max_speakers: Annotated[int, Meta(ge=1, le=32)] = MAX_SPEAKERS
    """With ``diarize``: at most this many speakers (past it an utterance joins the nearest)."""
    multichannel: bool = False
    """Extension: each channel of ``audio.channels`` > 1 (or of a WAV's) is transcribed on its
    own, its events carrying ``channel`` (0-based); False: the channels are mixed to mono."""
    trace: bool = False
    """Extension: record this session for ``asrhub replay`` — its audio, config, engine outputs
    and events (docs/trace.md). Needs a hub with ``trace.dir`` or ``trace.redis`` set."""

    @property
    def providers(self) -> tuple[str, ...]:
        if self.provider is None:
            return ()
        return (self.provider,) if isinstance(self.provider, str) else self.provider

    @property
    def fixed_language(self) -> str | None:
        """The one language the session names (None: detect, possibly among :attr:`languages`)."""
        return self.language if isinstance(self.language, str) else None

    @property
    def languages(self) -> tuple[str, ...]:
        """Every language the session names (empty: any)."""
        if self.language is None:
            return ()
        return (self.language,) if isinstance(self.language, str) else self.language

    def decode_options(self) -> dict[str, Any]:
        """The keywords a provider's ``transcribe`` gets for this session's utterances."""
        options: dict[str, Any] = {"language": self.fixed_language, "prompt": self.prompt}
        if self.model is not None:
            options["model"] = self.model
        if self.task != "transcribe":
            options["task"] = self.task
        if self.keyterms:
            options["keyterms"] = self.keyterms
        if isinstance(self.language, tuple):
            options["languages"] = self.language
        return options

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result


class KeyLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One API key's own limits (``[limits.per_key."key-0123456789ab"]``), in place of the
    hub-wide defaults; a field left out keeps the default."""

    audio_seconds_per_day: Annotated[float, Meta(ge=0.0)] | None = None
    """This key's ``key_audio_seconds_per_day`` (0: unlimited)."""
    max_sessions: Annotated[int, Meta(ge=1)] | None = None
    """This key's ``max_sessions_per_key``."""


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Every bound the hub enforces, with its default. Each has a documented consequence."""

    max_sessions: Annotated[int, Meta(ge=1)] = 4000
    """Open sessions at once; one more is refused with ``capacity``."""
    max_sessions_per_key: Annotated[int, Meta(ge=1)] = 1000
    """Open sessions per API key; one more is refused with ``capacity``."""
    key_audio_seconds_per_day: Annotated[float, Meta(ge=0.0)] = 0.0
    """Seconds of audio one API key may have transcribed per UTC day, every protocol and every
    node of a cluster together (decoded stream time; docs/security.md, "Usage and quotas"). At
    the quota a new session or upload is refused with ``quota_exceeded`` (HTTP 429, gRPC
    ``RESOURCE_EXHAUSTED``); a running session that reaches it decodes no more audio, delivers
    the final of its utterance in flight, then ends with ``quota_exceeded``. 0: unlimited. A
    hub without API keys counts its usage (as ``anonymous``) but caps nothing."""
    per_key: dict[str, KeyLimits] = {}
    """Limits of single keys, by the key's fingerprint (``key-`` and 12 hex digits, as
    ``GET /v1/usage``, the logs and the metrics name it; never the key itself):
    ``[limits.per_key."key-0123456789ab"] audio_seconds_per_day = 3600``, ``max_sessions = 10``."""
    max_frame_bytes: Annotated[int, Meta(ge=1024)] = 1 << 20
    """One audio frame; larger is refused with ``too_large`` (the session survives)."""
    max_pending_segments: Annotated[int, Meta(ge=1)] = 3
    """Utterances of one session waiting for their final; ``feed`` waits while at the bound."""
    max_utterance_s: Annotated[float, Meta(gt=1.0, le=600.0)] = 30.0
    """An utterance longer than this is force-split, at its quietest 20 ms in the last 3 s."""
    min_utterance_s: Annotated[float, Meta(ge=0.0, le=5.0)] = 0.25
    """Shorter utterances (clicks, blips) are dropped without a transcript."""
    fixed_window_s: Annotated[float, Meta(gt=1.0, le=600.0)] = 10.0
    """With VAD off, batch engines get windows of at most this length, each cut at its quietest
    20 ms in the last 3 s."""
    partial_interval_s: Annotated[float, Meta(gt=0.05)] = 0.25
    """The least new audio (stream seconds) between two partial decodes of a growing utterance:
    a snapshot of the utterance is cut every this many seconds (when sound arrived since the
    last one: none in a pause or the VAD's hangover), and the next partial decode
    starts as soon as the previous one has ended, on the newest snapshot (the ones in between
    are skipped). Partials are decoded only on the engine's partial lane and never while a
    final waits, so finals keep their latency."""
    stable_partials: bool = True
    """Partials of batch engines carry ``stable``: the words two consecutive decodes of the
    utterance agreed on, kept verbatim in every later partial (LocalAgreement). False: each
    partial is the decode's own text, free to rewrite any word."""
    idle_timeout_s: Annotated[float, Meta(gt=0.0)] = 60.0
    """A session that receives nothing for this long is closed with ``timeout``. Time a client
    spends waiting in ``feed`` (backpressure from a busy engine) does not count."""
    start_timeout_s: Annotated[float, Meta(gt=0.0)] = 10.0
    """From connecting to the message that opens a session (``session.start``, the first
    Realtime append, gRPC's first request, Wyoming's first event, an HTTP request's head, a
    Socket.io connect and start): a connection that says nothing useful for this long is
    closed with ``timeout``. While a connection has no session open (between Realtime or
    Deepgram sessions, Wyoming requests), ``idle_timeout_s`` bounds its silence the same way."""
    end_timeout_s: Annotated[float, Meta(gt=0.0)] = 300.0
    """After ``session.end``, how long the outstanding finals may take; then the session is
    closed with a fatal ``timeout`` error, so a stuck engine cannot hold a session slot forever."""
    subscriber_queue: Annotated[int, Meta(ge=4)] = 256
    """Events queued for one slow subscriber; past it partials are shed, then ``slow_consumer``."""
    resume_window_s: Annotated[float, Meta(ge=0.0)] = 30.0
    """How long a dropped session waits for its client to resume it."""
    provider_timeout_s: Annotated[float, Meta(gt=0.0)] = 60.0
    """One transcription call longer than this fails with ``provider_failed`` (or fails over)."""
    max_decoder_threads: Annotated[int, Meta(ge=1)] = 64
    """Compressed-audio sessions (opus, webm, mp3, …) decoding at once, one thread each; one more
    waits for a free decoder with its ``feed`` held (its client's TCP stream backs up)."""
    decoder_wait_s: Annotated[float, Meta(gt=0.0)] = 10.0
    """How long a compressed-audio session waits for a decoder thread; then it is closed with a
    fatal ``capacity`` error (a session closed while it waits leaves the line at once)."""
    decoder_key_share: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.5
    """The share of ``max_decoder_threads`` one API key may hold: at most
    max(1, floor(share × max_decoder_threads)) threads (32 of 64 by default); its next session
    waits even when threads are free, while other keys' sessions get them. Sessions without a
    key (a hub without API keys) have no share of their own."""
    decoder_stall_s: Annotated[float, Meta(gt=0.0)] = 60.0
    """A decoder thread that produces no audio for this long — bytes trickling in that never make
    a packet, or none at all — is stopped and its session closed with a fatal ``timeout``, so
    its thread goes to another session (like ``idle_timeout_s``, measured on decoded audio)."""
    max_input_rate: Annotated[int, Meta(ge=8000, le=768_000)] = 48_000
    """Highest sample rate a compressed stream or file may declare (decoding cost grows with
    it; no speech model needs more); higher is ``bad_audio``. PCM (raw or WAV) is not limited:
    it costs what its bytes cost."""
    max_channels: Annotated[int, Meta(ge=1, le=32)] = 8
    """Audio channels a ``multichannel`` session or file may have, each transcribed by its own
    pipeline (decoder, VAD, engine stream: CPU and memory grow with each); more is refused with
    ``bad_message`` (declared) or ``bad_audio`` (a WAV header that says so)."""
    max_upload_s: Annotated[float, Meta(gt=0.0)] = 3600.0
    """Longest uploaded file (batch endpoints), ``too_large`` past it: checked against the
    duration the container declares before decoding, and on the decoded 16 kHz samples as they
    are produced. Memory per upload: its bytes plus 64 KB per second of audio (230 MB for 1 h)."""
    max_uploads: Annotated[int, Meta(ge=1)] = 4
    """Uploads (``/v1/transcribe``, OpenAI transcriptions/translations, Deepgram pre-recorded,
    gRPC LongRunningRecognize) decoded and transcribed at once; more wait in line."""
    upload_wait_s: Annotated[float, Meta(ge=0.0)] = 30.0
    """How long an upload waits for its turn; then it is refused with ``capacity`` (HTTP 503, or
    the protocol's own shape)."""
    early_final_ms: Annotated[int, Meta(ge=0, le=10_000)] = 0
    """Early finals (batch engines, VAD on): after this much silence inside an utterance the
    final decode starts speculatively on the audio so far; if speech resumes before the VAD's
    hangover (``vad.silence_ms``) ends, that decode is dropped. A final then costs about
    max(hangover, inference) instead of their sum, at the price of decodes wasted on pauses
    (docs/benchmarks.md). 0 (the default): off; 200 is a good value; a value ≥ the hangover has
    no effect."""
    turn_detection: Literal["silence", "semantic"] = "silence"
    """How the utterances of sessions whose config names no ``turn_detection`` end: after
    ``vad.silence_ms`` of silence, or ``semantic``: when the smart-turn model (with the early
    final's text) says the sentence is done — after 200 ms of silence at eagerness ``auto`` —,
    waiting up to 2 s through a pause inside one (needs ``semantic_turns``)."""
    turn_eagerness: Eagerness = "auto"
    """The eagerness of that default when it is ``semantic``: ``high`` 100 / 1000 ms, ``medium``
    and ``auto`` 200 / 2000 ms, ``low`` 400 / 4000 ms (short silence / longest wait)."""

    semantic_turns: bool = True
    """Sessions may ask for ``turn_detection.type = "semantic"``: the smart-turn model (8.7 MB,
    ONNX) is loaded at start-up when ``turn_detection`` is ``semantic`` (a missing model file is
    then a start-up error), else off the loop for the first session that asks (a missing model
    refuses that session with the set-up hint; a hub whose sessions never ask holds no ONNX
    runtime). False: such a session is refused with ``bad_message``."""
    breaker_failures: Annotated[int, Meta(ge=1)] = 5
    """Failed calls in a row (from any session) that open a provider's circuit: it is skipped
    (failover, or ``provider_failed`` at once) and probed in the background until it answers."""
    breaker_window_s: Annotated[float, Meta(gt=0.0)] = 30.0
    """After a failure, a provider is tried after the healthy ones of a failover list for this
    long (so a dead endpoint costs one timeout per window, not one per session); an open circuit
    is probed once per window."""

    def __post_init__(self) -> None:
        if self.turn_detection == "semantic" and not self.semantic_turns:
            raise ValueError("limits.turn_detection = 'semantic' needs limits.semantic_turns = true")
        for name in self.per_key:
            if not is_fingerprint(name):  # never echo it: it may be a key written by mistake
                raise ValueError(
                    "limits.per_key: an entry is not a key fingerprint (key- and 12 hex digits); "
                    "name a key by its fingerprint (GET /v1/usage shows it), never by the key"
                )

    @property
    def default_turn(self) -> TurnDetection:
        return TurnDetection(type=self.turn_detection, eagerness=self.turn_eagerness)


def is_fingerprint(name: str) -> bool:
    """``key-`` and 12 lower-case hex digits: the form of :func:`asrhub.door.keys.fingerprint`."""
    return len(name) == 16 and name.startswith("key-") and all(c in "0123456789abcdef" for c in name[4:])


UPDATABLE = frozenset(
    {
        "model",
        "language",
        "task",
        "keyterms",
        "prompt",
        "partials",
        "word_timestamps",
        "vad",
        "format",
        "turn_detection",
    }
)
"""Top-level fields ``session.update`` may change (``vad``: all but ``vad.enabled``;
``vad`` and ``turn_detection`` hold from the next utterance)."""


def updated_config(current: SessionConfig, patch: Any) -> SessionConfig:
    """``current`` with a ``session.update`` patch applied (nested objects merged field by field).

    Raises :class:`ValueError` naming every field that cannot change mid-stream, and
    :class:`msgspec.ValidationError` (with the path) for an invalid value."""
    if not isinstance(patch, dict):
        raise ValueError(f'"config" must be an object, not {type(patch).__name__}')
    merged = current.to_dict()
    fixed = sorted(
        [k for k in patch if k not in UPDATABLE and patch[k] != merged.get(k)]
        + [
            f"vad.{k}"
            for k in ("enabled",)
            if isinstance(patch.get("vad"), dict)
            and k in patch["vad"]
            and patch["vad"][k] != merged["vad"][k]
        ]
    )
    if fixed:
        raise ValueError(f"cannot change mid-stream: {', '.join(fixed)} (open a new session for that)")
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return parse_session_config(merged)


def parse_session_config(data: Any) -> SessionConfig:
    """Validate a client's config object. Raises :class:`msgspec.ValidationError` with the path."""
    if data is None:
        return SessionConfig()
    return msgspec.convert(data, SessionConfig, strict=True)
