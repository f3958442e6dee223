"""format_transcripts: the session's ``format`` rewrites finals and partials, passes every other
frame untouched and in order, takes a new config from a ``session.updated`` frame from there
on, and never lets an unformatted final through when formatting fails."""

from __future__ import annotations

from typing import Any

import pytest

import asrhub.format.formatter as formatter
from asrhub.config import FormatConfig, SessionConfig
from asrhub.frames import ErrorEvent, FinalTranscript, PartialTranscript, SessionUpdated, SpeechEnded
from asrhub.operators.format_transcripts import format_transcripts

from .frame_utils import run

CARD = "my card is 4242 4242 4242 4242"


def final(segment_id: int, text: str = CARD) -> FinalTranscript:
    return FinalTranscript(segment_id, text, 0.0, 3.0, "whisper", "en")


def updated(config: SessionConfig) -> SessionUpdated:
    return SessionUpdated(config=config.to_dict(), settings=config)


def test_finals_and_partials_formatted_other_frames_untouched() -> None:
    ended = SpeechEnded(3.0)
    frames = [PartialTranscript(1, CARD, 0.0, 2.0), ended, final(1)]
    out, done = run(format_transcripts(config=FormatConfig(redact=("pci",))), frames)
    assert done
    assert [type(f) for f in out] == [PartialTranscript, SpeechEnded, FinalTranscript]
    assert out[1] is ended
    assert isinstance(out[0], PartialTranscript) and out[0].text == "my card is [CREDIT_CARD]"
    assert isinstance(out[2], FinalTranscript) and out[2].text == "my card is [CREDIT_CARD]"


def test_an_update_changes_the_format_from_there_on() -> None:
    update = updated(SessionConfig(format=FormatConfig(redact=("pci",))))
    out, _ = run(format_transcripts(config=FormatConfig()), [final(1), update, final(2)])
    assert [f.text for f in out if isinstance(f, FinalTranscript)] == [CARD, "my card is [CREDIT_CARD]"]
    assert out[1] is update


def test_a_formatting_failure_is_an_error_not_the_clear_text(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any) -> Any:
        raise RuntimeError("FakeFormatter: injected fault")

    import asrhub.operators.format_transcripts as stage

    monkeypatch.setattr(stage, "format_final", broken)
    monkeypatch.setattr(stage, "format_partial", broken)
    frames = [PartialTranscript(1, CARD, 0.0, 2.0), final(1)]
    out, done = run(format_transcripts(config=FormatConfig(redact=("pci",))), frames)
    assert done and len(out) == 1
    assert isinstance(out[0], ErrorEvent) and out[0].segment_id == 1 and not out[0].fatal
    assert formatter.format_final is not broken  # the module itself untouched
