"""``speaker_labels`` on real voices: finals labelled per person, order kept while embeddings
run off the loop, everything released on disposal. The wrapped stage here turns each
``vad.speech_ended`` into a final of that utterance (the engine is not what is tested)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import reactivex
from reactivex import operators as ops

from asrhub.diarize.diarizer import LIVE_THRESHOLD as LIVE
from asrhub.diarize.diarizer import Diarizer
from asrhub.frames import AudioChunk, FinalTranscript, Frame, SpeechEnded, SpeechStarted, Word
from asrhub.operators.speaker_labels import speaker_labels
from tests import speakers
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
        speaker_labels(finals_at_speech_end(), voices=diarizer.voices, threshold=LIVE, max_speakers=8)
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
        speaker_labels(finals_at_speech_end(), voices=diarizer.voices, threshold=LIVE, max_speakers=8)
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
        speaker_labels(finals_at_speech_end(), voices=diarizer.voices, threshold=LIVE, max_speakers=8)
    ).subscribe(out.append)
    for frame in frames_of(talk):
        subject.on_next(frame)
    sub.dispose()
    await asyncio.sleep(0)
    assert not any(isinstance(f, FinalTranscript) for f in out)


def utterances_of(pieces: list[np.ndarray]) -> tuple[list[Frame], list[tuple[float, float]]]:
    """Each piece one VAD utterance (0.6 s of silence between them), fed in 100 ms chunks."""
    out: list[Frame] = []
    spans: list[tuple[float, float]] = []
    t, seq = 0.5, 0
    for piece in pieces:
        start, end = t, t + len(piece) / 16000
        out.append(SpeechStarted(t=start))
        for a in range(0, len(piece), 1600):
            out.append(AudioChunk(piece[a : a + 1600].copy(), 16000, start + a / 16000, seq))
            seq += 1
        out.append(SpeechEnded(t=end))
        spans.append((start, end))
        t = end + 0.6
    return out, spans


def finals_with_words_every(step: float) -> Any:
    """The engine stand-in: at each ``speech_ended`` a final of the utterance, a word every
    ``step`` seconds of it (the words' times are what the speakers are matched on)."""
    opened = [0.0]
    counter = iter(range(1, 1000))

    def final(frame: Frame) -> Frame:
        if isinstance(frame, SpeechStarted):
            opened[0] = frame.t
        if isinstance(frame, SpeechEnded):
            i = next(counter)
            starts = np.arange(opened[0], frame.t - step / 2, step)
            words = tuple(Word(f"w{k}", float(s), float(s) + step * 0.8, 1.0) for k, s in enumerate(starts))
            return FinalTranscript(i, f"u{i}", opened[0], frame.t, "test", words=words)
        return frame

    return reactivex.compose(ops.filter(lambda f: not isinstance(f, AudioChunk)), ops.map(final))


def voice(name: str, picks: slice) -> np.ndarray:
    x = np.concatenate(speakers.prompts(name)[picks])
    return (x * (0.3 / float(np.abs(x).max()))).astype(np.float32)


def test_two_people_without_a_pause_in_one_utterance_get_both_labels(diarizer: Diarizer) -> None:
    """One VAD utterance holding Allison and then Carlo with no pause between them: the words
    before the change carry Allison's label, those after it Carlo's (the old operator gave the
    whole utterance one label: Carlo's words were Allison's)."""
    first, second = voice("allison", slice(3, 5)), voice("carlo", slice(3, 5))
    frames, spans = utterances_of(
        [voice("allison", slice(6, 8)), voice("carlo", slice(6, 8)), np.concatenate([first, second])]
    )
    out: list[Frame] = []
    reactivex.from_iterable(frames).pipe(
        speaker_labels(finals_with_words_every(0.5), voices=diarizer.voices, threshold=LIVE, max_speakers=8)
    ).subscribe(out.append)
    alone_a, alone_c, both = [f for f in out if isinstance(f, FinalTranscript)]
    assert alone_a.speaker != alone_c.speaker
    change = spans[2][0] + len(first) / 16000
    words = both.words or ()
    before = {w.speaker for w in words if w.end < change - 0.3}
    after = {w.speaker for w in words if w.start > change + 0.3}
    assert before == {alone_a.speaker}, [(w.start, w.speaker) for w in words]
    assert after == {alone_c.speaker}, [(w.start, w.speaker) for w in words]
    assert both.speaker == alone_a.speaker  # the final: the voice that fills most of it
