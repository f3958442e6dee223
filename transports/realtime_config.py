"""OpenAI Realtime transcription-session configuration ↔ a hub session config.

Accepted in ``session.update`` (GA) and ``transcription_session.update`` (beta), both shapes
in either::

    GA:   {"type": "transcription", "audio": {"input": {
              "format": {"type": "audio/pcm", "rate": 24000} | {"type": "audio/pcmu" | "audio/pcma"},
              "transcription": {"model", "language", "prompt"},
              "turn_detection": {"type": "server_vad", "threshold", "prefix_padding_ms",
                                 "silence_duration_ms"} | null,
              "noise_reduction": {…} | null}}, "include": […]}
    beta: {"input_audio_format": "pcm16" | "g711_ulaw" | "g711_alaw",
           "input_audio_transcription": {…}, "turn_detection": {…} | null,
           "input_audio_noise_reduction": {…} | null}

Mapping: ``model`` → the hub provider and model (``whisper-1`` and the ``gpt-4o…transcribe``
names: the default; else the hub's rule, ``whisper``, ``whisper:base``, ``base``; unknown:
``invalid_value``); ``language``, ``prompt`` as they are; ``keywords`` → the session's key
terms; ``server_vad`` → the hub VAD (``silence_duration_ms`` → ``silence_ms``,
``prefix_padding_ms`` → ``preroll_ms``, ``threshold`` 0…1 → aggressiveness 0…3);
``semantic_vad`` (``eagerness`` low | medium | high | auto) → the hub VAD with semantic end of
turn (``turn_detection.type = "semantic"``, same eagerness); ``null`` → VAD off, the client
commits;
``noise_reduction`` and ``include`` are accepted and not applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from asrhub.errors import HubError
from asrhub.hub import Hub

from .openai_api import resolve_provider_model

FORMATS = {"audio/pcm": None, "audio/pcmu": "mulaw", "audio/pcma": "alaw"}
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
PCM_RATE = 24_000
G711_RATE = 8_000


DEFAULT_TURN_DETECTION = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
}


EAGERNESS = ("low", "medium", "high", "auto")


class ConfigError(HubError):
    """A session field OpenAI would refuse: ``invalid_value`` with the field's path."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__("invalid_value", message)
        self.param = param


@dataclass(frozen=True)
class RealtimeConfig:
    format: str = "audio/pcm"
    rate: int = PCM_RATE
    model: str = "gpt-4o-transcribe"
    provider: str | None = None
    hub_model: str | None = None
    """A model of the provider (the hub's rule: ``whisper:base``); None: its default."""
    keyterms: tuple[str, ...] = ()
    language: str | None = None
    prompt: str | None = None
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_TURN_DETECTION))
    noise_reduction: Any = None
    include: tuple[str, ...] = ()

    @property
    def g711(self) -> str | None:
        return FORMATS[self.format]

    @property
    def bytes_per_second(self) -> float:
        return float((G711_RATE if self.g711 else self.rate) * 2)

    def session_config(self) -> dict[str, Any]:
        td = self.turn_detection
        vad: dict[str, Any] = {"enabled": td is not None}
        turn: dict[str, Any] = {"type": "silence"}
        if td is not None and td.get("type") == "semantic_vad":
            turn = {"type": "semantic", "eagerness": td.get("eagerness", "auto")}
        elif td is not None:
            if td.get("silence_duration_ms") is not None:
                vad["silence_ms"] = min(max(int(td["silence_duration_ms"]), 50), 10_000)
            if td.get("prefix_padding_ms") is not None:
                vad["preroll_ms"] = min(max(int(td["prefix_padding_ms"]), 0), 2_000)
            if td.get("threshold") is not None:
                vad["aggressiveness"] = min(3, max(0, int(float(td["threshold"]) * 4)))
                vad["threshold"] = min(0.95, max(0.05, float(td["threshold"])))  # the Silero engine's
        config: dict[str, Any] = {
            "audio": {"encoding": "pcm_s16le", "sample_rate": G711_RATE if self.g711 else self.rate},
            "language": self.language,
            "prompt": self.prompt,
            "keyterms": list(self.keyterms),
            "vad": vad,
            "turn_detection": turn,
            "partials": td is not None,
        }
        if self.provider is not None:
            config["provider"] = self.provider
        if self.hub_model is not None:
            config["model"] = self.hub_model
        return config

    def to_ga(self, session_id: str) -> dict[str, Any]:
        fmt: dict[str, Any] = {"type": self.format}
        if self.format == "audio/pcm":
            fmt["rate"] = self.rate
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": session_id,
            "audio": {
                "input": {
                    "format": fmt,
                    "transcription": {
                        "model": self.model,
                        "language": self.language,
                        "prompt": self.prompt,
                        "keywords": list(self.keyterms),
                    },
                    "turn_detection": self.turn_detection,
                    "noise_reduction": self.noise_reduction,
                }
            },
            "include": list(self.include),
        }

    def to_beta(self, session_id: str) -> dict[str, Any]:
        beta_format = {v: k for k, v in BETA_FORMATS.items()}[self.format]
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            "input_audio_format": beta_format,
            "input_audio_transcription": {
                "model": self.model,
                "language": self.language,
                "prompt": self.prompt,
            },
            "turn_detection": self.turn_detection,
            "input_audio_noise_reduction": self.noise_reduction,
            "include": list(self.include),
            "modalities": ["text"],
        }


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(param, f"Invalid type for '{param}': expected an object")
    return value


def _turn_detection(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    td = _object(value, param)
    kind = td.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise ConfigError(
            f"{param}.type",
            f"Invalid value: '{kind}'. Supported values are: 'server_vad' and 'semantic_vad'.",
        )
    if kind == "semantic_vad":
        eagerness = td.get("eagerness") or "auto"
        if eagerness not in EAGERNESS:
            supported = ", ".join(f"'{e}'" for e in EAGERNESS)
            raise ConfigError(
                f"{param}.eagerness", f"Invalid value: '{eagerness}'. Supported values are: {supported}."
            )
        flags: dict[str, Any] = {k: td[k] for k in ("create_response", "interrupt_response") if k in td}
        return {"type": "semantic_vad", "eagerness": eagerness, **flags}
    merged = {**DEFAULT_TURN_DETECTION, **{k: v for k, v in td.items() if v is not None}}
    checks = (("threshold", 0.0, 1.0), ("prefix_padding_ms", 0, 10_000), ("silence_duration_ms", 0, 10_000))
    for name, lo, hi in checks:
        number = merged.get(name)
        if not isinstance(number, int | float) or isinstance(number, bool) or not lo <= number <= hi:
            raise ConfigError(
                f"{param}.{name}", f"Invalid value for '{param}.{name}': expected a number in {lo}…{hi}"
            )
    return merged


def update(hub: Hub, current: RealtimeConfig, session: Any) -> RealtimeConfig:
    """``current`` with a ``session.update``'s ``session`` object applied. Raises ConfigError."""
    session = _object(session, "session")
    kind = session.get("type", "transcription")
    if kind != "transcription":
        raise ConfigError(
            "session.type",
            f"Invalid value: '{kind}'. This hub offers transcription sessions only ('transcription').",
        )
    changes: dict[str, Any] = {}
    audio_in: dict[str, Any] = {}
    if "audio" in session:
        audio_in = _object(_object(session["audio"], "session.audio").get("input", {}), "session.audio.input")
    # the beta names, as aliases
    if "input_audio_format" in session:
        name = session["input_audio_format"]
        if name not in BETA_FORMATS:
            supported = ", ".join(f"'{n}'" for n in BETA_FORMATS)
            raise ConfigError(
                "session.input_audio_format", f"Invalid value: '{name}'. Supported values are: {supported}."
            )
        audio_in.setdefault("format", {"type": BETA_FORMATS[name]})
    for beta, ga in (
        ("input_audio_transcription", "transcription"),
        ("turn_detection", "turn_detection"),
        ("input_audio_noise_reduction", "noise_reduction"),
    ):
        if beta in session:
            audio_in.setdefault(ga, session[beta])
    if "format" in audio_in:
        fmt = _object(audio_in["format"], "session.audio.input.format")
        kind = fmt.get("type", "audio/pcm")
        if kind not in FORMATS:
            supported = ", ".join(f"'{n}'" for n in FORMATS)
            raise ConfigError(
                "session.audio.input.format.type",
                f"Invalid value: '{kind}'. Supported values are: {supported}.",
            )
        rate = fmt.get("rate", PCM_RATE) if kind == "audio/pcm" else PCM_RATE
        if not isinstance(rate, int) or not 8_000 <= rate <= 48_000:
            raise ConfigError(
                "session.audio.input.format.rate", f"Invalid value: {rate!r}. Supported values are: 24000."
            )
        changes.update(format=kind, rate=rate)
    if audio_in.get("transcription") is not None:
        tr = _object(audio_in["transcription"], "session.audio.input.transcription")
        if "model" in tr and tr["model"] is not None:
            try:
                changes["provider"], changes["hub_model"] = resolve_provider_model(hub, str(tr["model"]))
            except HubError as exc:
                raise ConfigError("session.audio.input.transcription.model", exc.message) from None
            changes["model"] = str(tr["model"])
        for name in ("language", "prompt"):
            if name in tr:
                changes[name] = tr[name] or None
        if "keywords" in tr:
            words = tr["keywords"] or []
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise ConfigError(
                    "session.audio.input.transcription.keywords", "keywords must be a list of strings"
                )
            changes["keyterms"] = tuple(words)
    if "turn_detection" in audio_in:
        changes["turn_detection"] = _turn_detection(
            audio_in["turn_detection"], "session.audio.input.turn_detection"
        )
    if "noise_reduction" in audio_in:
        changes["noise_reduction"] = audio_in["noise_reduction"]
    if isinstance(session.get("include"), list):
        changes["include"] = tuple(str(i) for i in session["include"])
    result = replace(current, **changes)
    hub.resolve_config(result.session_config())  # the hub's own checks (language, provider)
    return result
