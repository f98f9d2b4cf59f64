"""Exact scoring over raw vectors: brute-force top-k and the true score of given rows.

Used by the builder (ground truth for the recall self-check) and by the service
(`exact: true`, very selective filters, and rescoring every ANN candidate so that
returned scores are the true metric values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from index_builder.retrieval.spaces import MetricSpace

MISSING = -1
LAST_ROW = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Prepared:
    """Query vectors under one metric, transformed once per request: `prepared` as the index takes
    them (normalized when the metric normalizes; zero rows stay zero) and `raw` for exact scoring
    against raw documents (score = raw . x * doc_scale(x))."""

    prepared: np.ndarray
    raw: np.ndarray

    @classmethod
    def of(cls, space: MetricSpace, queries: np.ndarray) -> Prepared:
        prepared = space.prepare_queries(queries)
        return cls(prepared, space.raw_from_prepared(prepared))

    @classmethod
    def concat(cls, parts: Sequence[Prepared]) -> Prepared:
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.prepared for p in parts]), np.concatenate([p.raw for p in parts]))

    def __len__(self) -> int:
        return len(self.prepared)

    def row(self, i: int) -> Prepared:
        return Prepared(self.prepared[i : i + 1], self.raw[i : i + 1])

    def zero_rows(self) -> np.ndarray:
        """Queries that are all zeros once prepared (no cosine-like score exists for them)."""
        return np.asarray(~np.any(self.prepared, axis=1))


Queries = np.ndarray | Prepared
"""Query vectors as given, or already prepared for the metric (the service prepares them once)."""


def prepare(space: MetricSpace, queries: Queries) -> Prepared:
    return queries if isinstance(queries, Prepared) else Prepared.of(space, queries)


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


TIE_TOLERANCE = 1e-5
SCORE_BUDGET_BYTES = 32 << 20
DENSE_SCAN = 16
"""Candidates making up at least 1/16 of the rows are scored by a sequential scan of every row,
the others masked: cheaper than gathering them one by one (bench/results/filters.md)."""


def _block_topk(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns of a (nq, b) score block and their rows (b rows shared by all queries)."""
    if scores.shape[1] <= k:
        return scores, np.broadcast_to(rows, scores.shape)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, part, axis=1), rows[part]


def _holes(rows: np.ndarray) -> np.ndarray | None:
    """Where rows are MISSING, or None when none are (the common case, spared the masking)."""
    missing = rows == MISSING
    return missing if missing.any() else None


def _order(scores: np.ndarray, rows: np.ndarray, missing: np.ndarray | None) -> np.ndarray:
    if missing is None:
        return np.lexsort((rows, -scores), axis=1)
    return np.lexsort((np.where(missing, LAST_ROW, rows), np.where(missing, np.inf, -scores)), axis=1)


def _sorted(scores: np.ndarray, rows: np.ndarray, missing: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    order = _order(scores, rows, missing)
    line = np.arange(len(rows))[:, None]
    return scores[line, order], rows[line, order]


def merge_order(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best columns of candidate (scores, rows) arrays, best first.

    The one top-k merge and its tie rule, for blocks of an exact scan, the parts of a version,
    the builder's merged self-check and the service alike: score descending, equal scores by row
    ascending, MISSING rows last. (The service then orders equal scores by id when it makes hits.)
    """
    return _order(scores, rows, _holes(rows))[:, :k]


def merge_topk(scores: Sequence[np.ndarray], rows: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) over candidate blocks of the same queries (see `merge_order`)."""
    all_scores = np.concatenate(scores, axis=1) if len(scores) > 1 else scores[0]
    all_rows = np.concatenate(rows, axis=1) if len(rows) > 1 else rows[0]
    order = merge_order(all_scores, all_rows, k)
    line = np.arange(len(all_rows))[:, None]
    return all_scores[line, order], all_rows[line, order]


EXACT_ROW_COST = 1.6
"""An exact scan of a passing document costs about this many ANN distance computations (a row
gather and a dot product against one graph or list step)."""


def scan_costs_less(candidates: int, total: int, search_cost: float) -> bool:
    """Whether an exact scan of `candidates` of `total` rows reads fewer rows, priced in distance
    computations, than a search comparing with `search_cost` vectors."""
    return scanned_rows(candidates, total) * EXACT_ROW_COST <= search_cost


def scanned_rows(candidates: int, total: int) -> int:
    """Rows an exact scan of `candidates` of `total` rows reads: every row once they make up
    1/DENSE_SCAN of them (a sequential scan, the others masked), else the candidates alone."""
    return total if candidates * DENSE_SCAN >= total else candidates


def exact_topk(
    space: MetricSpace,
    queries: Queries,
    vectors: np.ndarray,
    scales: np.ndarray,
    k: int,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k rows per query among `candidates` (default: the metric's indexed rows).

    `queries` may come prepared (see `Prepared`). Returns (scores, rows) of shape (nq, k), sorted,
    padded with MISSING when fewer exist. The winners are rescored as ANN answers are
    (`rescored_topk`), so exact and approximate answers agree to the bit.
    """
    pool = indexed_rows(space, scales) if candidates is None else np.asarray(candidates, np.int64)
    nq = len(queries)
    best_s = np.empty((nq, 0), dtype=np.float32)
    best_r = np.empty((nq, 0), dtype=np.int64)
    p = prepare(space, queries).raw
    dense = scanned_rows(len(pool), len(vectors)) == len(vectors)
    member = None
    if dense and len(pool) != len(vectors):
        member = np.zeros(len(vectors), dtype=bool)
        member[pool] = True
    scanned = np.arange(len(vectors), dtype=np.int64) if dense else pool
    block_rows = int(np.clip(SCORE_BUDGET_BYTES // (12 * max(nq, 1)), 1024, 262144))
    for start in range(0, len(scanned), block_rows):
        rows = scanned[start : start + block_rows]
        block = vectors[start : start + len(rows)] if dense else vectors[rows]
        scores = (np.asarray(block, dtype=np.float32) @ p.T).T
        scores *= scales[rows][None, :]
        if member is not None:
            scores[:, ~member[start : start + len(rows)]] = -np.inf
        top_s, top_r = _block_topk(scores, rows, k)
        if member is not None:
            top_r = np.where(top_s == -np.inf, MISSING, top_r)
        best_s, best_r = merge_topk([best_s, top_s], [best_r, np.asarray(top_r, np.int64)], k)
    if best_s.shape[1] < k:
        pad = k - best_s.shape[1]
        best_r = np.pad(best_r, ((0, 0), (0, pad)), constant_values=MISSING)
    return rescored_topk(p, vectors, scales, best_r.astype(np.int64))


def _scores(
    p: np.ndarray, vectors: np.ndarray, scales: np.ndarray, rows: np.ndarray, missing: np.ndarray | None
) -> np.ndarray:
    safe = rows if missing is None else np.where(missing, 0, rows)
    # einsum computes every (query, row) product alone; a BLAS gemv would round a pair differently
    # depending on its position among the candidates, and sharded answers must equal unsharded ones.
    scores: np.ndarray = np.einsum("qmd,qd->qm", np.asarray(vectors[safe], dtype=np.float32), p)
    scores *= scales[safe]
    if missing is not None:
        scores[missing] = -np.inf
    return scores


def score_rows(
    space: MetricSpace, queries: Queries, vectors: np.ndarray, scales: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """True score of query i against each row in rows[i] (shape (nq, m)); MISSING rows get -inf."""
    return _scores(prepare(space, queries).raw, vectors, scales, rows, _holes(rows))


def rescored_topk(
    raw_queries: np.ndarray, vectors: np.ndarray, scales: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate rows per query with their true scores, sorted as `merge_order` orders them.

    Takes the queries already in raw space (`Prepared.raw`), which every
    caller has computed anyway. Every ANN answer goes through here, so it looks for MISSING rows
    once and, in the common case of none, skips all masking.
    """
    missing = _holes(rows)
    return _sorted(_scores(raw_queries, vectors, scales, rows, missing), rows, missing)


def found_at_k(
    truth_scores: np.ndarray, found_scores: np.ndarray, found_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, how many exact results were found (tie-aware: a found row counts when its true
    score reaches the k-th exact score) and how many exist (fewer than k when few documents pass)."""
    kth = truth_scores[:, -1:]
    tol = TIE_TOLERANCE * np.maximum(np.abs(kth), 1.0)
    hits = ((found_rows != MISSING) & (found_scores >= kth - tol)).sum(axis=1)
    possible = (truth_scores > -np.inf).sum(axis=1)
    return np.minimum(hits, possible), possible


def recall_at_k(truth_scores: np.ndarray, found_scores: np.ndarray, found_rows: np.ndarray) -> float:
    """Mean per-query recall of found answers against the exact ones (see `found_at_k`)."""
    hits, possible = found_at_k(truth_scores, found_scores, found_rows)
    return float(np.mean(hits / np.maximum(possible, 1)))
