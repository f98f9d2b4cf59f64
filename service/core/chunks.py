"""Chunks of changed documents (service.core.overlay): searchable at once through exact scans,
and, once a chunk passes DOTCOS_OVERLAY_INDEX_ROWS, indexed in the background the way the stored
parts are (HNSW), since an exact scan of 100,000 rows costs as much as dozens of HNSW searches.
The indexed chunk replaces the scanned one in the next snapshot; rows and ids stay as they were.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import faiss
import numpy as np

from index_builder.artifact.attributes import Column, column_of
from index_builder.artifact.manifest import Manifest
from index_builder.retrieval.ann import ServedIndex
from index_builder.retrieval.scoring import doc_scales, indexed_rows
from index_builder.retrieval.spaces import Layout, MetricSpace
from service.core.part import Part

log = logging.getLogger(__name__)

ENTRY_OVERHEAD = 200
"""Bytes an overlay entry costs beyond its vector: dict slots, the id, index and row bookkeeping."""
INDEXING = threading.Lock()
"""One chunk is indexed at a time in a process, whatever the collection: it is background work."""

Document = tuple[np.ndarray, dict[str, Any] | None]


def filled(index: faiss.Index, space: MetricSpace, vectors: np.ndarray, scales: np.ndarray, refine: int) -> ServedIndex:
    """`index` holding the rows of `vectors` the metric indexes, served in the inner-product layout
    (trained on those rows first where its codes need it, as HNSW over int8 codes does)."""
    rows = indexed_rows(space, scales)
    if len(rows):
        prepared = space.prepare_documents(vectors[rows])
        if not index.is_trained:
            index.train(prepared)
        index.add_with_ids(prepared, rows)
    return ServedIndex.of([index], space, Layout.IP, refine, vectors, scales)


def make_chunk(documents: dict[str, Document], manifest: Manifest, spaces: dict[str, MetricSpace], offset: int) -> Part:
    """Changed documents (at least one) as an exactly searched part numbered from `offset`."""
    ids = list(documents)
    vectors = np.stack([documents[i][0] for i in ids]).astype(np.float32)
    indexes = {}
    for name, space in spaces.items():
        scales = doc_scales(space, vectors, len(vectors))
        indexes[name] = filled(faiss.IndexIDMap(faiss.IndexFlatIP(manifest.dim)), space, vectors, scales, 1)
    values = [documents[i][1] or {} for i in ids]
    columns: dict[str, Column] = {
        key: column_of(entry.type, [v.get(key) for v in values]) for key, entry in manifest.attributes.items()
    }
    return Part(ids=np.array(ids, dtype=object), vectors=vectors, indexes=indexes, offset=offset, columns=columns)


def entry_bytes(vectors: np.ndarray, metrics: int) -> int:
    """Memory the upserted documents `vectors` take: raw, one prepared copy per metric, bookkeeping."""
    return vectors.nbytes * (1 + metrics) + len(vectors) * ENTRY_OVERHEAD


def indexable(manifest: Manifest) -> list[str]:
    """The metrics whose stored index a chunk can be given too: HNSW over inner products, so the
    search takes the stored index's tuned efSearch for the chunk as well."""
    entries = {name: metric.index for name, metric in manifest.metrics.items()}
    return [name for name, entry in entries.items() if entry.kind == "hnsw" and not entry.layout.augmented]


def scanned(chunk: Part, manifest: Manifest) -> bool:
    """Whether the chunk is still searched exactly where it could have an index like the stored one."""
    return any(chunk.indexes[name].exact for name in indexable(manifest))


def indexed(chunk: Part, manifest: Manifest) -> Part:
    """The same chunk with an index like the stored one for every metric that has one to copy."""
    indexes = dict(chunk.indexes)
    ef_construction = manifest.build_params.get("ef_construction")
    for name in indexable(manifest):
        entry, served = manifest.metrics[name].index, chunk.indexes[name]
        built = faiss.index_factory(manifest.dim, entry.factory, faiss.METRIC_INNER_PRODUCT)
        inner = faiss.downcast_index(built)
        if isinstance(inner, faiss.IndexHNSW) and ef_construction is not None:
            inner.hnsw.efConstruction = int(ef_construction)
        index = faiss.IndexIDMap(built)
        indexes[name] = filled(index, served.space, chunk.vectors, served.scales, entry.refine_factor)
    return replace(chunk, indexes=indexes)


def index_later(chunk: Part, manifest: Manifest, done: Callable[[Part, Part], None]) -> None:
    """Index the chunk on a background thread, then hand `done` the chunk and its indexed twin."""

    name = manifest.collection

    def run() -> None:
        try:
            with INDEXING:
                twin = indexed(chunk, manifest)
        except Exception:
            log.exception("indexing %d changed documents of %s failed; they stay scanned", len(chunk.ids), name)
            return
        done(chunk, twin)

    threading.Thread(target=run, name="dotcos-chunk-index", daemon=True).start()
