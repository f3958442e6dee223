"""Conversations of 2–4 real people, built from single-speaker recordings in Debian packages.

The voices are the Asterisk PBX prompts (``scripts/setup.sh`` installs the packages; licences:
CC-BY-SA-3.0, ``/usr/share/doc/<package>/copyright``): Allison Smith (US English, female), June
Wallack (Canadian French, female), Carlo (Italian, male), the Russian IVR voice (female) and Paola
Dal Zot (Italian, female) — five different people, each recorded in a studio at 8 kHz. The
recordings are read in place, never copied into the repository.

:func:`conversation` joins prompts of the chosen people into turns (seeded, so every run builds
the same audio) and returns the reference: who spoke when, each prompt's speech from its first to
its last loud sample. With ``overlap`` the next turn starts before the previous one ends.
"""

from __future__ import annotations

import random
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly

RATE = 16000
SOUNDS = Path("/usr/share/asterisk/sounds")
VOICES = {
    "allison": ("asterisk-core-sounds-en-wav", "en_US_f_Allison"),
    "june": ("asterisk-core-sounds-fr-wav", "fr_CA_f_June"),
    "carlo": ("asterisk-core-sounds-it-wav", "it_IT_m_Carlo"),
    "irina": ("asterisk-core-sounds-ru-wav", "ru_RU_f_IvrvoiceRU"),
    "paola": ("asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi"),
}
"""name → (Debian package, folder under /usr/share/asterisk/sounds). ``irina`` is our name for
the unnamed Russian voice."""
ALSA = Path("/usr/share/sounds/alsa")
"""A sixth person, in English: the channel names ``speaker-test`` plays (alsa-utils, GPL-2),
clips of about a second (``alsa``; not among the voices :func:`conversation` draws from)."""

F32 = npt.NDArray[np.float32]
BRIDGE_S = 0.25
"""Pauses shorter than this inside one person's turn belong to the turn in the reference (as a
human annotator marks turns)."""


def available() -> bool:
    return all((SOUNDS / folder).is_dir() for _, folder in VOICES.values()) and ALSA.is_dir()


def _read(path: Path) -> F32:
    with wave.open(str(path), "rb") as w:
        rate, raw = w.getframerate(), w.readframes(w.getnframes())
        channels = w.getnchannels()
    x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    if rate != RATE:
        x = resample_poly(x, RATE, rate).astype(np.float32)
    return x


def _trimmed(x: F32) -> F32:
    """The prompt from its first to its last sample within 30 dB of its peak (20 ms frames)."""
    frame = 320
    n = len(x) // frame
    if n == 0:
        return x
    energy = np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame)), axis=1))
    loud = np.flatnonzero(energy > energy.max() * 10 ** (-30 / 20))
    return x[loud[0] * frame : (loud[-1] + 1) * frame]


def recording(path: object) -> F32:
    """One real recording (a path), trimmed to its speech, 16 kHz mono float32."""
    return _trimmed(_read(Path(str(path))))


@cache
def prompts(name: str) -> tuple[F32, ...]:
    """Every prompt of one voice, trimmed, 16 kHz, in file-name order (0.4–6 s ones only)."""
    folder = ALSA if name == "alsa" else SOUNDS / VOICES[name][1]
    out = []
    for path in sorted(folder.glob("*.wav")):
        if path.name == "Noise.wav":
            continue
        x = _trimmed(_read(path))
        if 0.4 * RATE <= len(x) <= 6 * RATE:
            out.append(x)
    return tuple(out)


@dataclass(frozen=True)
class Conversation:
    name: str
    samples: F32
    reference: tuple[tuple[float, float, str], ...]
    """(start, end, speaker): each turn (prompts of one person joined across pauses under
    :data:`BRIDGE_S`), in order of start."""
    speakers: tuple[str, ...]

    @property
    def duration(self) -> float:
        return len(self.samples) / RATE

    def speaker_at(self, t: float) -> str | None:
        """Who the reference says speaks at ``t`` (the later turn where two overlap)."""
        who = None
        for start, end, speaker in self.reference:
            if start <= t <= end:
                who = speaker
        return who


def conversation(
    seed: int,
    n_speakers: int,
    *,
    turns: int = 8,
    turn_s: tuple[float, float] = (2.0, 5.0),
    gap_s: tuple[float, float] = (0.3, 0.8),
    overlap_s: tuple[float, float] | None = None,
    voices: tuple[str, ...] | None = None,
) -> Conversation:
    """A seeded conversation of ``n_speakers`` people taking ``turns`` turns (every person
    speaks; never twice in a row). ``overlap_s``: every other turn starts this long before the
    previous one ends (instead of after a gap)."""
    rng = random.Random(seed)
    people = list(voices) if voices else rng.sample(sorted(VOICES), n_speakers)
    order = rng.sample(people, len(people))
    while len(order) < turns:
        order.append(rng.choice([p for p in people if p != order[-1]]))
    pieces: list[tuple[int, F32, str]] = []  # (start sample, audio, speaker)
    cursor = int(0.5 * RATE)
    for k, speaker in enumerate(order):
        if k:
            if overlap_s is not None and k % 2 == 1:
                cursor -= int(rng.uniform(*overlap_s) * RATE)
            else:
                cursor += int(rng.uniform(*gap_s) * RATE)
        target = rng.uniform(*turn_s) * RATE
        said = 0
        pool = prompts(speaker)
        while said < target:
            clip = pool[rng.randrange(len(pool))]
            if said and said + len(clip) > target + 1.5 * RATE:
                break
            pieces.append((cursor, clip, speaker))
            step = len(clip) + int(rng.uniform(0.08, 0.2) * RATE)
            cursor += step
            said += step
        cursor = pieces[-1][0] + len(pieces[-1][1])
    total = max(s + len(x) for s, x, _ in pieces) + int(0.5 * RATE)
    audio = np.zeros(total, np.float32)
    reference: list[tuple[float, float, str]] = []
    for start, clip, speaker in pieces:
        gain = 10 ** (rng.uniform(-3, 3) / 20) * 0.3 / max(float(np.abs(clip).max()), 1e-6)
        audio[start : start + len(clip)] += clip * gain
        begin, end = round(start / RATE, 3), round((start + len(clip)) / RATE, 3)
        if reference and reference[-1][2] == speaker and begin - reference[-1][1] < BRIDGE_S:
            begin = reference.pop()[0]  # one turn: its short pauses are not marked as silence
        reference.append((begin, end, speaker))
    name = (
        f"{n_speakers}spk-s{seed}"
        + ("-overlap" if overlap_s else "")
        + (f"-turn{turn_s[0]:g}" if turn_s[0] < 2 else "")
    )
    return Conversation(name, np.clip(audio, -1, 1), tuple(reference), tuple(people))
