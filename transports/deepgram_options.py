"""Deepgram's ``/v1/listen`` query parameters → a hub session config, and Deepgram's message
shapes (shared by the live WebSocket and the pre-recorded POST).

=====================  ==================================================================
Deepgram parameter     hub
=====================  ==================================================================
``model``              the hub's rule first (``whisper``, ``whisper:base``, ``base``: a
                       provider and/or one of its models); then a Deepgram model name
                       (``nova-3``, ``nova-2``, ``enhanced``, ``general``, …, and their
                       variants) → the hub's default; anything else → HTTP 400
``language``           ``language`` (``multi`` or absent: the engine's default / detection)
``encoding``           ``linear16`` → pcm_s16le; ``mulaw``/``alaw`` → PCM16 (G.711 table);
                       ``flac``, ``opus`` (Ogg), ``ogg-opus``, ``mp3``, ``webm`` → the
                       decoder; absent → containers auto-detected; others → HTTP 400
``sample_rate``        ``audio.sample_rate`` (raw encodings; default 16000, 8000 for G.711)
``channels``           ``audio.channels`` (mixed to mono unless ``multichannel``)
``multichannel``       each channel on its own (``multichannel`` in the session config; at
                       most ``limits.max_channels``): live ``Results`` carry
                       ``channel_index: [i, N]``, pre-recorded ``results.channels[i]``;
                       raw ``linear16``/G.711 or a WAV (a compressed stream → 400)
``interim_results``    partials on, sent as ``Results`` with ``is_final: false``
``endpointing``        ``false`` → VAD off (fixed windows); N ms → silence endpointing,
                       ``vad.silence_ms`` (50…10000), ``turn_detection.type = "silence"``;
                       absent → the hub's default turn detection (semantic where the
                       operator made it the default)
``utterance_end_ms``   ``UtteranceEnd`` after a gap that long after the last finalized word
                       (its own timer on stream time, as the hosted API); 0…60000
``vad_events``         ``SpeechStarted`` messages
``keyterm``,           the session's ``keyterms`` (a keyword's ``:boost`` is dropped);
``keywords``           ``Configure`` ``keyterms`` replace them mid-stream
``utterances``,        pre-recorded: ``results.utterances``, the words split at pauses of
``utt_split``          ``utt_split`` seconds (default 0.8)
``punctuate``          accepted (the engines punctuate on their own)
``smart_format``,      ``format.numerals``: spoken numbers, money, percentages, times as
``numerals``           digits (:mod:`asrhub.format.numerals`, languages stated there)
``profanity_filter``   ``format.profanity_filter``: ``f***``
``redact``             ``format.redact`` (repeated or comma-separated): ``pci`` /
                       ``credit_card``, ``ssn``, ``numbers`` / ``true`` /
                       ``aggressive_numbers``, ``email`` / ``email_address``, ``phone`` /
                       ``phone_number``; markers ``[CREDIT_CARD]``, ``[SSN]``, ``[NUMBER]``,
                       ``[EMAIL_ADDRESS]``, ``[PHONE_NUMBER]``; other classes (``pii``,
                       ``phi``, names…) → HTTP 400 (the hub cannot find them: it says so
                       rather than leave them in clear)
``paragraphs``         pre-recorded: ``alternatives[0].paragraphs`` (sentences, paragraphs
                       at pauses; :mod:`asrhub.transports.deepgram_paragraphs`)
=====================  ==================================================================

``diarize=true`` puts a ``speaker`` (0, 1, …) on every word and utterance (docs/diarization.md).
``trace=true`` (an extension, live sessions) records the session for ``asrhub replay``, as
``"trace": true`` does in the native config (docs/trace.md: it carries the audio).
Other Deepgram parameters (``tag``, …) are accepted and ignored.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from asrhub.config import FormatConfig, RedactClass
from asrhub.errors import HubError
from asrhub.frames import Word
from asrhub.hub import Hub

DEEPGRAM_MODELS = ("nova", "enhanced", "base", "whisper-", "general", "phonecall", "meeting")
RAW = {"linear16": None, "mulaw": "mulaw", "alaw": "alaw"}
CONTAINERS = {"flac": "flac", "opus": "opus", "ogg-opus": "opus", "mp3": "mp3", "webm": "webm"}
ARCH = "asrhub"
REDACT: dict[str, RedactClass | None] = {
    "pci": "pci",
    "credit_card": "pci",
    "ssn": "ssn",
    "numbers": "numbers",
    "true": "numbers",
    "aggressive_numbers": "numbers",
    "email": "email",
    "email_address": "email",
    "phone": "phone",
    "phone_number": "phone",
    "false": None,
}
"""Deepgram's ``redact`` values → the hub's classes (None: none)."""


@dataclass(frozen=True)
class ListenOptions:
    provider: str | None = None
    model: str | None = None
    """A model of the provider (the hub's rule: ``whisper:base``); None: its default."""
    model_name: str = "nova-3"
    language: str | None = None
    encoding: str | None = None
    """The hub encoding (None: auto-detect a container)."""
    g711: str | None = None
    sample_rate: int = 16_000
    channels: int = 1
    multichannel: bool = False
    interim_results: bool = False
    endpointing: int | None = None
    """VAD silence in ms; None: the hub's default."""
    vad: bool = True
    utterance_end_ms: int | None = None
    vad_events: bool = False
    utterances: bool = False
    utt_split: float = 0.8
    """Pre-recorded: seconds of pause between words that start a new utterance."""
    keyterms: tuple[str, ...] = ()
    format: FormatConfig = field(default_factory=FormatConfig)
    """``smart_format`` / ``numerals``, ``profanity_filter``, ``redact``."""
    paragraphs: bool = False
    diarize: bool = False
    """``diarize=true``: a ``speaker`` on every word (and utterance)."""
    trace: bool = False
    """``trace=true`` (extension): the session is recorded (docs/trace.md)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes_per_second(self) -> float | None:
        """PCM16 bytes per stream second after G.711 expansion (None: a container)."""
        if self.encoding != "pcm_s16le":
            return None
        return float(self.sample_rate * self.channels * 2)

    def session_config(self, *, partials: bool) -> dict[str, Any]:
        config: dict[str, Any] = {
            "audio": {
                "encoding": self.encoding or "auto",
                "sample_rate": self.sample_rate,
                "channels": self.channels,
            },
            "partials": partials,
            "language": self.language,
            "keyterms": list(self.keyterms),
            "vad": {"enabled": self.vad} | ({"silence_ms": self.endpointing} if self.endpointing else {}),
        }
        if self.endpointing:
            config["turn_detection"] = {"type": "silence"}
        if self.provider is not None:
            config["provider"] = self.provider
        if self.model is not None:
            config["model"] = self.model
        if self.format.active:
            config["format"] = msgspec.to_builtins(self.format)
        if self.diarize:
            config["diarize"] = True
        if self.multichannel:
            config["multichannel"] = True
        if self.trace:
            config["trace"] = True
        return config


def _bool(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise HubError("bad_message", f"{name}={value!r}: expected true or false")


def _int(query: Mapping[str, str], name: str, lo: int, hi: int) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise HubError("bad_message", f"{name}={value!r}: expected an integer") from None
    if not lo <= number <= hi:
        raise HubError("bad_message", f"{name}={number} is out of range ({lo}…{hi})")
    return number


def _float(query: Mapping[str, str], name: str, lo: float, hi: float) -> float | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise HubError("bad_message", f"{name}={value!r}: expected a number") from None
    if not lo <= number <= hi:
        raise HubError("bad_message", f"{name}={number} is out of range ({lo}…{hi})")
    return number


def resolve_model(hub: Hub, model: str | None) -> tuple[str | None, str | None]:
    """(provider, model of that provider) a Deepgram ``model`` names (None: the defaults):
    the hub's rule first (``whisper``, ``whisper:base``, ``base``), then Deepgram's own names
    mean the default."""
    if not model:
        return None, None
    try:
        return hub.resolve_model(model)
    except HubError:
        if model.lower().startswith(DEEPGRAM_MODELS):
            return None, None
        raise HubError(
            "unknown_provider",
            f"No such model {model!r} on this hub (Deepgram's model names mean the default)",
        ) from None


def redact_classes(values: Sequence[str]) -> tuple[RedactClass, ...]:
    """``redact`` values (repeated, or comma-separated) → the hub's classes; one the hub
    cannot find raises ``HubError``."""
    classes: list[RedactClass] = []
    for value in (v.strip().lower() for raw in values for v in raw.split(",") if v.strip()):
        if value not in REDACT:
            supported = ", ".join(k for k in REDACT if k not in ("true", "false"))
            raise HubError("bad_message", f"redact={value!r} is not supported by this hub; use {supported}")
        kind = REDACT[value]
        if kind is not None and kind not in classes:
            classes.append(kind)
    return tuple(classes)


def parse(hub: Hub, query: Mapping[str, str], terms: list[str], redact: Sequence[str] = ()) -> ListenOptions:
    """Deepgram query parameters → options; ``redact``: every ``redact`` value; raises
    ``HubError`` (answered with HTTP 400)."""
    model = query.get("model") or "nova-3"
    provider, hub_model = resolve_model(hub, model)
    encoding_name = (query.get("encoding") or "").lower() or None
    g711 = None
    if encoding_name is None:
        encoding = None
    elif encoding_name in RAW:
        encoding, g711 = "pcm_s16le", RAW[encoding_name]
    elif encoding_name in CONTAINERS:
        encoding = CONTAINERS[encoding_name]
    else:
        supported = ", ".join([*RAW, *CONTAINERS])
        raise HubError(
            "bad_audio", f"encoding {encoding_name!r} is not supported by this hub; use one of {supported}"
        )
    default_rate = 8000 if g711 else 16_000
    sample_rate = _int(query, "sample_rate", 4000, 384_000) or default_rate
    channels = _int(query, "channels", 1, 32) or 1
    endpointing: int | None = None
    vad = True
    raw_endpointing = (query.get("endpointing") or "").lower()
    if raw_endpointing in ("false", "0"):
        vad = False
    elif raw_endpointing not in ("", "true"):
        ms = _int(query, "endpointing", 0, 60_000)
        endpointing = min(max(ms or 0, 50), 10_000)
    language = query.get("language") or None
    if language in ("multi", "auto"):
        language = None
    cleaned = [t.split(":")[0].strip() if re.search(r":-?\d+(\.\d+)?$", t) else t.strip() for t in terms]
    keyterms = tuple(dict.fromkeys(t for t in cleaned if t))
    _bool(query, "punctuate")
    formatting = FormatConfig(
        numerals=_bool(query, "smart_format") or _bool(query, "numerals"),
        profanity_filter=_bool(query, "profanity_filter"),
        redact=redact_classes(redact),
    )
    return ListenOptions(
        provider=provider,
        model=hub_model,
        model_name=model,
        language=language,
        encoding=encoding,
        g711=g711,
        sample_rate=sample_rate,
        channels=channels,
        multichannel=_bool(query, "multichannel"),
        interim_results=_bool(query, "interim_results"),
        endpointing=endpointing,
        vad=vad,
        utterance_end_ms=_int(query, "utterance_end_ms", 0, 60_000),
        vad_events=_bool(query, "vad_events"),
        utterances=_bool(query, "utterances"),
        utt_split=_float(query, "utt_split", 0.0, 60.0) or 0.8,
        keyterms=keyterms,
        format=formatting,
        paragraphs=_bool(query, "paragraphs"),
        diarize=_bool(query, "diarize"),
        trace=_bool(query, "trace"),
    )


# --------------------------------------------------------------------------- message shapes


def model_uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"asrhub:{name}"))


def model_info(name: str) -> dict[str, str]:
    return {"name": name, "version": ARCH, "arch": ARCH}


_MARKER = re.compile(r"^\[[A-Z_]+\]")


def _plain(word: str) -> str:
    """Deepgram's ``word``: lower case, no punctuation — a redaction marker as it is."""
    if marker := _MARKER.match(word):
        return marker.group(0)
    plain = re.sub(r"[^\w'’-]+", "", word).lower()
    return plain or word.lower()


def words(
    items: tuple[Word, ...] | None, offset: float = 0.0, *, punctuated: bool = True
) -> list[dict[str, Any]]:
    out = []
    for w in items or ():
        item: dict[str, Any] = {
            "word": _plain(w.word),
            "start": round(w.start + offset, 3),
            "end": round(w.end + offset, 3),
            "confidence": round(w.probability, 4),
        }
        if punctuated:
            item["punctuated_word"] = w.word
        if w.speaker is not None:
            item["speaker"] = w.speaker
        if w.speaker_confidence is not None:
            item["speaker_confidence"] = round(w.speaker_confidence, 4)
        out.append(item)
    return out


def confidence(items: tuple[Word, ...] | None) -> float:
    """The transcript's confidence: the mean of its words' (0 when the engine gave none)."""
    if not items:
        return 0.0
    return round(sum(w.probability for w in items) / len(items), 4)


def error_body(error: HubError, request_id: str) -> dict[str, Any]:
    """Deepgram's REST error shape."""
    kind = {
        "unauthorized": "INVALID_AUTH",
        "too_large": "PAYLOAD_TOO_LARGE",
        "capacity": "TOO_MANY_REQUESTS",
        "quota_exceeded": "TOO_MANY_REQUESTS",
        "provider_failed": "INTERNAL_SERVER_ERROR",
    }.get(error.code, "Bad Request")
    return {"err_code": kind, "err_msg": error.message, "request_id": request_id, "asrhub_code": error.code}
