"""Checking a published version before anything trusts it: checksums, shapes, index loads.

FAISS readers can crash the process on a corrupt file, so every file's sha256 is
compared with the manifest before FAISS or numpy opens it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from index_builder.contract.errors import ArtifactError, ChecksumMismatch
from index_builder.contract.faiss_index import read_index
from index_builder.contract.layout import sha256_file
from index_builder.contract.manifest import Manifest


def verify_checksums(manifest: Manifest, version_path: Path) -> None:
    """Raise ChecksumMismatch naming the first file whose size or sha256 differs."""
    for name, entry in sorted(manifest.files.items()):
        path = version_path / name
        if Path(name).name != name:
            raise ArtifactError(f"manifest lists a file outside its version directory: {name!r}")
        if not path.is_file():
            raise ChecksumMismatch(f"{path} is missing")
        if path.stat().st_size != entry.bytes:
            raise ChecksumMismatch(f"{path}: size {path.stat().st_size} bytes, manifest says {entry.bytes}")
        if sha256_file(path) != entry.sha256:
            raise ChecksumMismatch(f"{path}: sha256 does not match the manifest")
    referenced = {manifest.vectors_file, manifest.ids_file}
    referenced |= {m.index.file for m in manifest.metrics.values()}
    referenced |= {m.whitening_file for m in manifest.metrics.values() if m.whitening_file}
    unlisted = sorted(referenced - set(manifest.files))
    if unlisted:
        raise ArtifactError(f"{version_path}: {unlisted[0]} is used but has no checksum in the manifest")


def open_vectors(manifest: Manifest, version_path: Path) -> np.ndarray:
    """The raw float32 vectors, memory-mapped read-only, checked against the manifest's shape.

    Returned as a plain ndarray view of the mapping: np.memmap's Python-level __getitem__
    costs more than the row gathers it wraps.
    """
    path = version_path / manifest.vectors_file
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from None
    if vectors.dtype != np.float32 or vectors.shape != (manifest.count, manifest.dim):
        raise ArtifactError(
            f"{path}: float32 ({manifest.count}, {manifest.dim}) expected, "
            f"got {vectors.dtype} {vectors.shape}"
        )
    return np.asarray(vectors)


def read_ids(manifest: Manifest, version_path: Path) -> list[str]:
    """Document ids in row order, checked against the manifest's count."""
    path = version_path / manifest.ids_file
    ids = path.read_text(encoding="utf-8").split("\n")
    if ids and ids[-1] == "":
        ids.pop()
    if len(ids) != manifest.count:
        raise ArtifactError(f"{path}: {manifest.count} ids expected, got {len(ids)}")
    return ids


def verify_version(manifest: Manifest, version_path: Path) -> None:
    """Full check: checksums, then every file loads with the shape the manifest promises."""
    verify_checksums(manifest, version_path)
    open_vectors(manifest, version_path)
    read_ids(manifest, version_path)
    for name, entry in manifest.metrics.items():
        index = read_index(version_path / entry.index.file)
        if index.ntotal != entry.index.count:
            raise ArtifactError(
                f"{entry.index.file}: {entry.index.count} vectors expected for {name}, got {index.ntotal}"
            )
        manifest.metric_space(name, version_path)
