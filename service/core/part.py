"""One loaded part of a version (the whole version when unsharded) and what a part answers.

A part holds its documents' ids, raw vectors and one index per metric; its rows are numbered
from `offset`, its place in the version's row order. The functions here are all a part does for
a request: they run in this process for local parts and inside a Ray Serve replica for remote
ones, so both answer identically. Each is lenient about ids the part does not hold; the version
decides whether an id is unknown to the whole collection.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from index_builder.artifact.attributes import Column
from index_builder.artifact.integrity import (
    open_attributes,
    open_filter_index,
    open_indexes,
    open_value_indexes,
    open_vectors,
    read_ids,
    verify_checksums,
)
from index_builder.artifact.manifest import Manifest, ShardEntry
from index_builder.retrieval.ann import ServedIndex
from index_builder.retrieval.rowsets import RowSet, contains, count, intersect, listed, nbytes, read_only, sorted_unique
from index_builder.retrieval.scoring import MISSING, Prepared, doc_scales, score_rows
from service.core.filters import Node, evaluate, names_ids, required_values
from service.core.idtable import MISSING_ROW, LazyIdTable
from service.core.lru import Lru
from service.core.planner import run_search
from service.core.query import Answer, Hidden, Query

log = logging.getLogger(__name__)

SCALE_BLOCK_ROWS = 65536
NO_ROWS = np.empty(0, dtype=np.int64)
NO_ROWS.flags.writeable = False


PASSING_CACHED = 4
"""Row lists of filters a part keeps for scrolls (one per filter and journal position)."""
FILTER_CACHE_BYTES = 32 << 20
"""Bytes of evaluated filters a part keeps (about 14 sets passing a large share of a million-row
part, each with its restriction to a cosine index's rows): evaluating a range or keyword filter
over a million rows costs 0.2-1.5 ms, one to six unfiltered searches, and the filters of a
service's traffic repeat (Lucene's query cache, per segment, keeps filter bitsets for the same
reason)."""


def row_cache() -> Lru[np.ndarray]:
    """The sorted rows passing a filter at a journal position, kept for the next pages of a scroll
    (a filter is evaluated over the whole part; a page is a slice of its rows)."""
    return Lru(PASSING_CACHED, lambda rows: 1)


def filter_cache() -> Lru[RowSet]:
    """Evaluated filters by their checked tree (a part never changes, so they never go stale)."""
    return Lru(FILTER_CACHE_BYTES, nbytes)


class Doc(NamedTuple):
    """A document read back: its id, and its vector and attributes when asked for."""

    id: str
    vector: np.ndarray | None
    attributes: dict[str, Any] | None


@dataclass(frozen=True)
class Part:
    """Immutable once loaded: a request holds its version for its whole life, so a swap never tears it."""

    ids: np.ndarray
    vectors: np.ndarray
    indexes: dict[str, ServedIndex]
    offset: int
    columns: dict[str, Column]
    filters: dict[str, ServedIndex] = field(default_factory=dict)
    """Per metric, the filter index a filtered search may take instead (service.core.planner)."""
    values: dict[str, dict[tuple[str, str], ServedIndex]] = field(default_factory=dict)
    """Per metric, the index of each frequent keyword value's documents (attribute, value)."""
    cache: Lru[np.ndarray] = field(default_factory=row_cache, compare=False)
    filtered: Lru[RowSet] = field(default_factory=filter_cache, compare=False)
    rows_by_id: dict[str, int] = field(init=False, compare=False)
    table: LazyIdTable = field(init=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {doc_id: row for row, doc_id in enumerate(self.ids)}
        object.__setattr__(self, "rows_by_id", by_id)
        object.__setattr__(self, "table", LazyIdTable(self.ids, by_id))

    def known_rows(self, ids: list[str]) -> np.ndarray:
        """Local row numbers of the ids this part holds (the others are ignored), sorted, unique."""
        if not ids:
            return NO_ROWS
        found = self.table.lookup(ids)
        return sorted_unique(found[found != MISSING_ROW])

    def passing(self, where: Node) -> RowSet:
        """The rows passing a filter tree; trees naming no ids are evaluated once and kept (an id
        list is one user's, so it would rarely come again, and hashing it costs what it saves)."""
        if names_ids(where):
            return evaluate(where, self.columns, self.known_rows, len(self.ids))
        found = self.filtered.get(where)
        if found is None:
            found = read_only(evaluate(where, self.columns, self.known_rows, len(self.ids)))
            self.filtered.put(where, found)
        return found

    def narrowed(self, metric: str, where: Node | None) -> ServedIndex | None:
        """The smallest value index holding every document the filter can pass: one of a keyword
        value the tree requires (None when it requires none that has an index)."""
        held = self.values.get(metric)
        if not held or where is None:
            return None
        found = [held[value] for value in required_values(where) if value in held]
        return min(found, key=lambda served: served.ntotal, default=None)

    def labels(self, rows: np.ndarray) -> np.ndarray:
        """Ids of local rows (None for MISSING)."""
        if not (rows == MISSING).any():
            return np.asarray(self.ids[rows])
        out = np.full(rows.shape, None, dtype=object)
        found = rows != MISSING
        out[found] = self.ids[rows[found]]
        return out

    def attributes(self, rows: np.ndarray, fields: tuple[str, ...]) -> np.ndarray:
        """Each local row's attributes `fields` as a dict (None for MISSING)."""
        out = np.full(rows.shape, None, dtype=object)
        for at in zip(*np.nonzero(rows != MISSING), strict=True):
            row = int(rows[at])
            out[at] = {name: self.columns[name].value(row) for name in fields}
        return out


def load_part(manifest: Manifest, path: Path, entry: ShardEntry, offset: int, mmap: bool, indexed: bool = True) -> Part:
    """Load one part after checking its files' checksums (FAISS may crash on a corrupt file).
    Without `indexed`, only its ids, vectors and attributes (and only their checksums read): what
    a Ray front keeps to apply changes and read documents back while the replicas hold, and check,
    the indexes."""
    unread = frozenset() if indexed else frozenset(manifest.part_structure_files(entry))
    verify_checksums(manifest, path, entry, unread)
    vectors = open_vectors(manifest, path, entry)
    indexes, filters, values = open_searchable(manifest, path, entry, vectors, mmap) if indexed else ({}, {}, {})
    return Part(
        ids=np.array(read_ids(path, entry), dtype=object),
        vectors=vectors,
        indexes=indexes,
        offset=offset,
        columns=open_attributes(manifest, path, entry),
        filters=filters,
        values=values,
    )


def open_searchable(
    manifest: Manifest, path: Path, entry: ShardEntry, vectors: np.ndarray, mmap: bool
) -> tuple[dict[str, ServedIndex], dict[str, ServedIndex], dict[str, dict[tuple[str, str], ServedIndex]]]:
    """A part's index per metric, the filter index of those built with one, and their value indexes."""
    indexes, filters, values = {}, {}, {}
    for name, metric in manifest.metrics.items():
        space = manifest.metric_space(name, path)
        scales = doc_scales(space, vectors, SCALE_BLOCK_ROWS)
        built = metric.index
        indexes[name] = ServedIndex.of(
            open_indexes(manifest, path, entry, name, mmap), space, built.layout, built.refine_factor, vectors, scales
        )
        lists = open_filter_index(manifest, path, entry, name, mmap)
        if lists is not None and built.filter_index is not None:
            filters[name] = ServedIndex.of(
                [lists], space, built.filter_index.layout, built.filter_index.refine_factor, vectors, scales
            )
        values[name] = {
            (value.attribute, value.value): ServedIndex.of(
                [index], space, value.layout, value.refine_factor, vectors, scales
            )
            for value, index in zip(
                built.value_indexes, open_value_indexes(manifest, path, entry, name, mmap), strict=True
            )
        }
    return indexes, filters, values


def load_parts(manifest: Manifest, path: Path, mmap: bool, only: int | None = None, indexed: bool = True) -> list[Part]:
    """Every part of a version in row order (or just part `only`, as a Ray replica loads its shard)."""
    start = time.perf_counter()
    entries = manifest.parts()
    offsets = np.cumsum([0, *[entry.count for entry in entries]])
    chosen = range(len(entries)) if only is None else [only]
    parts = [load_part(manifest, path, entries[i], int(offsets[i]), mmap, indexed) for i in chosen]
    log.debug(
        "loaded %d part(s) of %s/%s in %.2fs",
        len(parts),
        manifest.collection,
        manifest.version,
        time.perf_counter() - start,
    )
    return parts


def _passing(part: Part, where: Node | None, hidden: Hidden | None) -> RowSet | None:
    """The rows that pass the filter and still stand (None: every row)."""
    total = len(part.ids)
    allowed = None if where is None else part.passing(where)
    visible = None if hidden is None else hidden.visible(part.offset, total)
    if visible is None:
        return allowed
    return visible if allowed is None else intersect(allowed, visible, total)


def search_part(part: Part, query: Query) -> Answer:
    """This part's top-k per query among its rows passing the filter, with version-wide rows, ids
    and the attributes asked for."""
    hidden = None if query.overlay is None else query.overlay.hidden
    allowed = _passing(part, query.where, hidden)
    narrowed = part.narrowed(query.metric, query.where)
    if narrowed is None:
        scores, rows = run_search(part.indexes[query.metric], part.filters.get(query.metric), query, allowed)
    else:
        scores, rows = run_search(narrowed, None, query, allowed)
    labels = part.labels(rows)
    attrs = part.attributes(rows, query.fields) if query.fields else None
    if part.offset:
        rows = np.where(rows == MISSING, MISSING, rows + part.offset)
    return Answer(scores, rows, labels, attrs)


def search_parts(parts: list[Part], query: Query) -> Answer:
    """The top-k per query over several parts, merged by true score."""
    return Answer.merge([search_part(part, query) for part in parts], query.options.k)


def known_ids(part: Part, ids: list[str]) -> list[str]:
    """The ids this part holds, in the order given."""
    return [i for i in ids if i in part.rows_by_id]


def score_part(
    part: Part, metric: str, queries: Prepared, ids: list[list[str]], where: Node | None = None
) -> list[list[float | None]]:
    """Exact scores of the candidates this part holds, in the order given (None for the others;
    NaN for those the filter `where` leaves out)."""
    served = part.indexes[metric]
    passing = None if where is None else part.passing(where)
    out: list[list[float | None]] = []
    for i, candidates in enumerate(ids):
        known = [c for c in candidates if c in part.rows_by_id]
        rows = np.fromiter((part.rows_by_id[c] for c in known), dtype=np.int64, count=len(known))
        scores = score_rows(served.space, queries.row(i), served.vectors, served.scales, rows[None, :])[0]
        if passing is not None:
            scores = np.where(contains(passing, rows), scores, np.nan)
        by_id = dict(zip(known, scores.tolist(), strict=True))
        out.append([by_id.get(c) for c in candidates])
    return out


def doc_at(part: Part, row: int, fields: tuple[str, ...], with_vectors: bool) -> Doc:
    """The document at a local row, with the attributes `fields` and, asked, its vector."""
    vector = np.asarray(part.vectors[row], dtype=np.float32) if with_vectors else None
    attributes = {name: part.columns[name].value(row) for name in fields} if fields else None
    return Doc(str(part.ids[row]), vector, attributes)


def documents_of(part: Part, ids: list[str], fields: tuple[str, ...], with_vectors: bool) -> list[Doc | None]:
    """This part's documents among `ids`, in the order given (None for those it does not hold)."""
    rows = [part.rows_by_id.get(i) for i in ids]
    return [None if row is None else doc_at(part, row, fields, with_vectors) for row in rows]


def count_of(part: Part, where: Node | None, hidden: Hidden | None) -> int:
    """How many of this part's documents pass the filter and still stand."""
    passing = _passing(part, where, hidden)
    return len(part.ids) if passing is None else count(passing, len(part.ids))


def page_of(
    part: Part, where: Node | None, hidden: Hidden | None, pin: Any, start: int, page: tuple[int, tuple[str, ...], bool]
) -> tuple[list[Doc], int | None]:
    """Up to `limit` documents passing the filter from local row `start` on, in row order, and the
    row after the last one given (None when the part has no more). `pin` names the filter and the
    journal position, under which the passing rows are kept for the next page."""
    limit, fields, with_vectors = page
    rows = part.cache.get(pin)
    if rows is None:
        passing = _passing(part, where, hidden)
        rows = np.arange(len(part.ids), dtype=np.int64) if passing is None else listed(passing, len(part.ids))
        part.cache.put(pin, rows)
    at = int(np.searchsorted(rows, start))
    chosen = rows[at : at + limit]
    following = int(chosen[-1]) + 1 if at + limit < len(rows) else None
    return [doc_at(part, int(row), fields, with_vectors) for row in chosen], following


OPS = {fn.__name__: fn for fn in (search_part, known_ids, score_part, documents_of, count_of, page_of)}
