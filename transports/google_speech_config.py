"""Google Cloud Speech v1 ``RecognitionConfig`` → the hub's session config.

========================  =====================================================================
Google                    hub
========================  =====================================================================
``model``                 ``provider`` / ``model`` by the hub's rule (:meth:`Hub.resolve_model`:
                          ``whisper``, ``whisper:base``, ``base``); ``""``, ``default`` and
                          Google's own generic model names (``latest_long``, ``latest_short``,
                          ``command_and_search``, ``phone_call``, ``video``) mean the hub's
                          default; anything else is ``INVALID_ARGUMENT`` naming what exists.
                          No model named: the provider's model for the language
                          (:mod:`~asrhub.transports.model_choice`)
``language_code``         ``language``: the primary subtag (``en-US`` → ``en``); the hub refuses
                          a language the engine's model does not know
``encoding``              ``audio.encoding``: LINEAR16 → ``pcm_s16le`` (``wav`` when no
                          ``sample_rate_hertz`` is given: a WAV header then says it), FLAC →
                          ``flac``, OGG_OPUS → ``ogg``, WEBM_OPUS → ``webm``, MP3 → ``mp3``,
                          unspecified → ``auto`` (the decoder probes a container); MULAW, AMR,
                          AMR_WB, SPEEX → ``INVALID_ARGUMENT``
``sample_rate_hertz``     ``audio.sample_rate`` (raw PCM; containers carry their own)
``audio_channel_count``   ``audio.channels`` (mixed down to mono, unless:)
``enable_separate_recognition_per_channel``  with ``audio_channel_count`` > 1: ``multichannel``
                          (Recognize, StreamingRecognize, LongRunningRecognize; LINEAR16
                          only, at most ``limits.max_channels``): each channel recognized on
                          its own, each result with ``channel_tag`` 1…N
``enable_word_time_offsets``  ``word_timestamps`` (words are sent only when asked for)
``speech_contexts``       their phrases become the session's ``keyterms`` (bias toward them)
``profanity_filter``      ``format.profanity_filter``: ``f***``, as Google masks
``enable_automatic_punctuation``  ``format.punctuate``: without it (Google's default) the
                          answer has no punctuation, as Google's has not
========================  =====================================================================

``diarization_config``      ``enable_speaker_diarization`` → ``diarize`` (``min_speaker_count`` /
                          ``max_speaker_count`` bound the count): words carry ``speaker_tag``

``interim_results`` turns partials on (they are off otherwise); other fields are accepted and
ignored (one alternative).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from google.cloud import speech_v1

from asrhub.config import MAX_KEYTERM_CHARS, MAX_KEYTERMS, MAX_SPEAKERS, FormatConfig
from asrhub.errors import HubError
from asrhub.hub import Hub

from .model_choice import model_for_language

Encoding = speech_v1.RecognitionConfig.AudioEncoding

GOOGLE_GENERIC_MODELS = frozenset(
    {"", "default", "latest_long", "latest_short", "command_and_search", "phone_call", "video"}
)
"""Model names a Google client sends by habit: served by the hub's default provider."""

_CONTAINERS = {
    Encoding.FLAC: "flac",
    Encoding.OGG_OPUS: "ogg",
    Encoding.WEBM_OPUS: "webm",
    Encoding.MP3: "mp3",
    Encoding.ENCODING_UNSPECIFIED: "auto",
}


@dataclass(frozen=True, slots=True)
class SpeechOptions:
    """One request's session config, plus what only the Google answer needs."""

    session: dict[str, Any]
    language_code: str
    word_offsets: bool
    formatting: FormatConfig = field(default_factory=FormatConfig)
    """The session's ``format`` (file jobs apply it themselves)."""
    diarize: bool = False
    """``diarization_config.enable_speaker_diarization``: words carry ``speaker_tag`` (1, 2, …)
    and the answer ends with a result holding every word (Google's v1 shape)."""
    min_speakers: int = 1
    max_speakers: int = MAX_SPEAKERS


def _provider_model(hub: Hub, model: str) -> tuple[str | None, str | None]:
    name = model.strip()
    if name.lower() in GOOGLE_GENERIC_MODELS:
        return None, None
    return hub.resolve_model(name)  # the hub's rule for every API's model field


def _language(code: str) -> str | None:
    return code.strip().replace("_", "-").split("-", 1)[0].lower() or None


def _audio(config: speech_v1.RecognitionConfig) -> dict[str, Any]:
    encoding = config.encoding
    rate, channels = config.sample_rate_hertz, config.audio_channel_count or 1
    if encoding == Encoding.LINEAR16:
        name = "pcm_s16le" if rate else "wav"
    elif encoding in _CONTAINERS:
        name = _CONTAINERS[encoding]
    else:
        raise HubError(
            "bad_message",
            f"encoding {Encoding(encoding).name} is not supported: use LINEAR16, FLAC, OGG_OPUS, "
            "WEBM_OPUS or MP3",
        )
    if rate and not 4000 <= rate <= 384_000:
        raise HubError("bad_message", f"sample_rate_hertz {rate} is out of range (4000-384000)")
    if not 1 <= channels <= 32:
        raise HubError("bad_message", f"audio_channel_count {channels} is out of range (1-32)")
    return {"encoding": name, "sample_rate": rate or 16_000, "channels": channels}


def _keyterms(config: speech_v1.RecognitionConfig) -> list[str]:
    phrases = [p.strip() for context in config.speech_contexts for p in context.phrases if p.strip()]
    return list(dict.fromkeys(p[:MAX_KEYTERM_CHARS] for p in phrases))[:MAX_KEYTERMS]


def speech_options(hub: Hub, config: speech_v1.RecognitionConfig, *, interim: bool) -> SpeechOptions:
    """Map ``config``; raises :class:`HubError` (``unknown_provider``, ``bad_message``)."""
    provider, model = _provider_model(hub, config.model)
    session: dict[str, Any] = {
        "audio": _audio(config),
        "partials": interim,
        "word_timestamps": bool(config.enable_word_time_offsets),
    }
    if provider is not None:
        session["provider"] = provider
    language = _language(config.language_code)
    model = model_for_language(hub, provider, model, language)
    if model is not None:
        session["model"] = model
    if language is not None:
        session["language"] = language  # the hub refuses one the engine's model does not know
    if config.enable_separate_recognition_per_channel and session["audio"]["channels"] > 1:
        session["multichannel"] = True
    keyterms = _keyterms(config)
    if keyterms:
        session["keyterms"] = keyterms
    formatting = FormatConfig(
        profanity_filter=bool(config.profanity_filter),
        punctuate=bool(config.enable_automatic_punctuation),
    )
    if formatting.active:
        session["format"] = msgspec.to_builtins(formatting)
    diarization = config.diarization_config
    low, high = 1, MAX_SPEAKERS
    if diarization.enable_speaker_diarization:
        low = diarization.min_speaker_count or 1
        high = diarization.max_speaker_count or max(low, MAX_SPEAKERS)
        if not 1 <= low <= high <= 32:
            raise HubError(
                "bad_message",
                f"diarization_config: min_speaker_count {low} and max_speaker_count {high}"
                " must be 1 ≤ min ≤ max ≤ 32",
            )
        session["diarize"] = True
        session["max_speakers"] = high
    return SpeechOptions(
        session=session,
        language_code=config.language_code or (language or ""),
        word_offsets=bool(config.enable_word_time_offsets),
        formatting=formatting,
        diarize=bool(diarization.enable_speaker_diarization),
        min_speakers=low,
        max_speakers=high,
    )
