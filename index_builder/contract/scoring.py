"""Exact scoring over raw vectors: brute-force top-k and the true score of given rows.

Used by the builder (ground truth for the recall self-check) and by the service
(`exact: true`, very selective filters, and rescoring every ANN candidate so that
returned scores are the true metric values).
"""

from __future__ import annotations

import numpy as np

from index_builder.contract.metrics import MetricSpace

MISSING = -1
LAST_ROW = np.iinfo(np.int64).max


def doc_scales(space: MetricSpace, vectors: np.ndarray, block_rows: int) -> np.ndarray:
    """doc_scale of every stored document, computed block by block (float32, shape (n,))."""
    out = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), block_rows):
        out[start : start + block_rows] = space.doc_scale(vectors[start : start + block_rows])
    return out


def indexed_rows(space: MetricSpace, scales: np.ndarray) -> np.ndarray:
    """Rows that belong to this metric's index: all for dot, non-degenerate ones otherwise."""
    if space.indexes_zero_documents:
        return np.arange(len(scales), dtype=np.int64)
    return np.flatnonzero(scales > 0).astype(np.int64)


SCORE_BUDGET_BYTES = 32 << 20


def _block_topk(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns of a (nq, b) score block and their rows (b rows shared by all queries)."""
    if scores.shape[1] <= k:
        return scores, np.broadcast_to(rows, scores.shape)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, part, axis=1), rows[part]


def _merge_topk(
    best_s: np.ndarray, best_r: np.ndarray, new_s: np.ndarray, new_r: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([best_s, new_s], axis=1)
    rows = np.concatenate([best_r, new_r], axis=1)
    if scores.shape[1] > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, part, axis=1)
        rows = np.take_along_axis(rows, part, axis=1)
    return scores, rows


def _holes(rows: np.ndarray) -> np.ndarray | None:
    """Where rows are MISSING, or None when none are (the common case, spared the masking)."""
    missing = rows == MISSING
    return missing if missing.any() else None


def _sorted(scores: np.ndarray, rows: np.ndarray, missing: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if missing is None:
        order = np.lexsort((rows, -scores), axis=1)
    else:
        order = np.lexsort((np.where(missing, LAST_ROW, rows), np.where(missing, np.inf, -scores)), axis=1)
    line = np.arange(len(rows))[:, None]
    return scores[line, order], rows[line, order]


def sort_topk(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each query's results by score descending, then row ascending; MISSING rows last."""
    return _sorted(scores, rows, _holes(rows))


def exact_topk(
    space: MetricSpace,
    queries: np.ndarray,
    vectors: np.ndarray,
    scales: np.ndarray,
    k: int,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k rows per query among `candidates` (default: the metric's indexed rows).

    Returns (scores, rows) of shape (nq, k), sorted, padded with MISSING when fewer exist. The
    winners are rescored as ANN answers are (`rescored_topk`), so exact and approximate answers agree to the bit.
    """
    pool = indexed_rows(space, scales) if candidates is None else np.asarray(candidates, np.int64)
    nq = len(queries)
    best_s = np.empty((nq, 0), dtype=np.float32)
    best_r = np.empty((nq, 0), dtype=np.int64)
    p = space.queries_in_raw_space(queries)
    contiguous = candidates is None and len(pool) == len(vectors)
    block_rows = int(np.clip(SCORE_BUDGET_BYTES // (12 * max(nq, 1)), 1024, 262144))
    for start in range(0, len(pool), block_rows):
        rows = pool[start : start + block_rows]
        block = vectors[start : start + len(rows)] if contiguous else vectors[rows]
        scores = (np.asarray(block, dtype=np.float32) @ p.T).T
        scores *= scales[rows][None, :]
        top_s, top_r = _block_topk(scores, rows, k)
        best_s, best_r = _merge_topk(best_s, best_r, top_s, top_r, k)
    if best_s.shape[1] < k:
        pad = k - best_s.shape[1]
        best_r = np.pad(best_r, ((0, 0), (0, pad)), constant_values=MISSING)
    return rescored_topk(p, vectors, scales, best_r.astype(np.int64))


def _scores(p: np.ndarray, vectors: np.ndarray, scales: np.ndarray, rows: np.ndarray,
            missing: np.ndarray | None) -> np.ndarray:
    safe = rows if missing is None else np.where(missing, 0, rows)
    # einsum computes every (query, row) product alone; a BLAS gemv would round a pair differently
    # depending on its position among the candidates, and sharded answers must equal unsharded ones.
    scores = np.einsum("qmd,qd->qm", np.asarray(vectors[safe], dtype=np.float32), p)
    scores *= scales[safe]
    if missing is not None:
        scores[missing] = -np.inf
    return scores


def score_rows(
    space: MetricSpace, queries: np.ndarray, vectors: np.ndarray, scales: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """True score of query i against each row in rows[i] (shape (nq, m)); MISSING rows get -inf."""
    return _scores(space.queries_in_raw_space(queries), vectors, scales, rows, _holes(rows))


def rescored_topk(
    raw_queries: np.ndarray, vectors: np.ndarray, scales: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate rows per query with their true scores, sorted as `sort_topk` sorts.

    Takes the queries already in raw space (`MetricSpace.queries_in_raw_space`), which every
    caller has computed anyway. Every ANN answer goes through here, so it looks for MISSING rows
    once and, in the common case of none, skips all masking.
    """
    missing = _holes(rows)
    return _sorted(_scores(raw_queries, vectors, scales, rows, missing), rows, missing)
