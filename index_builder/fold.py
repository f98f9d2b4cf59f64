"""`build --from-current`: the active version's documents with the change journal applied, written
as an ordinary build input (vectors .npy, ids, attributes parquet) so the build runs unchanged.

Order of the result: the stored documents neither deleted nor replaced, in the version's row
order (with their pending attribute changes merged in), then every upserted document in the
order it was first upserted since its last delete (the order of `Pending.upserts`).
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
from index_builder.artifact.journal import Pending
from index_builder.artifact.lifecycle import span_of
from index_builder.artifact.manifest import Manifest
from index_builder.attributes import ARROW_TYPES, AttributeSpec
from index_builder.pending import Fold, fold_line, settled
from index_builder.readers import ParquetColumns
from index_builder.staging import InputSpec, VectorWriter

log = logging.getLogger(__name__)

BLOCK_ROWS = 65536


@dataclass(frozen=True)
class Folded:
    """The build input of current + journal, and the fold it makes."""

    inputs: InputSpec
    attributes: AttributeSpec | None
    fold: Fold
    source: str


def export_current(root: Path, collection: str, work: Path) -> Folded:
    """Write the active version plus every change pending on it into `work` (read under the
    journal's lock, so the fold point is one position; changes accepted while the build runs
    stay pending on the new version)."""
    with settled(root, collection) as now:
        if now.active is None or now.path is None:
            raise InputError(f"--from-current: collection {collection!r} has no active version under {root}")
        manifest, path, changes = now.active, now.path, now.pending()
        end = now.end
    pending = Pending.of(changes)
    gone = pending.deletes | pending.upserts.keys()
    entries = manifest.parts()
    kept_per_part: list[np.ndarray] = []
    ids: list[str] = []
    for entry in entries:
        part_ids = read_ids(path, entry)
        keep = np.array([i for i, doc_id in enumerate(part_ids) if doc_id not in gone], dtype=np.int64)
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
    (work / "ids.txt").write_text("".join(f"{doc_id}\n" for doc_id in [*ids, *upserted]), encoding="utf-8")
    attributes = None
    if manifest.attributes:
        _write_attributes(manifest, path, kept_per_part, ids, pending, work / "attributes.parquet")
        attributes = AttributeSpec(None, work / "attributes.parquet")
    folded = span_of(changes)
    log.info(
        "%s: version %s (%d documents) + %s -> %d documents",
        collection,
        manifest.version,
        manifest.count,
        fold_line({"folded": folded} if folded else {}),
        total,
    )
    inputs = InputSpec([work / "vectors.npy"], "npy", ParquetColumns("id", "vector", False), [work / "ids.txt"])
    fold = Fold(end, {"folded": folded} if folded else {})
    return Folded(inputs, attributes, fold, f"{manifest.version}+journal:{end}")


def _write_attributes(
    manifest: Manifest, path: Path, kept_per_part: list[np.ndarray], ids: list[str], pending: Pending, out: Path
) -> None:
    """The attributes of the folded documents as a side file: stored values with the pending
    attribute changes merged in (in row order), then the upserted documents' own."""
    values: dict[str, list[Any]] = {name: [] for name in manifest.attributes}
    for entry, keep in zip(manifest.parts(), kept_per_part, strict=True):
        columns = open_attributes(manifest, path, entry)
        for name in manifest.attributes:
            values[name].extend(_values(columns[name], keep))
    for at, doc_id in enumerate(ids):
        for name, value in pending.patches.get(doc_id, {}).items():
            values[name][at] = value
    for doc_id in pending.upserts:
        given = pending.upserts[doc_id][1] or {}
        for name in manifest.attributes:
            values[name].append(given.get(name))
    table = pa.table(
        {
            "id": pa.array([*ids, *pending.upserts], pa.large_string()),
            **{name: pa.array(values[name], ARROW_TYPES[a.type]) for name, a in manifest.attributes.items()},
        }
    )
    pq.write_table(table, out)


def _values(column: Column, rows: np.ndarray) -> list[Any]:
    return [column.value(int(row)) for row in rows]
