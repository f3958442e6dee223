"""Live speaker labels: each utterance is clustered with the session's earlier ones.

Every utterance's embedding is kept (the last :data:`MAX_KEPT`); a new one is clustered together
with them (:func:`~.cluster.cluster`, the file threshold's rule on utterance embeddings) and takes
the label most of its cluster's earlier members carry — or a new label (0, 1, … in order of
first appearance) when its cluster has no earlier member, while fewer than ``max_speakers``
exist (past that: the label of the nearest earlier utterance). Earlier labels never change: a
label once sent stays, and later utterances join it. Re-clustering everything each time is what
keeps one odd utterance from splitting a speaker in two (a running centroid drifts; the whole
history does not). Cost: an average-linkage clustering of ≤ 256 vectors per final (~2 ms).

The kept embeddings and labels are the whole state (:meth:`state` / :meth:`restore`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt

from .cluster import cluster

F32 = npt.NDArray[np.float32]
MAX_KEPT = 256


class SpeakerTracker:
    def __init__(self, *, threshold: float, max_speakers: int = 8) -> None:
        self.threshold = threshold
        self.max_speakers = max_speakers
        self.embeddings: list[F32] = []
        self.labels: list[int] = []

    @property
    def speakers(self) -> int:
        return max(self.labels) + 1 if self.labels else 0

    def label(self, embedding: F32) -> int:
        """The speaker of one utterance's embedding (remembered for the next ones)."""
        e = np.asarray(embedding, np.float32)
        label = self._label(e)
        self.embeddings.append(e)
        self.labels.append(label)
        if len(self.embeddings) > MAX_KEPT:
            del self.embeddings[0], self.labels[0]
        return label

    def _label(self, e: F32) -> int:
        if not self.embeddings:
            return 0
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
        """JSON-able: the kept embeddings (4 decimals) and their labels."""
        return {"embeddings": [np.round(x, 4).tolist() for x in self.embeddings], "labels": list(self.labels)}

    def restore(self, state: dict[str, Any]) -> None:
        embeddings, labels = state.get("embeddings") or [], state.get("labels") or []
        self.embeddings = [np.asarray(x, np.float32) for x in embeddings][-MAX_KEPT:]
        self.labels = [int(x) for x in labels][-MAX_KEPT:]
