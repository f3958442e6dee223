"""Agglomerative clustering of speaker embeddings (scipy's average linkage on cosine distance).

The number of speakers is where the merge distance passes ``threshold`` (tuned on the
benchmark's development conversations: docs/benchmarks.md), clamped to
[``min_speakers``, ``max_speakers``]. Labels are renumbered by first appearance (0, 1, …).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.cluster.hierarchy import fcluster, linkage

MAX_ITEMS = 3000
"""Embeddings clustered at once (memory: a condensed distance matrix of ~4.5 M floats)."""


def first_appearance(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The same partition, numbered 0, 1, … in order of first appearance."""
    order: dict[int, int] = {}
    for label in labels.tolist():
        order.setdefault(int(label), len(order))
    return np.array([order[int(x)] for x in labels.tolist()], dtype=np.int64)


def cluster(
    embeddings: npt.NDArray[np.float32],
    *,
    threshold: float,
    min_speakers: int = 1,
    max_speakers: int = 8,
) -> npt.NDArray[np.int64]:
    """One speaker label per embedding (rows L2-normalised)."""
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, np.int64)
    if n == 1:
        return np.zeros(1, np.int64)
    if n > MAX_ITEMS:
        raise ValueError(f"at most {MAX_ITEMS} embeddings at once, got {n}")
    tree = linkage(np.asarray(embeddings, np.float64), method="average", metric="cosine")
    labels = fcluster(tree, t=threshold, criterion="distance")
    count = len(set(labels.tolist()))
    low, high = max(1, min_speakers), max(1, min(max_speakers, n))
    if count > high or count < low:
        labels = fcluster(tree, t=min(max(count, low), high), criterion="maxclust")
    return first_appearance(np.asarray(labels, np.int64))
