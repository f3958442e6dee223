"""Live figures per engine, from the real calls: the failover loop wraps every engine call in
:meth:`EngineStats.timing` (the :class:`~asrhub.plugin.CallStats` of the hub)::

    call of 2.0 s audio answered in 0.5 s → rtf 0.25; ewma ← ewma + alpha·(0.25 − ewma)
    in flight: +1 while the call runs (a queue waiting on the engine's workers counts too)

A failed call counts in ``failures`` and leaves the moving average alone (a fast failure says
nothing about speed). Bounded: one small record per engine name the hub has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(slots=True)
class EngineFigures:
    rtf: float | None = None
    """Moving average of seconds of compute per second of audio (None: no call answered yet)."""
    in_flight: int = 0
    calls: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, float | int | None]:
        rtf = None if self.rtf is None else round(self.rtf, 4)
        return {"rtf": rtf, "in_flight": self.in_flight, "calls": self.calls, "failures": self.failures}


class EngineStats:
    """The hub's figures, one record per engine name."""

    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self.engines: dict[str, EngineFigures] = {}

    def of(self, name: str) -> EngineFigures:
        figures = self.engines.get(name)
        if figures is None:
            figures = self.engines[name] = EngineFigures()
        return figures

    @contextmanager
    def timing(self, provider: str, audio_s: float) -> Iterator[None]:
        figures = self.of(provider)
        figures.in_flight += 1
        began = time.perf_counter()
        try:
            yield
        except asyncio.CancelledError:  # the session closed: not the engine's fault
            raise
        except BaseException:
            figures.failures += 1
            raise
        else:
            if audio_s > 0.05:  # a blip of audio says nothing about speed
                self.record(figures, (time.perf_counter() - began) / audio_s)
        finally:
            figures.in_flight -= 1
            figures.calls += 1

    def record(self, figures: EngineFigures, rtf: float) -> None:
        figures.rtf = rtf if figures.rtf is None else figures.rtf + self.alpha * (rtf - figures.rtf)

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        return {name: figures.as_dict() for name, figures in sorted(self.engines.items())}
