"""Checking a published version before anything trusts it: checksums, shapes, index loads.

FAISS readers can crash the process on a corrupt file, so every file's sha256 is
compared with the manifest before FAISS or numpy opens it.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from index_builder.artifact.attributes import Column, open_part, read_dictionaries
from index_builder.artifact.errors import ArtifactError, ChecksumMismatch
from index_builder.artifact.layout import sha256_file
from index_builder.artifact.manifest import Manifest, ShardEntry
from index_builder.retrieval.faiss_params import read_index


def _shared_files(manifest: Manifest) -> set[str]:
    return {m.whitening_file for m in manifest.metrics.values() if m.whitening_file}


def part_files(manifest: Manifest, part: ShardEntry) -> set[str]:
    """The files one part (shard) needs: its own plus those every part shares."""
    indexes = set(manifest.part_structure_files(part))
    return {part.vectors_file, part.ids_file, *indexes, *manifest.attribute_files(part)} | _shared_files(manifest)


def verify_checksums(
    manifest: Manifest, version_path: Path, part: ShardEntry | None = None, unread: frozenset[str] = frozenset()
) -> None:
    """Raise ChecksumMismatch naming the first file whose size or sha256 differs.

    With `part`, only that shard's files and the shared ones are read (a shard server's check);
    files in `unread` are left to whoever opens them.
    """
    for name in sorted(manifest.files):
        if Path(name).name != name:
            raise ArtifactError(f"manifest lists a file outside its version directory: {name!r}")
    referenced = set().union(*(part_files(manifest, p) for p in manifest.parts()))
    unlisted = sorted(referenced - set(manifest.files))
    if unlisted:
        raise ArtifactError(f"{version_path}: {unlisted[0]} is used but has no checksum in the manifest")
    wanted = part_files(manifest, part) if part is not None else set(manifest.files)
    for name in sorted(wanted - unread):
        entry, path = manifest.files[name], version_path / name
        if not path.is_file():
            raise ChecksumMismatch(f"{path} is missing")
        if path.stat().st_size != entry.bytes:
            raise ChecksumMismatch(f"{path}: size {path.stat().st_size} bytes, manifest says {entry.bytes}")
        if sha256_file(path) != entry.sha256:
            raise ChecksumMismatch(f"{path}: sha256 does not match the manifest")


def open_vectors(manifest: Manifest, version_path: Path, part: ShardEntry) -> np.ndarray:
    """One part's raw float32 vectors, memory-mapped read-only, checked against the manifest's shape.

    Returned as a plain ndarray view of the mapping: np.memmap's Python-level __getitem__
    costs more than the row gathers it wraps.
    """
    path = version_path / part.vectors_file
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from None
    if vectors.dtype != np.float32 or vectors.shape != (part.count, manifest.dim):
        raise ArtifactError(
            f"{path}: float32 ({part.count}, {manifest.dim}) expected, got {vectors.dtype} {vectors.shape}"
        )
    return np.asarray(vectors)


def open_attributes(manifest: Manifest, version_path: Path, part: ShardEntry) -> dict[str, Column]:
    """One part's attribute columns (none when the version has no attributes), shapes checked."""
    if not manifest.attributes:
        return {}
    dictionaries = read_dictionaries(version_path)
    return open_part(version_path, part.name, manifest.attribute_types(), dictionaries, part.count)


def read_ids(version_path: Path, part: ShardEntry) -> list[str]:
    """One part's document ids in row order, checked against its count."""
    path = version_path / part.ids_file
    ids = path.read_text(encoding="utf-8").split("\n")
    if ids and ids[-1] == "":
        ids.pop()
    if len(ids) != part.count:
        raise ArtifactError(f"{path}: {part.count} ids expected, got {len(ids)}")
    return ids


def open_indexes(
    manifest: Manifest, version_path: Path, part: ShardEntry, metric: str, mmap: bool
) -> list[faiss.Index]:
    """One part's FAISS index(es) of a metric (one per norm range when ranged), checked against the
    count and dimension the manifest promises."""
    entry = manifest.metrics[metric].index
    files = manifest.part_index_files(part, metric)
    indexes = [read_index(version_path / file, mmap=mmap) for file in files]
    expected_dim = manifest.dim + entry.layout.augmented
    total = sum(index.ntotal for index in indexes)
    if total != part.index_counts[metric] or any(index.d != expected_dim for index in indexes):
        raise ArtifactError(
            f"{files[0]}: {part.index_counts[metric]} vectors of dimension {expected_dim} expected for {metric}, "
            f"got {total} of {indexes[0].d}"
        )
    return indexes


def open_filter_index(
    manifest: Manifest, version_path: Path, part: ShardEntry, metric: str, mmap: bool
) -> faiss.Index | None:
    """One part's filter index of a metric (None when it has none), checked against the rows its
    index holds and the dimension of its layout."""
    file = manifest.part_filter_file(part, metric)
    entry = manifest.metrics[metric].index.filter_index
    if file is None or entry is None:
        return None
    index = read_index(version_path / file, mmap=mmap)
    expected_dim = manifest.dim + entry.layout.augmented
    if index.ntotal != part.index_counts[metric] or index.d != expected_dim:
        raise ArtifactError(
            f"{file}: {part.index_counts[metric]} vectors of dimension {expected_dim} expected for {metric}, "
            f"got {index.ntotal} of {index.d}"
        )
    return index


def open_value_indexes(
    manifest: Manifest, version_path: Path, part: ShardEntry, metric: str, mmap: bool
) -> list[faiss.Index]:
    """One part's value indexes of a metric, in the manifest's order, each checked to hold at most
    the rows its index holds in the dimension of its layout."""
    out = []
    entries = manifest.metrics[metric].index.value_indexes
    for file, entry in zip(manifest.part_value_files(part, metric), entries, strict=True):
        index = read_index(version_path / file, mmap=mmap)
        expected_dim = manifest.dim + entry.layout.augmented
        if index.ntotal > part.index_counts[metric] or index.d != expected_dim:
            raise ArtifactError(
                f"{file}: at most {part.index_counts[metric]} vectors of dimension {expected_dim} expected for "
                f"{metric}, got {index.ntotal} of {index.d}"
            )
        out.append(index)
    return out


def verify_version(manifest: Manifest, version_path: Path) -> None:
    """Full check: checksums, then every file loads with the shape the manifest promises."""
    verify_checksums(manifest, version_path)
    verify_shapes(manifest, version_path)


def verify_shapes(manifest: Manifest, version_path: Path) -> None:
    """Every part's vectors, ids and indexes load with the counts and dimensions the manifest promises."""
    if sum(p.count for p in manifest.parts()) != manifest.count:
        raise ArtifactError(f"{version_path}: shard counts do not add up to {manifest.count}")
    for part in manifest.parts():
        open_vectors(manifest, version_path, part)
        read_ids(version_path, part)
        open_attributes(manifest, version_path, part)
        for name in manifest.metrics:
            open_indexes(manifest, version_path, part, name, mmap=True)
            open_filter_index(manifest, version_path, part, name, mmap=True)
            open_value_indexes(manifest, version_path, part, name, mmap=True)
    for name in manifest.metrics:
        manifest.metric_space(name, version_path)
