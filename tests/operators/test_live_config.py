"""Live reconfiguration at the operator level: a ``session.updated`` frame in the stream changes
the VAD gate's silence rule and the segmenter's partials from that point of the stream on, and
passes through in order."""

from __future__ import annotations

import numpy as np

from asrhub.config import SessionConfig, VadConfig
from asrhub.frames import Frame, Segment, SessionUpdated, SpeechEnded, SpeechStarted
from asrhub.operators.segment import segment
from asrhub.operators.vad_gate import vad_gate

from .frame_utils import chunks_of, run

RATE = 16000
CHUNK = 1600  # 100 ms
_t = np.arange(RATE) / RATE
BUZZ = (0.3 * ((_t * 130) % 1 - 0.5)).astype(np.float32)  # voiced for webrtcvad in every frame
SILENCE = np.zeros(RATE, np.float32)


def signal(pattern: str) -> np.ndarray:
    """'v' = 100 ms of buzz, 's' = 100 ms of digital silence."""
    return np.concatenate([(BUZZ if c == "v" else SILENCE)[:CHUNK] for c in pattern])


def updated(**fields: object) -> SessionUpdated:
    config = SessionConfig(**fields)  # type: ignore[arg-type]
    return SessionUpdated(config=config.to_dict(), settings=config)


FIRST = "vvvv" + "s" * 12  # one utterance, then 1.2 s of silence: closed under either rule
SECOND = "vvvv" + "ssss" + "vvvv" + "s" * 12  # two bursts 400 ms apart


def frames_with(update: SessionUpdated | None) -> list[Frame]:
    x = signal(FIRST + SECOND)
    chunks = chunks_of(x, RATE, CHUNK)
    head, tail = chunks[: len(FIRST)], chunks[len(FIRST) :]
    return [*head, *([update] if update else []), *tail]


def test_vad_silence_rule_changes_from_the_next_utterance() -> None:
    gate = {"aggressiveness": 3, "start_ms": 60, "silence_ms": 600, "preroll_ms": 100}
    before, _ = run(vad_gate(**gate), frames_with(None))
    update = updated(vad=VadConfig(aggressiveness=3, start_ms=60, silence_ms=200, preroll_ms=100))
    after, done = run(vad_gate(**gate), frames_with(update))
    assert done
    starts = lambda out: sum(isinstance(f, SpeechStarted) for f in out)  # noqa: E731
    # 600 ms of silence bridges the 400 ms gap (one utterance); 200 ms does not (two).
    assert starts(before) == 2 and starts(after) == 3
    i = after.index(update)
    assert sum(isinstance(f, SpeechEnded) for f in after[:i]) == 1  # in stream order, after utterance 1
    assert sum(isinstance(f, SpeechStarted) for f in after[i:]) == 2


def test_vad_change_during_an_utterance_waits_for_its_end() -> None:
    gate = {"aggressiveness": 3, "start_ms": 60, "silence_ms": 600, "preroll_ms": 100}
    x = signal("vvvv" + "ssss" + "vvvv" + "s" * 12 + SECOND)
    chunks = chunks_of(x, RATE, CHUNK)
    update = updated(vad=VadConfig(aggressiveness=3, start_ms=60, silence_ms=200, preroll_ms=100))
    out, _ = run(vad_gate(**gate), [*chunks[:6], update, *chunks[6:]])  # mid-gap of utterance 1
    # Utterance 1 keeps the 600 ms rule (its 400 ms gap does not split it); the next one splits.
    assert sum(isinstance(f, SpeechStarted) for f in out) == 3


def test_segment_partials_turn_on_and_off_with_the_stream() -> None:
    x = np.full(RATE * 2, 0.1, np.float32)  # 2 s of "speech"

    def utterance(start_s: float) -> list[Frame]:
        chunks = chunks_of(x, RATE, CHUNK)
        shifted = [type(c)(c.samples, RATE, c.start + start_s, c.seq) for c in chunks]
        return [SpeechStarted(t=start_s), *shifted, SpeechEnded(t=start_s + 2)]

    on, off = updated(partials=True), updated(partials=False)
    frames = [*utterance(0.0), on, *utterance(3.0), off, *utterance(6.0)]
    out, _ = run(segment(partial_interval_s=0.5, min_s=0.25, partials=False), frames)
    segs = [f for f in out if isinstance(f, Segment)]
    snapshots = {s.segment_id for s in segs if not s.final}
    assert [s.segment_id for s in segs if s.final] == [1, 2, 3]
    assert snapshots == {2}  # only the utterance between the two updates
    assert out.index(on) < out.index(next(s for s in segs if s.segment_id == 2)) and off in out
