"""The hub's speaker model: loaded once, on first use or at start-up (``[diarization] preload``)."""

from __future__ import annotations

import threading
from pathlib import Path

from .diarizer import Diarizer
from .encoder import DEFAULT, TUNINGS


class SpeakerModels:
    """One :class:`~.diarizer.Diarizer` per hub, built the first time it is asked for (a
    blocking load of ~0.3 s: call :meth:`get` off the event loop). ``encoder`` is
    ``"campplus"`` or ``"ge2e"``; thresholds left unset are the encoder's tuned ones
    (:data:`~.encoder.TUNINGS`)."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        encoder: str = DEFAULT,
        threshold: float | None = None,
        live_threshold: float | None = None,
    ) -> None:
        if encoder not in TUNINGS:
            raise ValueError(f"unknown speaker encoder {encoder!r} (one of {', '.join(TUNINGS)})")
        self.directory = directory
        self.encoder = encoder
        self.threshold = TUNINGS[encoder].file_threshold if threshold is None else threshold
        self.live_threshold = TUNINGS[encoder].live_threshold if live_threshold is None else live_threshold
        self._lock = threading.Lock()
        self._diarizer: Diarizer | None = None

    @property
    def loaded(self) -> Diarizer | None:
        return self._diarizer

    def get(self) -> Diarizer:
        with self._lock:
            if self._diarizer is None:
                self._diarizer = Diarizer.load(self.directory, encoder=self.encoder, threshold=self.threshold)
            return self._diarizer
