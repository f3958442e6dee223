"""``openai``: OpenAI's transcription API, or any server that speaks it (``base_url``).

Settings (``[providers.openai]``): ``base_url`` (default: OpenAI; e.g. ``http://host:8080/v1``
for another ASR Hub, speaches / faster-whisper-server, vLLM, LocalAI), ``api_key`` (default: the
``OPENAI_API_KEY`` environment variable; a self-hosted server without keys takes any value),
``model`` (default ``whisper-1``), ``response_format`` (``json``, or ``verbose_json`` to get
word times from servers that offer them), ``timeout_s``, ``max_retries`` (the SDK's own
retries; 0 by default — the hub's failover is the retry), ``language``.

Each utterance is sent as an in-memory 16-bit WAV with ``client.audio.transcriptions.create``.
Timeouts, connection errors, HTTP errors and rate limits (429) become :class:`ProviderError`
carrying the upstream status and message, hence ``provider_failed`` (or failover). A remote
engine has no cheap partials: ``capabilities.partials`` is False.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import io
import os
import re
import wave
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from asrhub.config import base_language
from asrhub.engine.batch_stage import batch_stage
from asrhub.engine.provider_settings import check_from, read_settings
from asrhub.engine.registry import ProviderSpec
from asrhub.frames import TARGET_RATE, Samples, Word
from asrhub.pcm import float_to_pcm16
from asrhub.plugin import (
    Capabilities,
    Priority,
    ProviderError,
    ProviderUnavailable,
    TimedText,
    Transcription,
    hint_prompt,
)

if TYPE_CHECKING:
    from asrhub.plugin import Operator, Provider, SessionContext


class OpenAISettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    base_url: str | None = None
    api_key: str | None = None
    model: str = "whisper-1"
    response_format: Literal["json", "verbose_json"] = "json"
    timeout_s: float = 30.0
    max_retries: int = 0
    language: str | None = None


def _key(settings: OpenAISettings) -> str | None:
    return settings.api_key or os.environ.get("OPENAI_API_KEY")


def probe(options: dict[str, Any]) -> OpenAISettings:
    """The settings, when the client can be made with them; else ProviderUnavailable says why."""
    if importlib.util.find_spec("openai") is None:
        raise ProviderUnavailable("the openai package is not installed: pip install openai")
    settings = read_settings("openai", options, OpenAISettings)
    if settings.base_url is None and not _key(settings):
        raise ProviderUnavailable(
            "no API key: set OPENAI_API_KEY or [providers.openai] api_key, or point "
            "[providers.openai] base_url at an OpenAI-compatible server"
        )
    return settings


check = check_from(probe)


def wav_bytes(samples: Samples, rate: int = TARGET_RATE) -> bytes:
    pcm = float_to_pcm16(samples)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


class OpenAIProvider:
    name = "openai"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.settings = read_settings("openai", options, OpenAISettings)
        verbose = self.settings.response_format == "verbose_json"
        self.capabilities = Capabilities(
            streaming=False, partials=False, word_timestamps=verbose, keyterms=True
        )
        self.client: Any = None

    async def start(self) -> None:
        if self.client is not None:
            return
        problem = check(msgspec.to_builtins(self.settings))
        if problem is not None:
            raise ProviderUnavailable(f"openai: {problem}")
        from openai import AsyncOpenAI

        s = self.settings
        self.client = AsyncOpenAI(
            api_key=_key(s) or "unused", base_url=s.base_url, timeout=s.timeout_s, max_retries=s.max_retries
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        self.client = None

    async def transcribe(
        self,
        samples: Samples,
        *,
        language: str | None = None,
        prompt: str | None = None,
        priority: Priority = Priority.FINAL,
        **options: Any,
    ) -> Transcription:
        import openai

        if self.client is None:
            raise ProviderError("openai is not started")
        s = self.settings
        args: dict[str, Any] = {"model": s.model, "response_format": s.response_format}
        language = language or s.language
        if language:
            args["language"] = base_language(language)
        prompt = hint_prompt(prompt, options.get("keyterms"))
        if prompt:
            args["prompt"] = prompt
        if s.response_format == "verbose_json":
            args["timestamp_granularities"] = ["word", "segment"]
        where = s.base_url or "api.openai.com"
        try:
            reply = await self.client.audio.transcriptions.create(
                file=("audio.wav", wav_bytes(samples), "audio/wav"), **args
            )
        except openai.APIStatusError as exc:
            raise ProviderError(f"{where}: HTTP {exc.status_code}: {_upstream(exc)}") from None
        except openai.APITimeoutError:
            raise ProviderError(f"{where}: no answer within {s.timeout_s:g} s") from None
        except openai.APIError as exc:
            raise ProviderError(f"{where}: {type(exc).__name__}: {exc.message}") from None
        return self._parse(reply, language, len(samples) / TARGET_RATE)

    def _parse(self, reply: Any, language: str | None, duration: float) -> Transcription:
        data: dict[str, Any] = reply.model_dump() if hasattr(reply, "model_dump") else {"text": str(reply)}
        words: tuple[Word, ...] | None = None
        if data.get("words"):
            words = tuple(
                Word(
                    str(w["word"]).strip(),
                    float(w["start"]),
                    float(w["end"]),
                    float(w.get("probability") or 1.0),
                )
                for w in data["words"]
            )
        pieces = tuple(
            TimedText(str(p["text"]).strip(), float(p["start"]), float(p["end"]))
            for p in data.get("segments") or ()
        )
        return Transcription(
            text=str(data.get("text") or "").strip(),
            language=_language_code(data.get("language")) or language,
            words=words,
            segments=pieces,
            duration=duration,
        )

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        return batch_stage(self, ctx, fallbacks)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.settings.model,
            "base_url": self.settings.base_url or "https://api.openai.com/v1",
            "capabilities": dataclasses.asdict(self.capabilities),
        }


def _upstream(exc: Any) -> str:
    """The server's own error message (OpenAI's ``{"error": {"message": …}}`` or the raw body)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    text = getattr(getattr(exc, "response", None), "text", "") or ""
    return text.strip()[:500] or str(exc.message)


WHISPER_SPELLINGS = {
    "haitian creole": "ht",
    "myanmar": "my",
    "punjabi": "pa",
    "pashto": "ps",
    "castilian": "es",
    "flemish": "nl",
    "valencian": "ca",
    "moldavian": "ro",
    "moldovan": "ro",
    "letzeburgesch": "lb",
    "sinhalese": "si",
    "mandarin": "zh",
}
"""The names Whisper (hence OpenAI's verbose_json) uses where ISO 639's English name differs."""


@functools.cache
def _iso639_1() -> dict[str, str]:
    """Every ISO 639-1 language by its English names, lower case, from pycountry's ISO 639 data
    (``"swahili"`` → ``sw``, ``"greek"`` → ``el``, ``"norwegian nynorsk"`` → ``nn``), plus
    Whisper's own spellings."""
    import pycountry

    table: dict[str, str] = {}
    for language in pycountry.languages:
        code = getattr(language, "alpha_2", None)
        if not code:
            continue
        for field in ("name", "common_name", "inverted_name"):
            name = re.sub(r"\s*\(.*?\)", "", str(getattr(language, field, "") or "")).strip().lower()
            for variant in (name, name.split(",")[0].strip()):  # "greek, modern" → "greek"
                if variant:
                    table.setdefault(variant, code)
    return {**table, **WHISPER_SPELLINGS}


def _language_code(value: Any) -> str | None:
    """verbose_json reports ``"english"``; the contract uses ISO 639-1 codes where one exists
    (a name without one, or a code already, is passed on as given, lower case)."""
    if not value:
        return None
    text = str(value).strip().lower()
    return _iso639_1().get(text, text)


OPENAI_URL = "https://api.openai.com/v1"


async def reach(options: dict[str, Any], timeout_s: float) -> str | None:
    """Whether the server answers now (``asrhub providers``): ``GET {base_url}/models`` with the
    key, within ``timeout_s``. Any answer but a refused key or a server error is an answer."""
    import aiohttp

    settings = probe(options)
    base = (settings.base_url or OPENAI_URL).rstrip("/")
    key = _key(settings)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
            http.get(f"{base}/models", headers=headers) as reply,
        ):
            status = reply.status
    except TimeoutError:
        return f"no answer from {base} within {timeout_s:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        return f"cannot reach {base}: {exc}"
    if status in (401, 403):
        return f"{base} refused the API key (HTTP {status})"
    if status >= 500:
        return f"{base} answers HTTP {status}"
    return None


spec = ProviderSpec(
    name="openai",
    description="OpenAI's transcription API or any OpenAI-compatible server (base_url)",
    factory=OpenAIProvider,
    check=check,
    reach=reach,
)
