"""The turn-taking test set: sentences with a pause in the middle, and complete short turns.

Built at test time (nothing large is committed), deterministic for a given machine's models:

* **Paused sentences** (``kind="paused"``): a sentence, cut at a word boundary near its middle
  right after a function word ("to", "the", "for", …, where a speaker hesitates and the sentence
  is plainly unfinished), with 400–800 ms of room tone (-60 dBFS) inserted. The sentences are
  the stored English recordings of tests/fixtures (the five single utterances and the sentences
  of ``long_40s.wav`` and ``silences.wav``, cut out by their manifest times) plus fresh ones
  said by piper (``en_US-joe-medium``) and espeak-ng. The boundary: Whisper base's word
  timings on the sentence, refined to the quietest 20 ms from 0.1 s before the word's end to
  0.05 s after the next word's start. It is kept only when that 20 ms is a dip (20 dB below the
  sentence's loud frames), the next word does not begin with a vowel (a weak first syllable can
  hide a quieter stop closure inside the word: "my ap|pointment"), and Whisper base transcribes
  the audio before the cut as ending in the function word and the audio after it as beginning
  with the next word — so the cut falls between two whole words, never inside one (else the
  next candidate nearer the edges; a sentence with no checked boundary is left out).
* **Short turns** (``kind="short"``): "Yes.", "Stop.", "No.", "Thank you.", "Okay." said by
  piper and espeak-ng, and the human recordings of ``/usr/share/sounds/alsa`` ("Front center",
  …) where the system has them.

Every item has ``lead_s`` of room tone before the speech and ``tail_s`` after; ``speech_end``
is where its speech truly ends (stream seconds).

    python tests/perf/turn_set.py [--write DIR]     # print the set (and write WAVs to look at)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

from tests import audio_utils as au  # noqa: E402

RATE = 16_000
PAUSES_S = (0.4, 0.5, 0.6, 0.7, 0.8)
DIP = 10 ** (-20 / 10)
"""A cut point's 20 ms must be at least 20 dB below the sentence's loud frames (90th percentile
of frame energy): between words, not inside one."""
FUNCTION_WORDS = frozenset(
    "the a an to of and in at for with my your on from before will can is was that about how "
    "this our their his her its into by".split()
)
FRESH = (
    ("piper", "I would like to book a table for two at seven tonight."),
    ("piper", "Could you please send the report to my manager before lunch?"),
    ("piper", "We are going to the beach with our friends on Saturday."),
    ("piper", "Turn the volume down and play some quiet music in the bedroom."),
    ("espeak", "I need to buy some milk and a loaf of bread on the way home."),
    ("espeak", "Please remind me to water the plants in the garden tomorrow."),
    ("piper", "Can you tell me the way to the nearest train station from here?"),
    ("piper", "My sister is coming to visit us for a few days next week."),
    ("piper", "Set an alarm for six thirty and turn the heating on at six."),
    ("piper", "The meeting was moved to the large room on the second floor."),
    ("piper", "I think we should leave before the traffic gets too bad tonight."),
    ("espeak", "Add the new phone number to my contacts and call it later."),
    ("espeak", "We will need more chairs for the party on Sunday afternoon."),
    ("espeak", "Tell the driver to wait for me by the main door of the hotel."),
    ("espeak", "The children played with the dog in the park until dinner."),
    ("espeak", "Send a message to the team that the demo starts at ten."),
)
SHORT = (
    ("piper", "Yes."),
    ("piper", "Stop."),
    ("piper", "No."),
    ("piper", "Thank you."),
    ("piper", "Okay."),
    ("espeak", "Yes."),
    ("espeak", "Stop."),
)
ALSA = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Side_Left", "Side_Right")


@dataclass(frozen=True)
class Item:
    name: str
    kind: str  # "paused" | "short"
    text: str
    audio: np.ndarray
    speech_end: float
    """Stream seconds where the speech ends."""
    pause_at: float | None = None
    """Paused sentences: where the inserted pause begins."""
    pause_s: float = 0.0


def stored_sentences() -> list[tuple[str, str, np.ndarray]]:
    """(name, text, speech) of every English sentence in tests/fixtures."""
    out = []
    for entry in au.manifest()["files"]:
        if entry["language"] != "en" or entry["kind"] not in ("utterance", "long", "silences"):
            continue
        x, _ = au.load_wav(au.fixture(entry["file"]))
        for i, seg in enumerate(entry["segments"]):
            name = f"{entry['file'].removesuffix('.wav')}#{i}"
            out.append((name, seg["text"], x[int(seg["start"] * RATE) : int(seg["end"] * RATE)]))
    return out


class _Voices:
    """piper (loaded on first use) and espeak-ng, by name."""

    def __init__(self) -> None:
        self.piper: object = None

    def __getitem__(self, name: str) -> object:
        from make_fixtures import Piper, espeak

        if name == "espeak":
            return lambda text: espeak(text, "en-us", speed=150)
        if self.piper is None:
            self.piper = Piper()
        return self.piper.say  # type: ignore[attr-defined]


def _words(model: object, audio: np.ndarray) -> list[str]:
    segments, _ = model.transcribe(audio, language="en", beam_size=1)  # type: ignore[attr-defined]
    text = " ".join(s.text for s in segments).replace("...", " ").replace("…", " ")
    return [w.strip(",.?!-\"'").lower() for w in text.split() if w.strip(",.?!-\"'")]


VOWELS = frozenset("aeiou")
NUMBERS = dict(
    zip(
        "0 1 2 3 4 5 6 7 8 9 10".split(),
        "zero one two three four five six seven eight nine ten".split(),
        strict=True,
    )
)


def _plain(word: str) -> str:
    word = word.strip().strip(",.?!-\"'").lower()
    return NUMBERS.get(word, word)


def _same(a: str, b: str) -> bool:
    """Two transcriptions of one word ("2"/"two", "plant"/"plants")."""
    a, b = _plain(a), _plain(b)
    return a == b or (min(len(a), len(b)) >= 4 and (a.startswith(b) or b.startswith(a)))


def _pause_point(model: object, speech: np.ndarray) -> int | None:
    """Sample index of a word boundary right after a function word, nearest the middle of the
    sentence (between its second and second-to-last word), checked: Whisper transcribes the
    audio before it as ending in that function word. None: no such boundary."""
    segments, _ = model.transcribe(speech, language="en", word_timestamps=True, beam_size=1)  # type: ignore[attr-defined]
    words = [w for s in segments for w in s.words]
    energy = np.square(speech[: len(speech) // 320 * 320].reshape(-1, 320), dtype=np.float64).mean(axis=1)
    loud = float(np.percentile(energy, 90))
    candidates = sorted(range(1, len(words) - 2), key=lambda i: abs(i - len(words) / 2))
    for i in candidates:
        word = _plain(words[i].word)
        if word not in FUNCTION_WORDS:
            continue
        following = _plain(words[i + 1].word)
        if following[:1] in VOWELS:
            continue  # a weak vowel onset ("my ap|pointment"): the quietest spot may be inside it
        lo, hi = int((words[i].end - 0.1) / 0.02), int((words[i + 1].start + 0.05) / 0.02)
        lo, hi = max(lo, 1), min(hi, len(energy) - 1)
        if hi <= lo:
            continue
        at = lo + int(np.argmin(energy[lo:hi]))  # the quietest 20 ms near the boundary
        if energy[at] > DIP * loud:
            continue  # no dip between the words: the cut would fall inside the sound
        cut = at * 320 + 160
        said = _words(model, speech[:cut])
        if not (said and said[-1] == word and len(said) >= 2):
            continue
        after = _words(model, speech[cut:])
        if after and _same(after[0], following):  # the next word is whole after the cut
            return cut
    return None


def build(lead_s: float = 0.5, tail_s: float = 2.6, only: tuple[str, ...] | None = None) -> list[Item]:
    """The whole set (takes ~30–60 s: synthesis and a few Whisper base passes per sentence);
    ``only``: just the items of these names (``quick_fox#0``, ``piper:Yes.``, …)."""
    from faster_whisper import WhisperModel

    from asrhub.providers.whisper_model import base_model_dir

    model = WhisperModel(str(base_model_dir()), device="cpu", compute_type="int8", cpu_threads=1)
    seed = 100
    voices = _Voices()
    sentences = [s for s in stored_sentences() if only is None or s[0] in only]
    sentences += [
        (f"{v}#{i}", text, voices[v](text))  # type: ignore[operator]
        for i, (v, text) in enumerate(FRESH)
        if only is None or f"{v}#{i}" in only
    ]
    items: list[Item] = []
    for name, text, speech in sentences:
        n = sum(map(ord, name))  # the pause length follows the item, whatever else is built
        cut = _pause_point(model, speech)
        if cut is None:
            continue
        pause = PAUSES_S[n % len(PAUSES_S)]
        seed = 100 + n
        audio = np.concatenate(
            [
                au.room_noise(lead_s, seed=seed),
                speech[:cut],
                au.room_noise(pause, seed=seed + 1000),
                speech[cut:],
                au.room_noise(tail_s, seed=seed + 2000),
            ]
        ).astype(np.float32)
        end = lead_s + len(speech) / RATE + pause
        items.append(Item(name, "paused", text, audio, end, lead_s + cut / RATE, pause))
    shorts = [
        (f"{v}:{text}", text, voices[v](text))  # type: ignore[operator]
        for v, text in SHORT
        if only is None or f"{v}:{text}" in only
    ]
    for name in ALSA:
        path = Path("/usr/share/sounds/alsa") / f"{name}.wav"
        if path.is_file() and (only is None or f"alsa:{name}" in only):
            x, rate = au.load_wav(path)
            shorts.append((f"alsa:{name}", name.replace("_", " "), _trim(au.resample(x, rate, RATE))))
    for name, text, speech in shorts:
        seed = 5000 + sum(map(ord, name))
        audio = np.concatenate(
            [au.room_noise(lead_s, seed=seed), speech, au.room_noise(tail_s, seed=seed + 1000)]
        ).astype(np.float32)
        items.append(Item(name, "short", text, audio, lead_s + len(speech) / RATE))
    return items


def _trim(x: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > np.max(np.abs(x)) * 10 ** (threshold_db / 20))
    return x[max(0, loud[0] - 800) : loud[-1] + 800] if len(loud) else x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", type=Path, help="also write each item as a WAV here")
    args = parser.parse_args()
    for item in build():
        where = f" pause {item.pause_s:.1f} s at {item.pause_at:.2f} s" if item.pause_at else ""
        print(f"{item.kind:6} {item.name:22} {len(item.audio) / RATE:5.2f} s{where}  {item.text}")
        if args.write:
            args.write.mkdir(parents=True, exist_ok=True)
            au.write_wav(args.write / f"{item.name.replace(':', '_').replace('#', '_')}.wav", item.audio)


if __name__ == "__main__":
    main()
