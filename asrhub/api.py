"""The in-process API: speech recognition from Python, no server.

One call for a file::

    from asrhub.api import transcribe_file
    result = transcribe_file("meeting.mp3", provider="whisper", language="en")
    print(result.text)
    for final in result.segments:          # transcript.final events, stream times
        print(final.start, final.end, final.text)

``await atranscribe_file(…)`` is the same inside an event loop. For sessions (streaming audio,
events as they happen), a started hub::

    async with open_hub(Settings()) as hub:
        session = hub.open({"provider": "whisper"})
        async for event in session.iter_events(): …

Audio of any length in any accepted container (WAV, Ogg, WebM, MP3, FLAC, AAC, MP4/M4A) is
decoded to 16 kHz mono and transcribed in
jobs of at most 30 s, each cut at its quietest moment before the bound (the one cutting policy
of every batch caller, :mod:`asrhub.engine.uploads`, applied by ``Hub.transcribe``), so memory per call
stays bounded, live sessions sharing the hub never wait behind the file, and progress can be
reported.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from asrhub.engine.finals import file_finals
from asrhub.engine.uploads import JOB_S, SEARCH_S, Progress, jobs
from asrhub.frames import TARGET_RATE, FinalTranscript, Samples, Word
from asrhub.hub import Hub
from asrhub.settings.schema import Settings

BLOCK_S = JOB_S


@dataclass(frozen=True)
class FileTranscript:
    text: str
    segments: tuple[FinalTranscript, ...]
    provider: str
    language: str | None
    duration: float
    words: tuple[Word, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "segments": [s.to_dict() for s in self.segments],
            "provider": self.provider,
            "language": self.language,
            "duration": round(self.duration, 3),
        }


def load_audio(
    source: str | os.PathLike[str] | bytes, *, max_s: float = 3600.0, max_rate: int = 48_000
) -> Samples:
    """A file in any accepted container (or a PCM WAV) → 16 kHz mono float32. Raises ValueError,
    and :class:`~asrhub.errors.AudioTooLong` (a ValueError) for a file longer than ``max_s``
    seconds; a compressed file declaring more than ``max_rate`` Hz is refused. Blocking; memory:
    the file's bytes plus its 16 kHz samples (see :func:`asrhub.operators.decode.decode_file`)."""
    from asrhub.operators.decode import decode_file

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    samples: Samples
    samples, _rate = decode_file(data, "auto", strict=False, max_s=max_s, max_rate=max_rate, rate=TARGET_RATE)
    return samples


def load_channels(data: bytes, *, max_s: float = 3600.0, max_channels: int = 8) -> list[Samples] | None:
    """A PCM WAV file → one 16 kHz mono float32 array per channel (``multichannel``). None: not a
    WAV. Raises ValueError (a WAV this hub cannot read, more than ``max_channels`` channels) and
    :class:`~asrhub.errors.AudioTooLong`. Blocking; memory: the file's bytes twice plus each
    channel's 16 kHz samples."""
    from asrhub.operators.decode import decode_file, wav_channels

    files = wav_channels(data, max_channels)
    if files is None:
        return None
    out: list[Samples] = []
    for mono in files:
        samples, _rate = decode_file(mono, "auto", strict=False, max_s=max_s, rate=TARGET_RATE)
        out.append(samples)
    return out


def blocks(samples: Samples, block_s: float = BLOCK_S, search_s: float = SEARCH_S) -> list[tuple[int, int]]:
    """Cut points (start, end) in samples (see :func:`asrhub.engine.uploads.jobs`)."""
    return jobs(samples, block_s, search_s)


async def transcribe_samples(
    hub: Hub,
    samples: Samples,
    *,
    provider: str | tuple[str, ...] | None = None,
    language: str | None = None,
    prompt: str | None = None,
    progress: Progress | None = None,
    block_s: float = BLOCK_S,
    **options: Any,
) -> FileTranscript:
    """Transcribe 16 kHz audio of any length with a started hub (failover applies per job).
    ``options``: ``model``, ``task``, ``keyterms`` (see :meth:`asrhub.hub.Hub.transcribe`)."""
    total = len(samples) / TARGET_RATE
    name, result = await hub.transcribe(
        samples,
        provider=provider,
        language=language,
        prompt=prompt,
        progress=progress,
        job_s=block_s,
        **options,
    )
    finals = tuple(file_finals(name, result, total, language))
    return FileTranscript(result.text, finals, name, result.language or language, total, result.words or ())


def _settings_for(settings: Settings | None, provider: str | tuple[str, ...] | None) -> Settings:
    settings = settings or Settings()
    if provider is None:
        return settings
    names = (provider,) if isinstance(provider, str) else provider
    return msgspec.structs.replace(settings, enabled_providers=names, default_provider=names[0])


@asynccontextmanager
async def _hub(settings: Settings) -> AsyncIterator[Hub]:
    from asrhub.wiring import build_hub

    hub = build_hub(settings)
    try:
        await hub.start()
        yield hub
    finally:
        await hub.shutdown(grace_s=settings.server.shutdown_grace_s)


def open_hub(settings: Settings | None = None) -> AbstractAsyncContextManager[Hub]:
    """``async with open_hub(settings) as hub``: a hub built from ``settings`` (the standard
    operator chain, the providers the settings enable), models loaded; shut down on exit."""
    return _hub(settings or Settings())


async def atranscribe_file(
    path: str | os.PathLike[str] | bytes,
    *,
    provider: str | tuple[str, ...] | None = None,
    language: str | None = None,
    prompt: str | None = None,
    settings: Settings | None = None,
    hub: Hub | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> FileTranscript:
    """Decode and transcribe one file. Pass a started ``hub`` to reuse its loaded models;
    otherwise one is built from ``settings`` (with ``provider`` enabled) for this call.
    ``options``: ``model``, ``task``, ``keyterms`` (see :meth:`asrhub.hub.Hub.transcribe`).
    The hub's (or the settings') ``limits.max_upload_s`` and ``limits.max_input_rate`` apply."""
    limits = hub.limits if hub is not None else (settings or Settings()).limits
    samples = await asyncio.to_thread(
        load_audio, path, max_s=limits.max_upload_s, max_rate=limits.max_input_rate
    )
    if hub is not None:
        return await transcribe_samples(
            hub, samples, provider=provider, language=language, prompt=prompt, progress=progress, **options
        )
    async with open_hub(_settings_for(settings, provider)) as own:
        return await transcribe_samples(
            own, samples, provider=provider, language=language, prompt=prompt, progress=progress, **options
        )


def transcribe_file(
    path: str | os.PathLike[str] | bytes,
    *,
    provider: str | tuple[str, ...] | None = None,
    language: str | None = None,
    prompt: str | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> FileTranscript:
    """The blocking one-call form of :func:`atranscribe_file` (not from inside an event loop)."""
    return asyncio.run(
        atranscribe_file(
            path, provider=provider, language=language, prompt=prompt, settings=settings, **options
        )
    )
