"""The pure parts of resume-anywhere: the continuation shift, the byte geometry, the client's
audio ledger (the Redis-backed paths are tested against real servers in tests/cluster)."""

from __future__ import annotations

import secrets

import pytest
import reactivex

from asrhub.client import AudioLedger
from asrhub.cluster.resume import continuation, entry, parse_entry, pcm_position
from asrhub.config import parse_session_config
from asrhub.errors import HubError
from asrhub.frames import (
    ErrorEvent,
    FinalTranscript,
    PartialTranscript,
    RawAudio,
    SessionClosed,
    SpeechEnded,
    SpeechStarted,
    Word,
)


def test_continuation_shifts_segment_ids_and_times_and_passes_the_rest() -> None:
    final = FinalTranscript(1, "hi there", 0.5, 1.5, "whisper", "en", (Word("hi", 0.5, 0.9, 0.9),))
    frames = [
        SpeechStarted(0.4),
        PartialTranscript(1, "hi", 0.5, 1.0),
        final,
        SpeechEnded(1.6),
        ErrorEvent("provider_failed", "x", segment_id=2),
        ErrorEvent("bad_message", "y"),
        RawAudio(b"\0\0"),
        SessionClosed("end"),
    ]
    out: list[object] = []
    reactivex.from_iterable(frames).pipe(continuation(3, 10.0)).subscribe(out.append)
    assert out[0] == SpeechStarted(10.4)
    assert out[1] == PartialTranscript(4, "hi", 10.5, 11.0)
    shifted = out[2]
    assert isinstance(shifted, FinalTranscript)
    assert (shifted.segment_id, shifted.start, shifted.end) == (4, 10.5, 11.5)
    assert shifted.words == (Word("hi", 10.5, 10.9, 0.9),)
    assert out[3] == SpeechEnded(11.6)
    assert out[4] == ErrorEvent("provider_failed", "x", segment_id=5)
    assert out[5:] == frames[5:]


def test_pcm_position_maps_stream_time_to_whole_frames() -> None:
    stereo = pcm_position(
        parse_session_config({"audio": {"encoding": "pcm_s16le", "sample_rate": 48000, "channels": 2}})
    )
    assert stereo is not None and stereo.bytes_per_second == 192_000 and stereo.frame_bytes == 4
    assert stereo.offset(1.0) == 192_000 and stereo.offset(0.5000001) == 96_000
    f32 = pcm_position(parse_session_config({"audio": {"encoding": "pcm_f32le"}}))
    assert f32 is not None and f32.offset(0.25) == 16_000
    assert pcm_position(parse_session_config({"audio": {"encoding": "opus"}})) is None


def test_log_entries_round_trip() -> None:
    final = FinalTranscript(7, "x", 1.0, 2.0, "whisper", None, None)
    assert entry(final).startswith("7|") and parse_entry(entry(final)) == final
    closed = SessionClosed("end")
    assert entry(closed).startswith("-1|") and parse_entry(entry(closed).encode()) == closed


def test_audio_ledger_keeps_what_no_final_confirmed_within_its_bound() -> None:
    ledger = AudioLedger({"encoding": "pcm_s16le", "sample_rate": 16000}, max_seconds=2.0)
    ledger.append(bytes(range(256)) * 125)  # 1 s
    ledger.confirm_until(0.25)  # a final ended at 0.25 s: bytes before 8000 are the hub's
    assert ledger.base == 8000 and ledger.end == 32_000
    assert ledger.since(16_000) == (bytes(range(256)) * 125)[16_000:]
    with pytest.raises(HubError):
        ledger.since(4000)  # dropped already
    ledger.append(bytes(64_000))  # 2 more seconds: the bound (2 s = 64,000 bytes) drops the oldest
    assert ledger.end - ledger.base == 64_000 and ledger.base == 32_000
    ledger.confirm_until(0.1)  # an older final moves nothing
    assert ledger.base == 32_000


def test_resume_tokens_are_checked_against_the_format_the_hub_issues() -> None:
    from asrhub.session.resume import TOKEN_BYTES, valid_token

    issued = secrets.token_urlsafe(TOKEN_BYTES)
    assert valid_token(issued)
    for bad in (issued + ":log", issued[:-1], issued + "x", "*", "", "../" + issued[3:], issued[:-1] + "="):
        assert not valid_token(bad), bad
