"""What a search asks for, checked once, and how one part answers it.

A request becomes a `Query` once, on the event loop: its options checked against the limits,
its vectors against the collection, and the vectors prepared for the metric (the zero-norm check
reads the prepared form, and every part searches with it). A part's answer is an `Answer` of
arrays; ids appear only when the version makes hits at the top.

Filters run inside the search (service.core.planner).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from index_builder.artifact.errors import InputError
from index_builder.artifact.manifest import FilterRoute
from index_builder.retrieval.faiss_params import EF_SEARCH, NPROBE
from index_builder.retrieval.rowsets import Mask
from index_builder.retrieval.scoring import MISSING, Prepared, merge_order
from service.core.config import Limits
from service.core.errors import TooLarge
from service.core.filters import Node
from service.core.rerank import Mmr

if TYPE_CHECKING:
    from service.core.overlay import Snapshot


@dataclass(frozen=True)
class GroupBy:
    """At most `max_per_group` results per value of the attribute `key`."""

    key: str
    max_per_group: int


@dataclass(frozen=True)
class SearchOptions:
    """Everything a search request asks for besides the query vectors."""

    k: int = 10
    metric: str | None = None
    exclude: list[str] = field(default_factory=list)
    include: list[str] | None = None
    exact: bool = False
    nprobe: int | None = None
    ef_search: int | None = None
    filter: dict[str, Any] | None = None
    group_by: GroupBy | None = None
    score_threshold: float | None = None
    with_attributes: bool = False
    with_vectors: bool = False
    offset: int = 0
    mmr: Mmr | None = None

    @property
    def fetch(self) -> int:
        """How many results the search ranks: the window [offset, offset + k), or MMR's candidates."""
        return max(self.offset + self.k, self.mmr.candidates if self.mmr is not None else 0)

    def fetched(self) -> SearchOptions:
        """The options of the search behind the answer (its top `fetch`, no window, no MMR)."""
        return replace(self, k=self.fetch, offset=0, mmr=None)


@dataclass(frozen=True)
class Query:
    """A checked request: the metric's name, the prepared queries, the options, the collection's
    tuned default knobs for the metric, the limits a part's search obeys, the filter tree (ids
    folded in) and the attributes each hit carries back."""

    metric: str
    queries: Prepared
    options: SearchOptions
    defaults: dict[str, int]
    limits: Limits
    where: Node | None = None
    fields: tuple[str, ...] = ()
    plan: dict[str, list[FilterRoute]] = field(default_factory=dict)
    """Per selectivity band, how the build found filtered searches cheapest (service.core.planner)."""
    exact_micros: dict[str, float] = field(default_factory=dict)
    overlay: Snapshot | None = None
    """The changes since the version was built, as this request sees them (all its parts alike)."""

    @property
    def plain(self) -> bool:
        """No filter and no attributes: searches of one lane can share a FAISS call."""
        return self.where is None and not self.fields

    def batched(self, queries: Prepared, k: int) -> Query:
        """The same query over other vectors and k (a coalesced batch)."""
        return replace(self, queries=queries, options=replace(self.options, k=k))

    def knob(self, param: str | None) -> int | None:
        """efSearch or nprobe for this search: the request's own, else the tuned default."""
        if param is None:
            return None
        requested = self.options.ef_search if param == EF_SEARCH else self.options.nprobe if param == NPROBE else None
        return requested if requested is not None else self.defaults.get(param)


@dataclass
class Hidden:
    """Version-wide rows (sorted) whose stored documents were deleted or replaced since the build,
    with each part's visibility mask made once (the search keeps the rest: a Mask, so the knob
    grows only with the share hidden)."""

    rows: np.ndarray
    masks: dict[int, Mask | None] = field(default_factory=dict)

    def hides(self, row: int) -> bool:
        at = int(np.searchsorted(self.rows, row))
        return at < len(self.rows) and int(self.rows[at]) == row

    def visible(self, offset: int, total: int) -> Mask | None:
        """The rows of the part starting at `offset` that still stand (None when all do)."""
        if offset not in self.masks:
            start, end = np.searchsorted(self.rows, [offset, offset + total])
            mask = None
            if end > start:
                mask = np.ones(total, dtype=bool)
                mask[self.rows[start:end] - offset] = False
            self.masks[offset] = None if mask is None else Mask(mask)
        return self.masks[offset]


class Answer(NamedTuple):
    """Top-k per query as arrays: true scores (-inf when missing), version-wide rows (MISSING), ids
    (None) and, when asked, each hit's attributes (a dict, None when missing)."""

    scores: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    attrs: np.ndarray | None = None

    @staticmethod
    def merge(answers: list[Answer], k: int) -> Answer:
        """The k best over several parts' answers to the same queries (the one merge; see merge_order)."""
        if len(answers) == 1:
            return answers[0]
        scores = np.concatenate([a.scores for a in answers], axis=1)
        rows = np.concatenate([a.rows for a in answers], axis=1)
        order = merge_order(scores, rows, k)
        labels = np.concatenate([a.labels for a in answers], axis=1)
        line = np.arange(len(rows))[:, None]
        attrs = None if answers[0].attrs is None else np.concatenate([a.attrs for a in answers], axis=1)[line, order]
        return Answer(scores[line, order], rows[line, order], labels[line, order], attrs)

    def split(self, sizes: list[int], ks: list[int]) -> list[Answer]:
        """Consecutive row blocks of `sizes` queries, each cut to its own k (undoes a coalesced batch)."""
        if len(sizes) == 1 and ks[0] >= self.scores.shape[1]:
            return [self]
        out, start = [], 0
        for size, k in zip(sizes, ks, strict=True):
            end = start + size
            attrs = None if self.attrs is None else self.attrs[start:end, :k]
            out.append(Answer(self.scores[start:end, :k], self.rows[start:end, :k], self.labels[start:end, :k], attrs))
            start = end
        return out

    def reordered(self, order: np.ndarray) -> Answer:
        """The hits of each query at the positions `order` (n, m), MISSING where it is -1."""
        line = np.arange(len(self.rows))[:, None]
        at = np.maximum(order, 0)
        gone = order < 0
        labels = self.labels[line, at]
        labels[gone] = None
        attrs = None
        if self.attrs is not None:
            attrs = self.attrs[line, at]
            attrs[gone] = None
        scores = np.where(gone, -np.inf, self.scores[line, at])
        return Answer(scores, np.where(gone, MISSING, self.rows[line, at]), labels, attrs)

    def at_least(self, threshold: float | None) -> Answer:
        """The answer without hits scoring below `threshold` (in the metric's own units)."""
        if threshold is None or not (self.scores < threshold).any():
            return self
        low = self.scores < threshold
        labels = self.labels.copy()
        labels[low] = None
        return Answer(np.where(low, -np.inf, self.scores), np.where(low, MISSING, self.rows), labels, self.attrs)


class Hit(NamedTuple):
    """One result: a tuple, because thousands are made per second on the event loop."""

    id: str
    score: float
    attributes: dict[str, Any] | None = None
    vector: list[float] | None = None


def to_hits(answer: Answer) -> list[list[Hit]]:
    """Hits per query, MISSING dropped; only runs of equal scores are re-sorted, to order them by id."""
    ties = (answer.scores[:, 1:] == answer.scores[:, :-1]).any(axis=1).tolist()
    attrs = answer.attrs.tolist() if answer.attrs is not None else [[None] * answer.labels.shape[1]] * len(ties)
    out = []
    for scores, labels, extra, tied in zip(answer.scores.tolist(), answer.labels.tolist(), attrs, ties, strict=True):
        hits = [Hit(i, s, a) for s, i, a in zip(scores, labels, extra, strict=True) if i is not None]
        if tied:
            hits.sort(key=lambda h: (-h.score, h.id))
        out.append(hits)
    return out


def check_batch(rows: int, limits: Limits) -> None:
    if rows > limits.max_batch:
        raise TooLarge(f"vectors: batch of {rows} exceeds the limit of {limits.max_batch}")


def check_options(options: SearchOptions, rows: int, limits: Limits) -> None:
    """Limits that depend on settings, reported with the field name and the limit."""
    if not 1 <= options.k <= limits.max_k:
        raise InputError(f"k: must be between 1 and {limits.max_k}, got {options.k}")
    if options.offset < 0 or options.offset + options.k > limits.max_k:
        raise InputError(
            f"offset: offset + k must be at most {limits.max_k} (DOTCOS_MAX_K), got {options.offset} + {options.k}"
        )
    if options.mmr is not None:
        if not 0 <= options.mmr.diversity <= 1:
            raise InputError(f"mmr.diversity: must be between 0 and 1, got {options.mmr.diversity}")
        if not 1 <= options.mmr.candidates <= limits.max_k:
            raise InputError(f"mmr.candidates: must be between 1 and {limits.max_k}, got {options.mmr.candidates}")
    check_batch(rows, limits)
    for name, ids in (("exclude", options.exclude), ("include", options.include or [])):
        if len(ids) > limits.max_filter_ids:
            raise TooLarge(f"{name}: {len(ids)} ids exceed the limit of {limits.max_filter_ids}")
    if options.ef_search is not None and not 1 <= options.ef_search <= limits.max_ef_search:
        raise InputError(f"params.ef_search: must be between 1 and {limits.max_ef_search}, got {options.ef_search}")
    if options.nprobe is not None and options.nprobe < 1:
        raise InputError(f"params.nprobe: must be at least 1, got {options.nprobe}")


def check_finite(vectors: np.ndarray, dim: int, collection: str, field_name: str) -> None:
    """Dimension and finiteness checks with the field and row named."""
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        got = vectors.shape[-1] if vectors.ndim else 0
        raise InputError(f"{field_name}: dimension {dim} expected by collection {collection!r}, got {got}")
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        where = f"{field_name}[{row}]" if len(vectors) > 1 else field_name
        raise InputError(f"{where}: holds NaN or Inf; every value must be a finite number")


def check_zero(queries: Prepared, metric: str, normalizes: bool, field_name: str) -> None:
    """Under normalizing metrics a zero-norm query has no score: say so instead of returning noise."""
    if normalizes:
        zero = queries.zero_rows()
        if zero.any():
            row = int(np.flatnonzero(zero)[0])
            where = f"{field_name}[{row}]" if len(queries) > 1 else field_name
            raise InputError(f"{where}: zero-norm vector has no {metric} score")
