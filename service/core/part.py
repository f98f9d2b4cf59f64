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
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from index_builder.artifact.attributes import Column
from index_builder.artifact.integrity import open_attributes, open_indexes, open_vectors, read_ids, verify_checksums
from index_builder.artifact.manifest import Manifest, ShardEntry
from index_builder.retrieval.ann import ServedIndex
from index_builder.retrieval.rowsets import RowSet, contains, intersect
from index_builder.retrieval.scoring import MISSING, Prepared, doc_scales, score_rows
from service.core.filters import Node, evaluate
from service.core.query import Answer, Query, run_search

log = logging.getLogger(__name__)

SCALE_BLOCK_ROWS = 65536
NO_ROWS = np.empty(0, dtype=np.int64)
NO_ROWS.flags.writeable = False


@dataclass(frozen=True)
class Part:
    """Immutable once loaded: a request holds its version for its whole life, so a swap never tears it."""

    ids: np.ndarray
    rows_by_id: dict[str, int]
    vectors: np.ndarray
    indexes: dict[str, ServedIndex]
    offset: int
    columns: dict[str, Column]

    def known_rows(self, ids: list[str]) -> np.ndarray:
        """Local row numbers of the ids this part holds (the others are ignored), sorted, unique."""
        if not ids:
            return NO_ROWS
        found = np.fromiter(map(self.rows_by_id.get, ids, repeat(-1)), dtype=np.int64, count=len(ids))
        return np.unique(found[found >= 0])

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


def load_part(manifest: Manifest, path: Path, entry: ShardEntry, offset: int, mmap: bool) -> Part:
    """Load one part after checking its files' checksums (FAISS may crash on a corrupt file)."""
    verify_checksums(manifest, path, entry)
    vectors = open_vectors(manifest, path, entry)
    ids = read_ids(path, entry)
    indexes = {}
    for name, metric in manifest.metrics.items():
        space = manifest.metric_space(name, path)
        scales = doc_scales(space, vectors, SCALE_BLOCK_ROWS)
        indexes[name] = ServedIndex.of(
            open_indexes(manifest, path, entry, name, mmap),
            space,
            metric.index.layout,
            metric.index.refine_factor,
            vectors,
            scales,
        )
    return Part(
        ids=np.array(ids, dtype=object),
        rows_by_id={doc_id: row for row, doc_id in enumerate(ids)},
        vectors=vectors,
        indexes=indexes,
        offset=offset,
        columns=open_attributes(manifest, path, entry),
    )


def load_parts(manifest: Manifest, path: Path, mmap: bool, only: int | None = None) -> list[Part]:
    """Every part of a version in row order (or just part `only`, as a Ray replica loads its shard)."""
    start = time.perf_counter()
    entries = manifest.parts()
    offsets = np.cumsum([0, *[entry.count for entry in entries]])
    chosen = range(len(entries)) if only is None else [only]
    parts = [load_part(manifest, path, entries[i], int(offsets[i]), mmap) for i in chosen]
    log.debug(
        "loaded %d part(s) of %s/%s in %.2fs",
        len(parts),
        manifest.collection,
        manifest.version,
        time.perf_counter() - start,
    )
    return parts


def allowed_rows(part: Part, query: Query) -> RowSet | None:
    """The part's rows that pass the filter and still stand (None: every row)."""
    total = len(part.ids)
    allowed = None if query.where is None else evaluate(query.where, part.columns, part.known_rows, total)
    visible = None if query.overlay is None else query.overlay.hidden.visible(part.offset, total)
    if visible is None:
        return allowed
    return visible if allowed is None else intersect(allowed, visible, total)


def search_part(part: Part, query: Query) -> Answer:
    """This part's top-k per query among its rows passing the filter, with version-wide rows, ids
    and the attributes asked for."""
    scores, rows = run_search(part.indexes[query.metric], query, allowed_rows(part, query))
    labels = part.labels(rows)
    attrs = part.attributes(rows, query.fields) if query.fields else None
    if part.offset:
        rows = np.where(rows == MISSING, MISSING, rows + part.offset)
    return Answer(scores, rows, labels, attrs)


def known_ids(part: Part, ids: list[str]) -> list[str]:
    """The ids this part holds, in the order given."""
    return [i for i in ids if i in part.rows_by_id]


def vector_of(part: Part, doc_id: str) -> np.ndarray | None:
    """A stored document's vector as a (1, d) float32 array, or None when another part holds it."""
    row = part.rows_by_id.get(doc_id)
    return None if row is None else np.asarray(part.vectors[row : row + 1], dtype=np.float32)


def score_part(
    part: Part, metric: str, queries: Prepared, ids: list[list[str]], where: Node | None = None
) -> list[list[float | None]]:
    """Exact scores of the candidates this part holds, in the order given (None for the others;
    NaN for those the filter `where` leaves out)."""
    served = part.indexes[metric]
    passing = None if where is None else evaluate(where, part.columns, part.known_rows, len(part.ids))
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


OPS = {fn.__name__: fn for fn in (search_part, known_ids, vector_of, score_part)}
