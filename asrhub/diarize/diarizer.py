"""A recording's speaker turns, and one utterance's speaker embedding.

File diarization, in four steps, all on the calling (worker) thread:

1. speech regions (:func:`~.speech.speech_regions`);
2. each region's feature frames (the encoder's: :mod:`.encoder`) cut into windows (1.5 s for
   CAM++, 1.6 s for GE2E) every ``hop_frames`` of the encoder's :class:`~.encoder.Tuning` (a
   region shorter than a window is repeated to fill one), one embedding per window (batched);
3. the windows clustered (:func:`~.cluster.cluster`): the speaker count is found, within the
   caller's bounds — and never below the most people heard within one 10 s window
   (:meth:`Diarizer.fewest_speakers`: segmentation-3.0's voices there, checked by the encoder):
   two people who talk over each other are still two;
4. each 10 ms frame of a region takes the label of the window centred nearest to it; runs of
   one label are the turns.

A window never spans two regions, so a turn change at a pause of ≥ 0.3 s is exact to the VAD's
30 ms; a change without a pause is placed to within about half a hop. Overlapped speech gets one
speaker (the louder, usually). Cost: CAM++ one window per 0.75 s of speech (~20 ms of one core
each), GE2E one per 0.4 s (~11 ms each): docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .cluster import MAX_ITEMS, cluster, first_appearance
from .encoder import DEFAULT, TUNINGS, SpeakerEncoder, Tuning, load_encoder
from .segmentation import WINDOW as WINDOW_SAMPLES
from .segmentation import Segmenter
from .segmentation import model_dir as segmentation_dir
from .speech import speech_regions

F32 = npt.NDArray[np.float32]

RATE = 16000
HOP = 160
"""Samples of one 10 ms feature frame."""
FILE_THRESHOLD = TUNINGS[DEFAULT].file_threshold
"""Cosine distance at which clusters stop merging (average linkage), for the default encoder
(each encoder's: :data:`~.encoder.TUNINGS`), tuned on the tuning conversations."""
LIVE_THRESHOLD = TUNINGS[DEFAULT].live_threshold
"""Live: the clustering threshold on a session's utterance embeddings (:mod:`.tracker`)."""
SAME_VOICE = TUNINGS[DEFAULT].same_voice
"""Two voices the segmentation found in one utterance whose embeddings are closer than this
(cosine distance) are one person (:meth:`Diarizer.voices`); tuned on conversations of seeds
30–41 (none of the benchmark's): docs/diarization.md."""
OVERLAP_S = 0.5
"""Two voices at once for this long within 10 s: two people (on the tuning conversations: 0.9–1.9 s
in every window with overlapping turns, never more than 0.4 s in conversations without overlap,
none in monologues)."""
BATCH = 64
"""Windows embedded in one call. Speech is clustered in chunks (``chunk_frames``: the mean of
their windows), steadier than single windows; each window then joins the nearest cluster
centroid, which places changes inside a chunk."""
MIN_SHARE = 0.1
MIN_SPEAKER_S = 4.8
"""A cluster with less speech than this (and under :data:`MIN_SHARE` of it) is an outlier."""


@dataclass(frozen=True, slots=True)
class Turn:
    start: float
    end: float
    speaker: int
    confidence: float = 1.0
    """How sure the speaker is (0–1): the mean, over the turn's frames, of the softmax (at the
    encoder's similarity scale) of this speaker's centroid for the window nearest the frame."""


@dataclass(frozen=True, slots=True)
class Voice:
    """One person's part of a stretch of audio: where they speak (seconds from its start) and
    the embedding of all of it."""

    spans: tuple[tuple[float, float], ...]
    embedding: F32

    def overlap(self, start: float, end: float) -> float:
        return sum(max(0.0, min(end, b) - max(start, a)) for a, b in self.spans)

    def distance(self, start: float, end: float) -> float:
        mid = (start + end) / 2
        return min((0.0 if a <= mid <= b else min(abs(a - mid), abs(b - mid))) for a, b in self.spans)


def _filled(x: F32, n: int) -> F32:
    """``x`` repeated to at least ``n`` samples (a short stretch of speech fills one window)."""
    if len(x) >= n or len(x) == 0:
        return x
    return np.tile(x, int(np.ceil(n / len(x))))


class Diarizer:
    """The loaded encoder (and segmentation model) and the diarization steps; thread-safe (no
    state between calls)."""

    def __init__(
        self,
        encoder: SpeakerEncoder,
        segmenter: Segmenter,
        *,
        threshold: float | None = None,
        tuning: Tuning | None = None,
    ) -> None:
        self.encoder = encoder
        self.segmenter = segmenter
        self.tuning = tuning or TUNINGS[encoder.name]
        self.threshold = self.tuning.file_threshold if threshold is None else threshold

    @classmethod
    def load(
        cls, directory: str | Path | None = None, *, encoder: str = DEFAULT, threshold: float | None = None
    ) -> Diarizer:
        """Encoder ``encoder`` from ``directory`` (default: its folder under the model dir,
        :func:`~.encoder.model_dir`); segmentation-3.0 from the same folder when it is there,
        else from :func:`~.segmentation.model_dir`."""
        loaded = load_encoder(encoder, directory)
        beside = Path(directory) / "segmentation-3.0.onnx" if directory else None
        segmenter = Segmenter.load(beside.parent if beside and beside.is_file() else segmentation_dir())
        return cls(loaded, segmenter, threshold=threshold)

    def _embed(self, windows: list[F32]) -> F32:
        if not windows:
            return np.zeros((0, self.encoder.dim), np.float32)
        return np.concatenate(
            [
                self.encoder.embed_windows(np.stack(windows[i : i + BATCH]))
                for i in range(0, len(windows), BATCH)
            ]
        )

    def embed(self, samples: F32) -> F32 | None:
        """One utterance's embedding (the normalised mean of its windows' of at most
        ``utterance_frames``, at half that hop), or None when it has no speech."""
        regions = speech_regions(samples)
        if not regions:
            return None
        speech = np.concatenate([samples[a:b] for a, b in regions])
        frames = self.encoder.features(_filled(speech, self.encoder.window_samples))
        size = max(self.encoder.window_frames, min(self.tuning.utterance_frames, len(frames)))
        if len(frames) < size:
            return None
        last = len(frames) - size
        starts = sorted({*range(0, last + 1, max(1, size // 2)), last})
        embeddings = self._embed([frames[s : s + size] for s in starts])
        mean = embeddings.mean(axis=0)
        out: F32 = (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32)
        return out

    def voices(self, samples: F32, *, merge_below: float | None = None) -> list[Voice]:
        """The people in one stretch of audio (a live utterance), in order of first speech: the
        segmentation's voices (:meth:`~.segmentation.Segmenter.runs`), each embedded from all its
        speech; two whose embeddings are closer than ``merge_below`` (cosine distance) are one
        person split by the network's doubt, and are embedded together. One voice covers the
        whole stretch. Empty when there is no speech for the encoder. ``merge_below`` defaults
        to the encoder's ``same_voice``."""
        below = self.tuning.same_voice if merge_below is None else merge_below
        duration = len(samples) / RATE
        runs = self.segmenter.runs(samples)
        names = list(dict.fromkeys(v for _, _, v in runs))
        parts: list[tuple[list[tuple[int, int]], F32]] = []
        if len(names) > 1:
            for name in names:
                mine = [(a, b) for a, b, v in runs if v == name]
                e = self.embed(np.concatenate([samples[a:b] for a, b in mine]))
                if e is not None:
                    parts.append((mine, e))
            parts = self._merged(parts, below)
        if len(parts) <= 1:
            whole = self.embed(samples)
            return [] if whole is None else [Voice(((0.0, duration),), whole)]
        return [Voice(tuple((a / RATE, b / RATE) for a, b in spans), e) for spans, e in parts]

    @staticmethod
    def _merged(
        parts: list[tuple[list[tuple[int, int]], F32]], below: float
    ) -> list[tuple[list[tuple[int, int]], F32]]:
        """Closest voices joined while closer than ``below`` (their embeddings averaged,
        weighted by speech length: the mean of their windows, near enough)."""
        while len(parts) > 1:
            emb = np.stack([e for _, e in parts])
            distance = 1.0 - emb @ emb.T
            np.fill_diagonal(distance, np.inf)
            i, j = np.unravel_index(int(np.argmin(distance)), distance.shape)
            if distance[i, j] >= below:
                return parts
            i, j = min(i, j), max(i, j)
            spans = sorted(parts[i][0] + parts[j][0])
            weights = np.array([sum(b - a for a, b in parts[k][0]) for k in (i, j)], np.float64)
            mean = weights @ np.stack([parts[i][1], parts[j][1]]).astype(np.float64)
            merged = (spans, (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32))
            parts = [p for k, p in enumerate(parts) if k not in (i, j)]
            parts.insert(i, merged)
        return parts

    def fewest_speakers(self, samples: F32) -> int:
        """The most people heard within one 10 s window, by segmentation-3.0
        (:meth:`~.segmentation.Segmenter.local_counts`): two when two voices overlap for
        :data:`OVERLAP_S` or more; else its voices there less those the encoder finds to be one
        person (:meth:`voices`; only windows that could raise the count are embedded). Nobody
        can have fewer people in the whole recording."""
        counts = self.segmenter.local_counts(samples)
        best = 1 if len(samples) else 0
        if any(overlap >= OVERLAP_S for _, _, overlap in counts):
            best = 2
        for start, count, _ in sorted(counts, key=lambda c: -c[1]):
            if count <= best:
                break
            best = max(best, len(self.voices(samples[start : start + WINDOW_SAMPLES])))
        return best

    def diarize(self, samples: F32, *, min_speakers: int = 1, max_speakers: int = 8) -> list[Turn]:
        """Speaker turns of 16 kHz audio (times in seconds), labels 0, 1, … by first appearance."""
        regions = speech_regions(samples)
        speech_frames = sum(b - a for a, b in regions) // HOP
        hop = max(self.tuning.hop_frames, int(np.ceil(speech_frames / MAX_ITEMS)) + 1)
        size = self.encoder.window_frames
        mels: list[F32] = []
        owner: list[int] = []  # region of each window
        centre: list[float] = []  # centre frame of each window, within its region
        chunk_of: list[int] = []  # chunk of each window
        chunks = 0
        for r, (a, b) in enumerate(regions):
            frames = self.encoder.features(_filled(samples[a:b], self.encoder.window_samples))
            length = (b - a) // HOP
            last = max(0, len(frames) - size)
            starts = sorted({*range(0, last + 1, hop), last})
            per_chunk = max(1, round(len(starts) / max(1, round(length / self.tuning.chunk_frames))))
            for k, s in enumerate(starts):
                mels.append(frames[s : s + size])
                owner.append(r)
                centre.append(min(s + size / 2, length / 2) if length < size else s + size / 2)
                chunk_of.append(chunks + k // per_chunk)
            chunks = chunk_of[-1] + 1 if chunk_of else 0
        windows = self._embed(mels)
        if len(windows) == 0:
            return []
        index = np.array(chunk_of)
        weights = np.bincount(index, minlength=chunks).astype(np.float64)
        sums = np.zeros((chunks, windows.shape[1]), np.float64)
        np.add.at(sums, index, windows)
        chunk_emb = (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-8)).astype(np.float32)
        low = min(max_speakers, max(min_speakers, self.fewest_speakers(samples)))
        labels = cluster(chunk_emb, threshold=self.threshold, min_speakers=low, max_speakers=max_speakers)
        labels = _absorb_small(chunk_emb, labels, weights, low, MIN_SPEAKER_S * RATE / HOP / hop)
        centroids = _centroids(chunk_emb, labels, weights)
        similarity = windows.astype(np.float64) @ centroids.T.astype(np.float64)
        window_labels = np.argmax(similarity, axis=1)
        z = np.exp(self.encoder.similarity_scale * (similarity - similarity.max(axis=1, keepdims=True)))
        sure = (z / z.sum(axis=1, keepdims=True))[np.arange(len(z)), window_labels]
        return _turns(regions, np.array(owner), np.array(centre), window_labels, sure)


def _centroids(emb: F32, labels: npt.NDArray[np.int64], weights: npt.NDArray[np.float64]) -> F32:
    count = int(labels.max()) + 1
    sums = np.zeros((count, emb.shape[1]), np.float64)
    np.add.at(sums, labels, emb * weights[:, None])
    out: F32 = (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-8)).astype(np.float32)
    return out


def _absorb_small(
    emb: F32,
    labels: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64],
    min_speakers: int,
    min_windows: float,
) -> npt.NDArray[np.int64]:
    """Clusters holding less than :data:`MIN_SHARE` of the speech (and under ``min_windows``
    windows: :data:`MIN_SPEAKER_S`) are outliers of a known voice: each chunk of them joins
    the nearest larger cluster, while more than ``min_speakers`` remain."""
    while True:
        count = int(labels.max()) + 1
        if count <= max(1, min_speakers):
            return labels
        mass = np.bincount(labels, weights=weights, minlength=count)
        small = int(np.argmin(mass))
        if mass[small] >= MIN_SHARE * mass.sum() or mass[small] >= min_windows:
            return labels
        centroids = _centroids(emb, labels, weights)
        moved = labels.copy()
        for i in np.flatnonzero(labels == small):
            similarity = centroids @ emb[i]
            similarity[small] = -np.inf
            moved[i] = int(np.argmax(similarity))
        labels = first_appearance(moved)


def _turns(
    regions: list[tuple[int, int]],
    owner: npt.NDArray[np.int64],
    centre: npt.NDArray[np.float64],
    window_labels: npt.NDArray[np.int64],
    sure: npt.NDArray[np.float64],
) -> list[Turn]:
    """Each 10 ms frame of a region takes the label of the window centred nearest; runs of one
    label are turns (relabelled by first appearance)."""
    turns: list[Turn] = []
    for r, (a, b) in enumerate(regions):
        mine = np.flatnonzero(owner == r)
        length = max(1, (b - a) // HOP)
        frames = np.arange(length) + 0.5
        nearest = mine[np.argmin(np.abs(centre[mine][None, :] - frames[:, None]), axis=1)]
        frame_labels = window_labels[nearest]
        frame_sure = sure[nearest]
        cuts = [0, *(np.flatnonzero(np.diff(frame_labels)) + 1).tolist(), length]
        for i in range(len(cuts) - 1):
            start = a / RATE + cuts[i] * HOP / RATE
            end = b / RATE if cuts[i + 1] == length else a / RATE + cuts[i + 1] * HOP / RATE
            confidence = round(float(frame_sure[cuts[i] : cuts[i + 1]].mean()), 4)
            turns.append(Turn(round(start, 3), round(end, 3), int(frame_labels[cuts[i]]), confidence))
    order: dict[int, int] = {}
    return [replace(t, speaker=order.setdefault(t.speaker, len(order))) for t in turns]
