"""The frames of one ``vad_gate`` session waiting for the Silero model off the event loop.

On a running loop a Silero session's chunk is cut into windows at once
(:meth:`~._vad_silero.SileroClassifier.add`) and submitted to the owner's
:class:`~._vad_silero.SileroBatcher`; the chunk, and every frame that comes after it, wait here
in order. When a flight lands, the frames whose windows it scored go to the gate (``handle``),
up to the first chunk still waiting. While more than :data:`MAX_WAITING_S` of audio waits, the
session's ``pending`` is held (``feed`` waits). A failed flight ends the session (``on_error``).
Disposal empties the queue; a flight in the air then finds nothing to pass on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from asrhub.flow import Pending
from asrhub.frames import AudioChunk, Frame
from asrhub.pcm import float_to_pcm16

from ._pcm import Pcm16Chunk
from ._vad_silero import SileroClassifier, SileroVad

MAX_WAITING_S = 1.0
"""Audio of one session waiting for the Silero model off the loop; past it ``feed`` waits."""


class Waiting:
    def __init__(
        self,
        silero: SileroVad,
        handle: Callable[[Frame], None],
        complete: Callable[[], None],
        on_error: Callable[[Exception], None],
        pending: Pending | None,
    ) -> None:
        self.silero, self.handle, self.complete, self.on_error = silero, handle, complete, on_error
        self.pending = pending
        # (frame, or None for the completion; the classifier scoring it, or None; its end position)
        self.queue: deque[tuple[Frame | None, SileroClassifier | None, int]] = deque()

    def put(self, frame: Frame, judge: object) -> None:
        """A frame for the gate, whose classifier is ``judge``: waits if it must, else goes on."""
        loop = _running_loop()
        if isinstance(frame, AudioChunk) and isinstance(judge, SileroClassifier) and loop is not None:
            rate = frame.sample_rate
            pcm = frame.pcm if type(frame) is Pcm16Chunk else float_to_pcm16(frame.samples)
            pos = round(frame.start * rate)
            try:  # scored off the loop, with the other sessions' windows
                judge.add(pcm, pos, rate)
            except Exception as exc:
                self.on_error(exc)
                return
            self.queue.append((frame, judge, pos + len(pcm) // 2))
            self.silero.batcher().submit(judge, self.drain, loop)
            if self.pending is not None and self.waiting_s >= MAX_WAITING_S:
                self.pending.hold("vad_gate")
        elif self.queue:
            self.queue.append((frame, None, 0))
        else:
            self.handle(frame)

    def completed(self) -> None:
        if self.queue:
            self.queue.append((None, None, 0))
        else:
            self.complete()

    def drain(self, error: BaseException | None) -> None:
        """A flight landed: pass on what it scored (or end the session with its error)."""
        queue = self.queue
        if error is not None:
            queue.clear()
            self.on_error(error if isinstance(error, Exception) else RuntimeError(error))
        while queue:
            frame, owner, end = queue[0]
            if owner is not None and end > owner.scored:
                break  # its flight has not landed
            queue.popleft()
            if frame is None:
                self.complete()
            else:
                self.handle(frame)
        if self.pending is not None and self.waiting_s < MAX_WAITING_S:
            self.pending.unhold("vad_gate")

    def dispose(self) -> None:
        self.queue.clear()
        if self.pending is not None:
            self.pending.unhold("vad_gate")

    @property
    def waiting_s(self) -> float:
        return sum(f.duration for f, _, _ in self.queue if isinstance(f, AudioChunk))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
