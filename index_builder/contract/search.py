"""One approximate search as both programs run it: FAISS candidates, then exact rescoring.

The builder's recall self-check measures exactly what the service serves, because both
call `ann_topk`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import faiss
import numpy as np

from index_builder.contract.faiss_index import EF_SEARCH, search_parameters, tuning_param
from index_builder.contract.metrics import Layout, MetricSpace, augment_queries
from index_builder.contract.scoring import MISSING, score_rows, sort_topk


@dataclass(frozen=True)
class ServedIndex:
    """A loaded FAISS index with what is needed to query it and rescore its answers."""

    index: faiss.Index
    space: MetricSpace
    layout: Layout
    refine_factor: int
    vectors: np.ndarray
    scales: np.ndarray

    @cached_property
    def param(self) -> str | None:
        """efSearch, nprobe or None; read once, the index never changes after loading."""
        return tuning_param(self.index)

    @property
    def exact(self) -> bool:
        """A flat index with uncompressed codes: FAISS's own answer is the exact one."""
        return self.param is None and self.refine_factor == 1

    def faiss_queries(self, queries: np.ndarray) -> np.ndarray:
        """Queries in the space the FAISS index was built in."""
        prepared = self.space.prepare_queries(queries)
        return augment_queries(prepared) if self.layout is Layout.L2_AUGMENTED else prepared


def ann_topk(
    served: ServedIndex,
    queries: np.ndarray,
    k: int,
    param_value: int | None,
    selector: faiss.IDSelector | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows per query by true score: fetch k*refine candidates, rescore, sort."""
    fetch = min(k * served.refine_factor, max(served.index.ntotal, 1))
    if served.param == EF_SEARCH:
        param_value = max(param_value or 0, fetch)
    params = search_parameters(served.param, param_value, selector)
    _, labels = served.index.search(served.faiss_queries(queries), fetch, params=params)
    scores = score_rows(served.space, queries, served.vectors, served.scales, labels)
    scores, rows = sort_topk(scores, labels)
    if rows.shape[1] < k:
        pad = k - rows.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=MISSING)
    return scores[:, :k], rows[:, :k]
