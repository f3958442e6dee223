"""Google Cloud Speech v1 ``RecognitionConfig`` → the hub's session config.

========================  =====================================================================
Google                    hub
========================  =====================================================================
``model``                 ``provider``: a hub provider name; ``""``, ``default`` and Google's own
                          generic model names (``latest_long``, ``latest_short``,
                          ``command_and_search``, ``phone_call``, ``video``) mean the hub's
                          default provider; anything else unknown is ``INVALID_ARGUMENT``
                          naming the hub's providers
``language_code``         ``language``: the primary subtag (``en-US`` → ``en``); refused when the
                          provider lists its languages and this is not one of them
``encoding``              ``audio.encoding``: LINEAR16 → ``pcm_s16le`` (``wav`` when no
                          ``sample_rate_hertz`` is given: a WAV header then says it), FLAC →
                          ``flac``, OGG_OPUS → ``ogg``, WEBM_OPUS → ``webm``, MP3 → ``mp3``,
                          unspecified → ``auto`` (the decoder probes a container); MULAW, AMR,
                          AMR_WB, SPEEX → ``INVALID_ARGUMENT``
``sample_rate_hertz``     ``audio.sample_rate`` (raw PCM; containers carry their own)
``audio_channel_count``   ``audio.channels`` (mixed down to mono)
``enable_word_time_offsets``  ``word_timestamps`` (words are sent only when asked for)
``speech_contexts``       their phrases become the engine ``prompt`` (a vocabulary hint)
========================  =====================================================================

``interim_results`` turns partials on (they are off otherwise); other fields are accepted and
ignored (one alternative, no diarization).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.cloud import speech_v1

from asrhub.errors import HubError
from asrhub.hub import NO_PROVIDER, Hub

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
MAX_PROMPT_CHARS = 1000


@dataclass(frozen=True, slots=True)
class SpeechOptions:
    """One request's session config, plus what only the Google answer needs."""

    session: dict[str, Any]
    language_code: str
    word_offsets: bool


def _provider(hub: Hub, model: str) -> str | None:
    name = model.strip()
    if name.lower() in GOOGLE_GENERIC_MODELS:
        return None
    if name in hub.providers:
        return name
    known = ", ".join(sorted(hub.providers)) or "(none)"
    raise HubError(
        "unknown_provider",
        f"unknown model {name!r}: this hub serves {known} (or 'default' for {hub.default_provider})",
    )


def _language(hub: Hub, provider: str | None, code: str) -> str | None:
    primary = code.strip().replace("_", "-").split("-", 1)[0].lower()
    if not primary:
        return None
    name = provider or hub.default_provider
    engine = hub.providers.get(name)
    languages = engine.capabilities.languages if engine is not None else None
    if name != NO_PROVIDER and languages is not None and primary not in languages:
        raise HubError(
            "bad_message",
            f"language_code {code!r} is not served by {name!r}, which serves: {', '.join(languages)}",
        )
    return primary


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


def _prompt(config: speech_v1.RecognitionConfig) -> str | None:
    phrases = [p.strip() for context in config.speech_contexts for p in context.phrases if p.strip()]
    return ", ".join(phrases)[:MAX_PROMPT_CHARS] or None


def speech_options(hub: Hub, config: speech_v1.RecognitionConfig, *, interim: bool) -> SpeechOptions:
    """Map ``config``; raises :class:`HubError` (``unknown_provider``, ``bad_message``)."""
    provider = _provider(hub, config.model)
    session: dict[str, Any] = {
        "audio": _audio(config),
        "partials": interim,
        "word_timestamps": bool(config.enable_word_time_offsets),
    }
    if provider is not None:
        session["provider"] = provider
    language = _language(hub, provider, config.language_code)
    if language is not None:
        session["language"] = language
    prompt = _prompt(config)
    if prompt is not None:
        session["prompt"] = prompt
    return SpeechOptions(
        session=session,
        language_code=config.language_code or (language or ""),
        word_offsets=bool(config.enable_word_time_offsets),
    )
