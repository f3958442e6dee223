#!/usr/bin/env python3
"""Use the hub from Python, without a server: push audio into a session and subscribe to it.

    python examples/inprocess.py AUDIO.wav [--provider whisper|vosk|none] [--language en]

The same session is read two ways at once:

* ``session.events`` is a reactivex Observable: operators (``filter``, ``map``, …) and a
  callback that runs on the event loop the moment each event exists;
* ``session.iter_events()`` is an async iterator over a bounded per-reader queue (the one every
  network transport uses): a slow reader loses superseded partials first, never finals.

Audio is pushed the way a microphone would: 100 ms PCM16 frames, each ``feed`` awaited, so
the script slows down when the engine is busy instead of queueing audio in memory.
See docs/inprocess.md.
"""

from __future__ import annotations

import argparse
import asyncio
import wave

from reactivex import operators as ops

from asrhub.api import open_hub
from asrhub.frames import Event, FinalTranscript, PartialTranscript, SpeechEnded, SpeechStarted
from asrhub.logging import configure as configure_logging
from asrhub.settings.schema import LogSettings, Settings


def read_wav(path: str) -> tuple[bytes, int, int]:
    """A PCM16 WAV's frames, sample rate and channel count (no decoding needed)."""
    with wave.open(path, "rb") as wav:
        if wav.getsampwidth() != 2:
            raise SystemExit(f"{path}: expected 16-bit PCM (any rate, any channels)")
        return wav.readframes(wav.getnframes()), wav.getframerate(), wav.getnchannels()


async def run(path: str, provider: str, language: str | None) -> list[FinalTranscript]:
    pcm, rate, channels = read_wav(path)
    config = {
        "provider": provider,
        "language": language,
        "audio": {"encoding": "pcm_s16le", "sample_rate": rate, "channels": channels},
    }
    finals: list[FinalTranscript] = []

    async with open_hub(Settings(default_provider=provider)) as hub:
        session = hub.open(config)

        # 1. Observable: compose reactivex operators, get a callback per event.
        def on_speech(event: Event) -> None:
            state = "started" if isinstance(event, SpeechStarted) else "ended"
            print(f"[observable] speech {state} at {event.t:.2f} s")  # type: ignore[attr-defined]

        subscription = session.events.pipe(
            ops.filter(lambda e: isinstance(e, SpeechStarted | SpeechEnded))
        ).subscribe(on_speech)

        # 2. async for: a bounded queue drained at this coroutine's own pace.
        async def read() -> None:
            async for event in session.iter_events():
                if isinstance(event, PartialTranscript):
                    print(f"[async for]  partial: {event.text}")
                elif isinstance(event, FinalTranscript):
                    finals.append(event)
                    print(f"[async for]  final {event.start:.2f}-{event.end:.2f} s: {event.text}")
                else:
                    print(f"[async for]  {event.type}")

        reader = asyncio.create_task(read())
        await asyncio.sleep(0)  # let the reader subscribe before the audio: no replay for it

        frame = rate // 10 * 2 * channels  # 100 ms
        for i in range(0, len(pcm), frame):
            await session.feed(pcm[i : i + frame])  # returns when the session can take more
        reason = await session.end()  # flush: every utterance gets its final
        await reader
        subscription.dispose()
        print(f"session closed: {reason}")
    return finals


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("audio", help="a 16-bit PCM WAV file")
    parser.add_argument("--provider", default="whisper", help="whisper, vosk, … or none (VAD only)")
    parser.add_argument("--language", default=None)
    args = parser.parse_args()
    configure_logging(LogSettings(level="warning"))  # the application configures logs, once
    asyncio.run(run(args.audio, args.provider, args.language))


if __name__ == "__main__":
    main()
