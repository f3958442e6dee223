"""Live speaker labels: each utterance is clustered with the session's earlier ones.

Every utterance's embedding is kept (the last :data:`MAX_KEPT`); a new one is clustered together
with them (:func:`~.cluster.cluster`, the file threshold's rule on utterance embeddings) and takes
the label most of its cluster's earlier members carry — or a new label (0, 1, … in order of
first appearance) when its cluster has no earlier member, while fewer than ``max_speakers``
exist (past that: the label of the nearest earlier utterance). Earlier labels never change: a
label once sent stays, and later utterances join it. Re-clustering everything each time is what
keeps one odd utterance from splitting a speaker in two (a running centroid drifts; the whole
history does not). Cost: an average-linkage clustering of ≤ 256 vectors per final (~2 ms).

A session resumed on another node of a cluster takes its labels with it: :meth:`state` is the
last :data:`PER_SPEAKER` embeddings of each label (float32, base64) and the next new label — at
most ``max_speakers`` × :data:`PER_SPEAKER` vectors (192 floats for CAM++, 256 for GE2E), ~4–5.5 KB
of JSON a speaker — which
:class:`SpeakerMemory` carries in the session's resume record (``spk``, rewritten with each final
that changed it: :mod:`asrhub.cluster.resume`) and :meth:`restore` takes back. Real embeddings,
not one centroid per speaker: a centroid of L2-normalised vectors is closer to another speaker's
centroid than their members are to each other, so average linkage over centroids would merge two
people the history kept apart.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from .cluster import cluster

F32 = npt.NDArray[np.float32]
MAX_KEPT = 256
PER_SPEAKER = 4
"""Embeddings of each label that :meth:`SpeakerTracker.state` keeps (its most recent ones)."""


class SpeakerTracker:
    def __init__(self, *, threshold: float, max_speakers: int = 8) -> None:
        self.threshold = threshold
        self.max_speakers = max_speakers
        self.embeddings: list[F32] = []
        self.labels: list[int] = []
        self.next_label = 0
        """The label a new speaker gets (labels already given are never given again)."""
        self.changes = 0
        """How many times the state changed (a label given, a restore): its writer's cue."""

    @property
    def speakers(self) -> int:
        return self.next_label

    def label(self, embedding: F32) -> int:
        """The speaker of one utterance's embedding (remembered for the next ones)."""
        e = np.asarray(embedding, np.float32)
        if self.embeddings and self.embeddings[-1].shape != e.shape:
            # another encoder's history (a state restored from a node with another
            # ``diarization.encoder``): not comparable, so forgotten; labels given stay given
            self.embeddings, self.labels = [], []
        label = self._label(e)
        self.embeddings.append(e)
        self.labels.append(label)
        self.next_label = max(self.next_label, label + 1)
        self.changes += 1
        if len(self.embeddings) > MAX_KEPT:
            del self.embeddings[0], self.labels[0]
        return label

    def _label(self, e: F32) -> int:
        if not self.embeddings:  # the first voice (or the first after a forgotten history)
            return min(self.next_label, max(0, self.max_speakers - 1))
        clusters = cluster(np.stack([*self.embeddings, e]), threshold=self.threshold, max_speakers=32)
        mine = clusters[-1]
        votes = Counter(lab for lab, c in zip(self.labels, clusters[:-1], strict=True) if c == mine)
        if votes:
            return votes.most_common(1)[0][0]
        if self.speakers < self.max_speakers:
            return self.speakers
        nearest = int(np.argmax(np.stack(self.embeddings) @ e))
        return self.labels[nearest]

    def state(self) -> dict[str, Any]:
        """JSON-able and bounded: the next label, and the last :data:`PER_SPEAKER` embeddings of
        each label with their labels (in history order; the embeddings float32, base64)."""
        kept: list[int] = []
        seen: Counter[int] = Counter()
        for i in range(len(self.labels) - 1, -1, -1):
            if seen[self.labels[i]] < PER_SPEAKER:
                seen[self.labels[i]] += 1
                kept.append(i)
        kept.reverse()
        matrix = np.stack([self.embeddings[i] for i in kept]).astype("<f4") if kept else np.zeros(0, "<f4")
        return {
            "next": self.next_label,
            "labels": [self.labels[i] for i in kept],
            "embeddings": base64.b64encode(matrix.tobytes()).decode(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back a :meth:`state` (raises ValueError for one this class did not write)."""
        labels, embeddings = parse_state(state)
        self.embeddings, self.labels = embeddings, labels
        self.next_label = max([int(state.get("next", 0)), *(x + 1 for x in labels)])
        self.changes += 1


def parse_state(state: Mapping[str, Any]) -> tuple[list[int], list[F32]]:
    """The labels and embeddings of a :meth:`SpeakerTracker.state`, checked."""
    try:
        labels = [int(x) for x in state["labels"]][-MAX_KEPT:]
        raw = base64.b64decode(state["embeddings"], validate=True)
        int(state.get("next", 0))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ValueError(f"not a speaker tracker's state: {exc!r}") from None
    if any(x < 0 for x in labels):
        raise ValueError("not a speaker tracker's state: a negative label")
    if not labels:
        return [], []
    count = len(state["labels"])
    if len(raw) % (4 * count):
        raise ValueError(f"not a speaker tracker's state: {len(raw)} bytes for {count} embeddings")
    matrix = np.frombuffer(raw, "<f4").reshape(count, -1)[-len(labels) :]
    return labels, [np.array(row, np.float32) for row in matrix]


class SpeakerMemory:
    """A session's live speaker trackers by chain name ("" for the session's one chain,
    ``"channel N"`` for a multichannel session's), kept where its resume record is written from
    (:attr:`asrhub.session.context.Context.speakers`), and the states a session resumed from the
    cluster log starts them from."""

    def __init__(self, saved: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._saved = dict(saved or {})
        self._trackers: dict[str, SpeakerTracker] = {}
        self._written = 0

    def tracker(self, name: str, *, threshold: float, max_speakers: int) -> SpeakerTracker:
        """A new tracker for the chain ``name``, started from its saved state if there is one."""
        tracker = SpeakerTracker(threshold=threshold, max_speakers=max_speakers)
        saved = self._saved.get(name)
        if saved is not None:
            tracker.restore(saved)
        self._trackers[name] = tracker
        return tracker

    @property
    def _changes(self) -> int:
        return sum(t.changes for t in self._trackers.values())

    def changed(self) -> bool:
        """Whether a tracker changed since the last :meth:`encode`."""
        return self._changes != self._written

    def encode(self) -> str:
        """Every chain's state as JSON ("" when there is none)."""
        self._written = self._changes
        states = {**self._saved, **{name: t.state() for name, t in self._trackers.items()}}
        return json.dumps(states, separators=(",", ":")) if states else ""

    @classmethod
    def decode(cls, text: str) -> SpeakerMemory:
        """The memory an :meth:`encode` wrote (raises ValueError for anything else)."""
        if not text:
            return cls()
        try:
            states = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"speaker states are not JSON: {exc}") from None
        if not isinstance(states, dict) or not all(isinstance(v, dict) for v in states.values()):
            raise ValueError("speaker states are not an object of states")
        for state in states.values():
            parse_state(state)
        return cls(states)
