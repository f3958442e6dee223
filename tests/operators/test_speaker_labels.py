"""``speaker_labels`` on real voices: finals labelled per person, order kept while embeddings
run off the loop, everything released on disposal. The wrapped stage here turns each
``vad.speech_ended`` into a final of that utterance (the engine is not what is tested)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops

from asrhub.diarize.diarizer import Diarizer
from asrhub.frames import AudioChunk, FinalTranscript, Frame, SpeechEnded, SpeechStarted, Word
from asrhub.operators.speaker_labels import speaker_labels
from tests.speakers import Conversation, conversation


@pytest.fixture(scope="module")
def diarizer() -> Diarizer:
    return Diarizer.load()


def frames_of(talk: Conversation) -> list[Frame]:
    """Each reference turn as the VAD gate would pass it: started, 100 ms chunks, ended."""
    out: list[Frame] = []
    seq = 0
    for start, end, _who in talk.reference:
        out.append(SpeechStarted(t=start))
        t = start
        while t < end:
            a, b = int(t * 16000), int(min(end, t + 0.1) * 16000)
            out.append(AudioChunk(talk.samples[a:b].copy(), 16000, t, seq))
            seq += 1
            t += 0.1
        out.append(SpeechEnded(t=end))
    return out


def finals_at_speech_end() -> Any:
    counter = iter(range(1, 1000))
    opened = [0.0]

    def final(frame: Frame) -> Frame:
        if isinstance(frame, SpeechStarted):
            opened[0] = frame.t
        if isinstance(frame, SpeechEnded):
            i = next(counter)
            return FinalTranscript(
                i, f"u{i}", opened[0], frame.t, "test", words=(Word("w", frame.t - 0.5, frame.t, 1.0),)
            )
        return frame

    return reactivex.compose(ops.filter(lambda f: not isinstance(f, AudioChunk)), ops.map(final))


def pattern(labels: list[Any]) -> list[int]:
    first: dict[Any, int] = {}
    return [first.setdefault(x, len(first)) for x in labels]


def test_each_person_keeps_a_label_without_a_loop(diarizer: Diarizer) -> None:
    talk = conversation(21, 3, turns=6)
    out: list[Frame] = []
    reactivex.from_iterable(frames_of(talk)).pipe(
        speaker_labels(finals_at_speech_end(), embed=diarizer.embed, threshold=0.26, max_speakers=8)
    ).subscribe(out.append)
    finals = [f for f in out if isinstance(f, FinalTranscript)]
    assert [f.segment_id for f in finals] == list(range(1, 7))
    assert pattern([f.speaker for f in finals]) == pattern([who for _s, _e, who in talk.reference])
    assert all(w.speaker == f.speaker for f in finals for w in f.words or ())


async def test_order_is_kept_while_embeddings_run_off_the_loop(diarizer: Diarizer) -> None:
    talk = conversation(22, 2, turns=4)
    out: list[Frame] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    subject: reactivex.subject.Subject[Frame] = reactivex.subject.Subject()
    sub = subject.pipe(
        speaker_labels(finals_at_speech_end(), embed=diarizer.embed, threshold=0.26, max_speakers=8)
    ).subscribe(out.append, done.set_exception, lambda: done.set_result(None))
    for frame in frames_of(talk):
        subject.on_next(frame)
    subject.on_completed()
    assert not any(isinstance(f, FinalTranscript) for f in out)  # each waits for its embedding
    await asyncio.wait_for(done, 120)
    kinds = [type(f).__name__ for f in out]
    assert kinds == ["SpeechStarted", "FinalTranscript"] * 4  # the inner stage's order, unchanged
    finals = [f for f in out if isinstance(f, FinalTranscript)]
    assert pattern([f.speaker for f in finals]) == pattern([who for _s, _e, who in talk.reference])
    sub.dispose()


async def test_dispose_cancels_pending_embeddings(diarizer: Diarizer) -> None:
    talk = conversation(23, 2, turns=2)
    out: list[Frame] = []
    subject: reactivex.subject.Subject[Frame] = reactivex.subject.Subject()
    sub = subject.pipe(
        speaker_labels(finals_at_speech_end(), embed=diarizer.embed, threshold=0.26, max_speakers=8)
    ).subscribe(out.append)
    for frame in frames_of(talk):
        subject.on_next(frame)
    sub.dispose()
    await asyncio.sleep(0)
    assert not any(isinstance(f, FinalTranscript) for f in out)
