"""``asrhub transcribe`` / ``asrhub providers`` as real processes, and the in-process API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asrhub.api import atranscribe_file, blocks, open_hub, transcribe_file
from asrhub.frames import FinalTranscript
from asrhub.settings.schema import Settings
from tests.audio_utils import encode, fixture, fixture_entry, load_wav, wer

ROOT = Path(__file__).resolve().parents[2]


def asrhub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asrhub", *args], cwd=ROOT, capture_output=True, text=True, timeout=240
    )


def test_transcribe_prints_only_the_transcript(tmp_path: Path) -> None:
    samples, rate = load_wav(fixture("address_time.wav"))
    mp3 = tmp_path / "address.mp3"
    mp3.write_bytes(encode(samples, rate, "mp3"))
    done = asrhub("transcribe", str(mp3), str(fixture("quick_fox.wav")), "--format", "text")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert len(lines) == 3 and lines[2] == ""  # one line per file, nothing else on stdout
    assert wer(fixture_entry("address_time.wav")["text"], lines[0]) <= 0.1
    assert wer(fixture_entry("quick_fox.wav")["text"], lines[1]) <= 0.1


def test_transcribe_json_srt_and_output_dir(tmp_path: Path) -> None:
    done = asrhub(
        "transcribe",
        str(fixture("silences.wav")),
        str(fixture("reminder.wav")),
        "-f",
        "srt",
        "-o",
        str(tmp_path),
    )
    assert done.returncode == 0 and done.stdout == "", done.stderr
    srt = (tmp_path / "silences.srt").read_text()
    cues = [block.split("\n") for block in srt.strip().split("\n\n")]
    assert [c[0] for c in cues] == [str(i) for i in range(1, len(cues) + 1)] and len(cues) >= 4
    assert all(" --> " in c[1] and c[2] for c in cues)
    assert wer(fixture_entry("silences.wav")["text"], " ".join(" ".join(c[2:]) for c in cues)) <= 0.1
    assert (tmp_path / "reminder.srt").exists()
    done = asrhub("transcribe", str(fixture("korean.wav")), "--provider", "vosk", "--format", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["provider"] == "vosk" and result["language"] == "ko" and result["segments"]
    assert result["segments"][0]["type"] == "transcript.final" and result["segments"][0]["words"]


def test_transcribe_errors_go_to_stderr(tmp_path: Path) -> None:
    done = asrhub("transcribe", str(fixture("quick_fox.wav")), "--provider", "nonexistent")
    assert done.returncode == 2 and done.stdout == ""
    assert "unknown provider 'nonexistent'" in done.stderr and "whisper" in done.stderr
    # a long path with markup-like brackets: one whole line on stderr, read as text
    bad = tmp_path / ("a-long-directory-name-" * 4) / "not[red]audio[/red].wav"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not audio at all" * 100)
    done = asrhub("transcribe", str(bad), str(fixture("quick_fox.wav")))
    assert done.returncode == 1
    assert any(line.startswith(f"{bad}: cannot ") for line in done.stderr.splitlines()), done.stderr
    assert wer(fixture_entry("quick_fox.wav")["text"], done.stdout) <= 0.1  # the good file still done
    done = asrhub("transcribe", str(fixture("quick_fox.wav")), str(fixture("reminder.wav")), "-f", "vtt")
    assert done.returncode == 2 and "--output-dir" in done.stderr


def test_transcribe_loads_and_logs_only_what_it_uses() -> None:
    """A batch job uses no wake word: none is loaded (seven "wake-word model loaded" lines used to
    go to stderr), and a one-shot command logs at warning unless asked (issue 29 item 6)."""
    done = asrhub("transcribe", str(fixture("quick_fox.wav")))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    done = asrhub("transcribe", str(fixture("quick_fox.wav")), "--log-level", "info")
    assert done.returncode == 0 and "wake-word" not in done.stderr, done.stderr
    assert wer(fixture_entry("quick_fox.wav")["text"], done.stdout) <= 0.1


def test_providers_lists_availability_and_capabilities() -> None:
    done = asrhub("providers", "--set", 'providers.vosk.model="/nonexistent/vosk-model"')
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line and not line.startswith(" ")}
    assert "available" in lines["whisper"] and "batch, partials, word timestamps" in lines["whisper"]
    assert "tiny.en" in lines["whisper"] and "(default)" in lines["whisper"]
    assert "unavailable" in lines["vosk"] and "streaming" in lines["vosk"]
    assert "why: model directory /nonexistent/vosk-model does not exist" in done.stdout
    done = asrhub("providers", "--json")
    rows = {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert rows["whisper"]["available"] and rows["vosk"]["capabilities"]["streaming"]
    assert {"whisper", "vosk", "openai", "none"} <= set(rows)
    assert rows["none"]["available"] and not rows["none"]["default"] and "VAD" in rows["none"]["description"]
    assert "available" in lines["none"]  # the plain listing names it too


def test_transcribe_file_one_call() -> None:
    result = transcribe_file(fixture("long_40s.wav"))
    entry = fixture_entry("long_40s.wav")
    assert wer(entry["text"], result.text) <= 0.05
    assert result.provider == "whisper" and result.duration == pytest.approx(entry["duration"], abs=0.05)
    assert all(isinstance(s, FinalTranscript) for s in result.segments)
    assert [s.segment_id for s in result.segments] == list(range(1, len(result.segments) + 1))


async def test_open_hub_and_long_audio_in_blocks() -> None:
    """A file longer than a block is cut at quiet points; stream times run on across blocks."""
    one, _ = load_wav(fixture("weather_question.wav"))
    audio = np.concatenate([one] * 4)
    cuts = blocks(audio, block_s=5.0, search_s=1.0)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(audio) and len(cuts) >= 3
    async with open_hub(Settings()) as hub:
        progress: list[float] = []
        path = fixture("weather_question.wav")
        single = await atranscribe_file(path, hub=hub)
        assert wer(fixture_entry("weather_question.wav")["text"], single.text) <= 0.1
        from asrhub.api import transcribe_samples

        long = await transcribe_samples(hub, audio, block_s=5.0, progress=lambda d, t: progress.append(d / t))
        assert progress[-1] == 1.0 and len(progress) == len(blocks(audio, 5.0))
        assert wer(" ".join([fixture_entry("weather_question.wav")["text"]] * 4), long.text) <= 0.1
        starts = [w.start for w in long.words]
        assert starts == sorted(starts) and starts[-1] > 3 * len(one) / 16_000
        session = hub.open({"provider": "whisper"})
        assert session.config.provider == "whisper"
        session.close()
