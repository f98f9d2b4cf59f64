"""Numpy brute force for checking what the service returns."""

from __future__ import annotations

import numpy as np

from index_builder.retrieval.spaces import MetricSpace


def true_scores(metric: str, query: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Exact dot or cosine of one query against every document (cosine 0 for zero documents)."""
    q = query.astype(np.float64)
    d = docs.astype(np.float64)
    dots = d @ q
    if metric == "dot":
        return dots
    norms = np.linalg.norm(d, axis=1) * np.linalg.norm(q)
    return np.divide(dots, norms, out=np.full_like(dots, -np.inf), where=norms > 0)


def space_scores(space: MetricSpace, queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """True scores (nq, n) under any metric, from the raw documents: (W' p) . x * doc_scale(x)."""
    raw = space.raw_from_prepared(space.prepare_queries(queries)).astype(np.float64)
    return np.asarray((raw @ docs.astype(np.float64).T) * space.doc_scale(docs)[None, :])


def top_k(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Row numbers of the k best scores among allowed rows, best first."""
    masked = scores.copy()
    if allowed is not None:
        keep = np.zeros(len(scores), bool)
        keep[allowed] = True
        masked[~keep] = -np.inf
    order = np.argsort(-masked, kind="stable")[:k]
    return order[np.isfinite(masked[order])]


def assert_matches(hits: list[dict], scores: np.ndarray, ids: list[str], expected_rows: np.ndarray) -> None:
    """Same ids as the oracle up to ties, and every score the true one."""
    row_of = {doc_id: i for i, doc_id in enumerate(ids)}
    got_rows = [row_of[h["id"]] for h in hits]
    assert len(got_rows) == len(expected_rows)
    np.testing.assert_allclose([h["score"] for h in hits], scores[got_rows], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sorted(scores[got_rows]), sorted(scores[expected_rows]), rtol=1e-4, atol=1e-4)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
