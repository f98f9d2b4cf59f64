"""The re-ranking math against plain reference implementations (hypothesis draws the inputs)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.rerank import average_example, best_scores, mmr_order


def naive_mmr(relevance: np.ndarray, vectors: np.ndarray, count: int, diversity: float) -> list[int]:
    norms = np.linalg.norm(vectors, axis=1)
    unit = [v / n if n > 0 else np.zeros_like(v) for v, n in zip(vectors, norms, strict=True)]
    order = sorted(range(len(relevance)), key=lambda i: (-relevance[i], i))
    picked = [order[0]]
    while len(picked) < min(count, len(relevance)):

        def value(i: int) -> float:
            return (1 - diversity) * relevance[i] - diversity * max(float(unit[i] @ unit[p]) for p in picked)

        free = [i for i in order if i not in picked]
        best = max(value(i) for i in free)
        picked.append(next(i for i in free if value(i) == best))
    return picked


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    count=st.integers(1, 12),
    diversity=st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]),
    ties=st.booleans(),
)
def test_mmr_order_equals_the_greedy_definition(seed: int, n: int, count: int, diversity: float, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    relevance = np.round(rng.standard_normal(n), 1 if ties else 6)
    vectors = rng.standard_normal((n, 5))
    vectors[rng.random(n) < 0.1] = 0.0
    assert mmr_order(relevance, vectors, count, diversity).tolist() == naive_mmr(relevance, vectors, count, diversity)


def test_best_score_takes_the_closer_side() -> None:
    positive = np.array([[0.9, 0.1, -0.2], [0.3, 0.8, -0.5]])
    negative = np.array([[0.95, 0.0, 0.1]])
    np.testing.assert_allclose(best_scores(positive, negative), [-0.95, 0.8, -0.1])
    np.testing.assert_allclose(best_scores(positive, np.empty((0, 3))), [0.9, 0.8, -0.2])


def test_average_example_moves_away_from_the_negatives() -> None:
    positive = np.array([[1.0, 0.0], [3.0, 2.0]], np.float32)
    negative = np.array([[0.0, 4.0]], np.float32)
    np.testing.assert_allclose(average_example(positive, negative), [[4.0, -2.0]])
    np.testing.assert_allclose(average_example(positive, np.empty((0, 2), np.float32)), [[2.0, 1.0]])
