"""Live speaker labels: each utterance joins the nearest known speaker, or starts a new one.

A speaker is the running mean of its utterances' embeddings (L2-normalised). An utterance whose
cosine distance to every centroid exceeds ``threshold`` is a new speaker (0, 1, … in order of
first appearance) while fewer than ``max_speakers`` exist; past that it joins the nearest. The
centroids are the whole state (:meth:`state` / :meth:`from_state`): a resumed session keeps its
labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


class SpeakerTracker:
    def __init__(self, *, threshold: float, max_speakers: int = 8) -> None:
        self.threshold = threshold
        self.max_speakers = max_speakers
        self.sums: list[npt.NDArray[np.float64]] = []
        self.counts: list[int] = []

    def label(self, embedding: F32) -> int:
        """The speaker of one utterance's embedding (and the centroids updated with it)."""
        e = np.asarray(embedding, np.float64)
        if self.sums:
            centroids = np.stack([s / max(float(np.linalg.norm(s)), 1e-12) for s in self.sums])
            similarity = centroids @ e
            best = int(np.argmax(similarity))
            if 1.0 - float(similarity[best]) <= self.threshold or len(self.sums) >= self.max_speakers:
                self.sums[best] = self.sums[best] + e
                self.counts[best] += 1
                return best
        self.sums.append(e.copy())
        self.counts.append(1)
        return len(self.sums) - 1

    def state(self) -> dict[str, Any]:
        """JSON-able state: each speaker's summed embedding (4 decimals) and utterance count."""
        return {"sums": [np.round(s, 4).tolist() for s in self.sums], "counts": list(self.counts)}

    def restore(self, state: dict[str, Any]) -> None:
        sums, counts = state.get("sums") or [], state.get("counts") or []
        self.sums = [np.asarray(s, np.float64) for s in sums]
        self.counts = [int(c) for c in counts]
