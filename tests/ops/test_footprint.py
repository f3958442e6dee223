"""A hub loads what its sessions use, when the first one needs it (issue 29, item 7): the
wake-word models (~50 MB of ONNX Runtime sessions) and the resampler's ``scipy.signal`` (~65 MB)
are not loaded at start-up, nor by 16 kHz sessions without a wake word; the first session that
needs them loads them off the event loop before its chain is built, and works.

In a fresh interpreter (what is imported is process-wide), on a real hub (``build_hub``, VAD
only) fed a real recording."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, json, sys
import numpy as np
from asrhub.settings.schema import Settings
from asrhub.wiring import build_hub
from tests.audio_utils import fixture, load_wav, pcm16_bytes

def loaded():
    return {"scipy.signal": "scipy.signal" in sys.modules, "onnxruntime": "onnxruntime" in sys.modules}

async def run(hub, config, samples):
    session = await hub.open_async(config)
    events = []
    session.events.subscribe(lambda e: events.append(e.type))
    pcm = pcm16_bytes(samples)
    step = len(pcm) // 20 & ~1
    for i in range(0, len(pcm), step):
        await session.feed(pcm[i : i + step])
    await session.end()
    return events

async def main():
    seen = {}
    hub = build_hub(Settings(default_provider="none"))
    await hub.start()
    seen["started"] = loaded()
    speech, _ = load_wav(fixture("hey_jarvis_weather.wav"))
    events = await run(hub, {"provider": "none"}, speech)
    seen["16 kHz, no wake word"] = {**loaded(), "speech": "vad.speech_started" in events}
    wake = {"enabled": True, "names": ["hey_jarvis"]}
    config = {"provider": "none", "audio": {"sample_rate": 48000}, "wakeword": wake}
    at_48k = np.interp(np.arange(3 * len(speech)) / 3, np.arange(len(speech)), speech)  # no scipy here
    events = await run(hub, config, at_48k.astype(np.float32))
    seen["48 kHz, wake word"] = {**loaded(), "detected": "wakeword.detected" in events}
    await hub.shutdown(0.0)
    print(json.dumps(seen))

asyncio.run(main())
"""


def test_a_hub_loads_wake_words_and_the_resampler_for_the_first_session_that_needs_them() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["started"] == {"scipy.signal": False, "onnxruntime": False}
    assert seen["16 kHz, no wake word"] == {"scipy.signal": False, "onnxruntime": False, "speech": True}
    assert seen["48 kHz, wake word"] == {"scipy.signal": True, "onnxruntime": True, "detected": True}
