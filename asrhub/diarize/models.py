"""The hub's speaker model: loaded once, on first use or at start-up (``[diarization] preload``)."""

from __future__ import annotations

import threading
from pathlib import Path

from .diarizer import FILE_THRESHOLD, LIVE_THRESHOLD, Diarizer


class SpeakerModels:
    """One :class:`~.diarizer.Diarizer` per hub, built the first time it is asked for (a
    blocking load of ~0.3 s: call :meth:`get` off the event loop)."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        threshold: float = FILE_THRESHOLD,
        live_threshold: float = LIVE_THRESHOLD,
    ) -> None:
        self.directory = directory
        self.threshold = threshold
        self.live_threshold = live_threshold
        self._lock = threading.Lock()
        self._diarizer: Diarizer | None = None

    @property
    def loaded(self) -> Diarizer | None:
        return self._diarizer

    def get(self) -> Diarizer:
        with self._lock:
            if self._diarizer is None:
                self._diarizer = Diarizer.load(self.directory, threshold=self.threshold)
            return self._diarizer
