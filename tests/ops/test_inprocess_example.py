"""examples/inprocess.py runs as documented, with VAD only and with a real engine. (The code blocks
of docs/inprocess.md run as written in tests/docs/test_snippets.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.audio_utils import fixture, fixture_entry, wer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "inprocess.py"


def run_example(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=240, check=True
    )
    return done.stdout.splitlines()


def test_vad_only_both_subscribers_see_every_event() -> None:
    out = run_example(str(fixture("silences.wav")), "--provider", "none")
    utterances = len(fixture_entry("silences.wav")["segments"])
    assert sum(line.startswith("[observable] speech started") for line in out) == utterances
    assert sum(line.startswith("[observable] speech ended") for line in out) == utterances
    assert out.count("[async for]  vad.speech_started") == utterances
    assert out.count("[async for]  vad.speech_ended") == utterances
    assert out[-2:] == ["[async for]  session.closed", "session closed: end"]


def test_whisper_transcript_through_the_async_iterator() -> None:
    out = run_example(str(fixture("quick_fox.wav")), "--provider", "whisper", "--language", "en")
    finals = [line.split(" s: ", 1)[1] for line in out if line.startswith("[async for]  final ")]
    assert len(finals) == 1
    assert wer(fixture_entry("quick_fox.wav")["text"], finals[0]) < 0.2
    assert any(line.startswith("[observable] speech started") for line in out)
