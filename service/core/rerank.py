"""Re-ranking the candidates of a search: maximal marginal relevance, and recommendation from
examples (Qdrant's two strategies).

- MMR picks greedily, among the candidates, the one maximising
  (1 - d) * relevance - d * max cos(candidate, already picked), starting from the most relevant;
  relevance is the request's metric in its own units and stays the reported score.
- average_vector searches around avg(positive), or avg(positive) + (avg(positive) - avg(negative))
  when there are negatives.
- best_score scores a candidate c by max_p sim(c, p) when that exceeds max_n sim(c, n), and by
  -max_n sim(c, n) otherwise (with no negatives, by max_p sim(c, p)), sim being the metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AVERAGE_VECTOR, BEST_SCORE = "average_vector", "best_score"
STRATEGIES = (AVERAGE_VECTOR, BEST_SCORE)


@dataclass(frozen=True)
class Mmr:
    """Diversity d in [0, 1] among the top `candidates` by relevance."""

    diversity: float
    candidates: int


def mmr_order(relevance: np.ndarray, vectors: np.ndarray, count: int, diversity: float) -> np.ndarray:
    """Indices of `count` candidates in MMR order (ties go to the more relevant, then the earlier).

    The candidates are ranked by relevance once, so each greedy step is one argmax (the first
    maximum is the most relevant of the tied), over similarities updated with one product per pick."""
    n = len(relevance)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    ranked = np.lexsort((np.arange(n), -relevance))
    norms = np.linalg.norm(vectors[ranked], axis=1, keepdims=True)
    unit = np.divide(vectors[ranked], norms, out=np.zeros((n, vectors.shape[1])), where=norms > 0)
    gain = (1 - diversity) * relevance[ranked]
    closest = unit @ unit[0]
    picked = [0]
    value = gain - diversity * closest
    value[0] = -np.inf
    while len(picked) < min(count, n):
        best = int(np.argmax(value))
        picked.append(best)
        closest = np.maximum(closest, unit @ unit[best])
        value = np.where(np.isneginf(value), -np.inf, gain - diversity * closest)
        value[best] = -np.inf
    return np.asarray(ranked[picked], dtype=np.int64)


def average_example(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """The vector average_vector searches around, as (1, d)."""
    mean = positive.mean(axis=0, dtype=np.float64)
    if len(negative):
        mean = mean + (mean - negative.mean(axis=0, dtype=np.float64))
    return np.asarray(mean, dtype=np.float32)[None, :]


def best_scores(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """best_score per candidate from its similarities to each positive (p, c) and negative (n, c)."""
    best: np.ndarray = positive.max(axis=0)
    if not len(negative):
        return best
    worst: np.ndarray = negative.max(axis=0)
    return np.asarray(np.where(best > worst, best, -worst))
