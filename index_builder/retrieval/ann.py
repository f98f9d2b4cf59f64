"""One approximate search as both programs run it: FAISS candidates, then exact rescoring.

The builder's recall self-check measures exactly what the service serves, because both
call `ann_topk`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import faiss
import numpy as np

from index_builder.retrieval.faiss_params import (
    EF_SEARCH,
    NPROBE,
    distances_per_search,
    search_parameters,
    tuning_param,
)
from index_builder.retrieval.scoring import MISSING, Prepared, Queries, prepare, rescored_topk
from index_builder.retrieval.spaces import Layout, MetricSpace, augment_queries


@dataclass(frozen=True)
class ServedIndex:
    """A loaded FAISS index with what is needed to query it and rescore its answers.

    Norm-ranged layouts hold one index per norm range in `ranges` (all searched, answers merged
    by true score); `index` is then the largest of them, which sets the tuning knob.
    """

    index: faiss.Index
    space: MetricSpace
    layout: Layout
    refine_factor: int
    vectors: np.ndarray
    scales: np.ndarray
    ranges: tuple[faiss.Index, ...] = ()

    @classmethod
    def of(
        cls,
        indexes: list[faiss.Index],
        space: MetricSpace,
        layout: Layout,
        refine_factor: int,
        vectors: np.ndarray,
        scales: np.ndarray,
    ) -> ServedIndex:
        """Serve one index, or the per-range indexes of a norm-ranged layout."""
        largest = max(indexes, key=lambda index: index.ntotal)
        ranges = tuple(indexes) if len(indexes) > 1 else ()
        return cls(largest, space, layout, refine_factor, vectors, scales, ranges)

    @property
    def searched(self) -> tuple[faiss.Index, ...]:
        return self.ranges or (self.index,)

    @cached_property
    def ntotal(self) -> int:
        return sum(index.ntotal for index in self.searched)

    @cached_property
    def indexed(self) -> np.ndarray | None:
        """Which rows the index holds, as a mask (None when it holds every row, as dot's does)."""
        return None if self.space.indexes_zero_documents else np.asarray(self.scales > 0)

    @cached_property
    def param(self) -> str | None:
        """efSearch, nprobe or None; read once, the index never changes after loading."""
        return tuning_param(self.index)

    @property
    def exact(self) -> bool:
        """A flat index with uncompressed codes: FAISS's own answer is the exact one."""
        return self.param is None and self.refine_factor == 1

    def search_cost(self, value: int | None) -> float:
        """Vectors one search at this knob compares with, over every norm range."""
        return sum(distances_per_search(index, value) for index in self.searched)

    def faiss_queries(self, queries: Prepared) -> np.ndarray:
        """Queries in the space the FAISS index was built in."""
        return augment_queries(queries.prepared) if self.layout.augmented else queries.prepared


def ann_topk(
    served: ServedIndex,
    queries: Queries,
    k: int,
    param_value: int | None,
    selector: faiss.IDSelector | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows per query by true score: fetch k*refine candidates (from every norm range), rescore, sort."""
    fetch = min(k * served.refine_factor, max(served.ntotal, 1))
    if served.param == EF_SEARCH:
        param_value = max(param_value or 0, fetch)
    params = search_parameters(served.param, param_value, selector)
    queries = prepare(served.space, queries)
    searched = served.faiss_queries(queries)
    found = [index.search(searched, min(fetch, max(index.ntotal, 1)), params=params)[1] for index in served.searched]
    labels = found[0] if len(found) == 1 else np.concatenate(found, axis=1)
    scores, rows = rescored_topk(queries.raw, served.vectors, served.scales, labels)
    if rows.shape[1] < k:
        pad = k - rows.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=MISSING)
    return scores[:, :k], rows[:, :k]


FILTER_BANDS = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005)
"""Selectivities (shares of documents passing) at which a build measures filtered recall."""


def filter_band(selectivity: float) -> str | None:
    """The measured band that speaks for a selectivity: the largest band at or below it (the
    more selective, so the more demanding, neighbour); None above the first band, where a filter
    keeps most documents and the plain rule suffices."""
    if selectivity > FILTER_BANDS[0]:
        return None
    return str(next((b for b in FILTER_BANDS if b <= selectivity), FILTER_BANDS[-1]))


def filtered_knob(param: str | None, value: int | None, k: int, selectivity: float, boost: int = 1) -> int | None:
    """The knob of a search among a share `selectivity` of the documents: a graph search visits
    every document but keeps only the passing ones, so efSearch grows as boost / selectivity; an IVF
    search finds passing documents in every list, in proportion, and grows as boost / sqrt(selectivity)
    to reach the passing neighbours further out. `boost` is what the build measured for the band."""
    if param == EF_SEARCH:
        wide = max(value or 0, k)
        return max(wide, round(boost * wide / selectivity))
    if param == NPROBE and value is not None:
        return max(value, round(boost * value / math.sqrt(selectivity)))
    return value
