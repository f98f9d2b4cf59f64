"""What a search does after its candidates are ranked: MMR, the offset window, and the
recommendation strategies that rank candidates from examples (math in service.core.rerank).

A search ranks its top `fetch` (SearchOptions.fetch: offset + k, or MMR's candidates); these
functions turn that into the answer the request asked for, in true units throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from index_builder.retrieval.scoring import MISSING
from service.core.overlay import Snapshot
from service.core.query import Answer, Query, SearchOptions
from service.core.rerank import best_scores, mmr_order
from service.core.version import Version, group_answer


@dataclass(frozen=True)
class RecommendQuery:
    """Examples (ids, or vectors as (d,) arrays) to move towards and away from, the strategy
    (service.core.rerank), and the search fields."""

    positive: list[str | np.ndarray]
    negative: list[str | np.ndarray]
    strategy: str
    options: SearchOptions

    def ids(self) -> list[str]:
        """The examples given by id: they never come back."""
        return [e for e in [*self.positive, *self.negative] if isinstance(e, str)]


async def example_vectors(version: Version, examples: list[str | np.ndarray], field: str) -> np.ndarray:
    """The examples as an (n, d) float32 matrix: ids looked up (404 for unknown ones), vectors as given."""
    ids = [e for e in examples if isinstance(e, str)]
    stored = iter(await version.vectors_of(ids, field) if ids else [])
    rows = [next(stored) if isinstance(e, str) else np.asarray(e, np.float32) for e in examples]
    if not rows:
        return np.empty((0, version.dim), np.float32)
    return np.stack(rows).astype(np.float32, copy=False)


async def shaped(version: Version, answer: Answer, options: SearchOptions, changes: Snapshot | None) -> Answer:
    """The answer the request asked for: MMR among the ranked candidates when asked, then the
    window [offset, offset + k)."""
    wanted = options.offset + options.k
    if options.mmr is not None:
        order = np.full((len(answer.rows), wanted), -1, dtype=np.int64)
        for line in range(len(answer.rows)):
            found = np.flatnonzero(answer.rows[line] != MISSING)
            ids = [str(i) for i in answer.labels[line, found]]
            vectors = await version.vectors_of(ids, "mmr", changes) if ids else np.empty((0, version.dim))
            picked = mmr_order(answer.scores[line, found].astype(np.float64), vectors, wanted, options.mmr.diversity)
            order[line, : len(picked)] = found[picked]
        answer = answer.reordered(order)
    columns = np.arange(options.offset, wanted)
    window = np.where(columns < answer.rows.shape[1], columns, -1)
    return answer.reordered(np.broadcast_to(window, (len(answer.rows), len(window))))


async def best_score(version: Version, query: Query, positive: np.ndarray, negative: np.ndarray) -> Answer:
    """Candidates from a search around each positive (the rows of `query`), ranked by best_score
    against every positive and negative example, grouped and thresholded as the request asks."""
    found = await version.search(replace(query, options=replace(query.options, group_by=None, score_threshold=None)))
    seen: dict[str, tuple[int, int]] = {}
    for line in range(len(found.rows)):
        for at in np.flatnonzero(found.rows[line] != MISSING):
            seen.setdefault(str(found.labels[line, at]), (line, int(at)))
    ids = list(seen)
    examples = np.vstack([positive, negative])
    metric, prepared = version.prepare(examples, query.metric, "positive", zero_has_score=True)
    scored = await version.score(metric, prepared, [ids] * len(examples))
    sims = np.array([[s for _, s in pairs] for pairs in scored], dtype=np.float64).reshape(len(examples), len(ids))
    value = best_scores(sims[: len(positive)], sims[len(positive) :])
    order = np.array(sorted(range(len(ids)), key=lambda i: (-value[i], ids[i])), dtype=np.int64)
    where = [seen[ids[i]] for i in order]
    lines = np.array([w[0] for w in where], dtype=np.int64)
    cols = np.array([w[1] for w in where], dtype=np.int64)
    answer = Answer(
        value[order][None, :].astype(np.float32),
        found.rows[lines, cols][None, :],
        found.labels[lines, cols][None, :],
        None if found.attrs is None else found.attrs[lines, cols][None, :],
    )
    group = query.options.group_by
    if group is not None:
        answer, _ = group_answer(answer, group, query.options.k)
        answer = answer if query.options.with_attributes else answer._replace(attrs=None)
    return answer.at_least(query.options.score_threshold)
