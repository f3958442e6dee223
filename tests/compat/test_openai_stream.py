"""``stream=true`` on POST /v1/audio/transcriptions, driven by the official ``openai`` SDK."""

from __future__ import annotations

import openai
import pytest

from tests.audio_utils import fixture, fixture_entry, wer
from tests.transports.conftest import ServerThread


def test_stream_true_sends_deltas_then_done(sdk: openai.OpenAI, whisper_server: ServerThread) -> None:
    """A file of four utterances: one delta per utterance as its final is ready, then done."""
    entry = fixture_entry("silences.wav")
    with open(fixture("silences.wav"), "rb") as fh:
        stream = sdk.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=fh, stream=True, language="en"
        )
        events = list(stream)
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and set(types[:-1]) == {"transcript.text.delta"}
    assert len(types) - 1 >= 3  # the file's utterances arrive as separate deltas
    deltas = "".join(e.delta for e in events[:-1])
    done = events[-1]
    assert deltas == done.text
    assert wer(entry["text"], done.text) <= 0.15, done.text
    assert whisper_server.open_sessions() == 0


def test_stream_true_bad_input_in_openai_shape(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(
            model="whisper-1", file=("x.wav", b"RIFF not really a wave file"), stream=True
        )
    assert info.value.body["code"] == "bad_audio"  # type: ignore[index]
    with open(fixture("quick_fox.wav"), "rb") as fh, pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(model="no-such-model", file=fh, stream=True)
    assert info.value.body["code"] == "unknown_provider"  # type: ignore[index]
