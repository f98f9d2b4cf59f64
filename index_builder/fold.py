"""`build --from-current`: the active version's documents with the change journal applied, written
as an ordinary build input (vectors .npy, ids, attributes parquet) so the build runs unchanged.

Order of the result: the stored documents no change touched, in the version's row order, then
every upserted document in the order it was first upserted since its last delete (the order of
`Pending.upserts`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from index_builder.artifact.attributes import Column
from index_builder.artifact.errors import InputError
from index_builder.artifact.integrity import open_attributes, open_vectors, read_ids, verify_checksums
from index_builder.artifact.journal import Journal, Pending
from index_builder.artifact.layout import read_current, version_dir
from index_builder.artifact.manifest import read_manifest
from index_builder.attributes import ARROW_TYPES, AttributeSpec
from index_builder.readers import ParquetColumns
from index_builder.staging import InputSpec, VectorWriter

log = logging.getLogger(__name__)

BLOCK_ROWS = 65536


@dataclass(frozen=True)
class Folded:
    """The build input of current + journal, and what it includes."""

    inputs: InputSpec
    attributes: AttributeSpec | None
    position: int
    source: str


def export_current(root: Path, collection: str, work: Path) -> Folded:
    """Write the active version plus every journal record after its position into `work`."""
    version = read_current(root, collection)
    path = version_dir(root, collection, version)
    manifest = read_manifest(path)
    journal = Journal(root, collection)
    changes = [c for c in journal.read_new() if c.position > manifest.journal_position]
    pending = Pending.of(changes)
    pending.position = max(journal.position, manifest.journal_position)
    touched = pending.touched()
    entries = manifest.parts()
    kept_per_part: list[np.ndarray] = []
    ids: list[str] = []
    for entry in entries:
        part_ids = read_ids(path, entry)
        keep = np.array([i for i, doc_id in enumerate(part_ids) if doc_id not in touched], dtype=np.int64)
        kept_per_part.append(keep)
        ids.extend(part_ids[i] for i in keep.tolist())
    upserted = list(pending.upserts)
    total = len(ids) + len(upserted)
    if total == 0:
        raise InputError(f"--from-current: every document of {collection!r} is deleted; nothing to build")
    with VectorWriter(work / "vectors.npy", total, manifest.dim) as writer:
        for entry, keep in zip(entries, kept_per_part, strict=True):
            verify_checksums(manifest, path, entry)
            vectors = open_vectors(manifest, path, entry)
            for start in range(0, len(keep), BLOCK_ROWS):
                writer.write(vectors[keep[start : start + BLOCK_ROWS]])
        for start in range(0, len(upserted), BLOCK_ROWS):
            writer.write(np.stack([pending.upserts[i][0] for i in upserted[start : start + BLOCK_ROWS]]))
    ids.extend(upserted)
    (work / "ids.txt").write_text("".join(f"{doc_id}\n" for doc_id in ids), encoding="utf-8")
    attributes = None
    if manifest.attributes:
        values: dict[str, list[Any]] = {name: [] for name in manifest.attributes}
        for entry, keep in zip(entries, kept_per_part, strict=True):
            columns = open_attributes(manifest, path, entry)
            for name in manifest.attributes:
                values[name].extend(_values(columns[name], keep))
        for doc_id in upserted:
            given = pending.upserts[doc_id][1] or {}
            for name in manifest.attributes:
                values[name].append(given.get(name))
        table = pa.table(
            {
                "id": pa.array(ids, pa.large_string()),
                **{name: pa.array(values[name], ARROW_TYPES[a.type]) for name, a in manifest.attributes.items()},
            }
        )
        pq.write_table(table, work / "attributes.parquet")
        attributes = AttributeSpec(None, work / "attributes.parquet")
    log.info(
        "%s: version %s (%d documents) + journal to position %d (%d deleted, %d upserted) -> %d documents",
        collection,
        version,
        manifest.count,
        pending.position,
        len(pending.deletes),
        len(upserted),
        total,
    )
    inputs = InputSpec([work / "vectors.npy"], "npy", ParquetColumns("id", "vector", False), [work / "ids.txt"])
    return Folded(inputs, attributes, pending.position, f"{version}+journal:{pending.position}")


def _values(column: Column, rows: np.ndarray) -> list[Any]:
    return [column.value(int(row)) for row in rows]
