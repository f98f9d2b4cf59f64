"""Loading a published version: verify checksums first, then open files memory-mapped."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import faiss

from index_builder.contract.errors import ArtifactError
from index_builder.contract.integrity import open_indexes, open_vectors, read_ids, verify_checksums
from index_builder.contract.layout import version_dir
from index_builder.contract.manifest import Manifest, ShardEntry, read_manifest
from index_builder.contract.scoring import doc_scales
from index_builder.contract.search import ServedIndex
from service.core.collection import LoadedVersion
from service.core.gather import LocalShards, ShardedVersion

log = logging.getLogger(__name__)

SCALE_BLOCK_ROWS = 65536


def configure_runtime(threads: int, blas_threshold: int, switch_interval_ms: float) -> None:
    """Process-wide knobs of the search runtime, set once at start-up.

    - OpenMP threads FAISS may use per call (cores shared out among workers).
    - From how many queries flat search uses BLAS: FAISS ships a threshold of 20 (128000 in
      some releases); coalesced batches of 16-512 queries run several times faster through BLAS.
    - The GIL switch interval: search threads re-take the GIL between FAISS calls, and with a
      busy event loop each re-take waits up to the interval (5 ms by default in CPython).
    """
    faiss.omp_set_num_threads(threads)
    faiss.cvar.distance_compute_blas_threshold = blas_threshold
    sys.setswitchinterval(switch_interval_ms / 1000)


def load_part(manifest: Manifest, path: Path, part: ShardEntry, mmap: bool = True) -> LoadedVersion:
    """Load one part (the whole version when unsharded) after checking its files' checksums."""
    start = time.perf_counter()
    verify_checksums(manifest, path, part)
    vectors = open_vectors(manifest, path, part)
    ids = read_ids(path, part)
    indexes = {}
    for name, entry in manifest.metrics.items():
        space = manifest.metric_space(name, path)
        scales = doc_scales(space, vectors, SCALE_BLOCK_ROWS)
        indexes[name] = ServedIndex.of(open_indexes(manifest, path, part, name, mmap), space, entry.index.layout,
                                       entry.index.refine_factor, vectors, scales)
    return LoadedVersion(
        collection=manifest.collection, manifest=manifest, path=path, ids=ids,
        rows_by_id={doc_id: row for row, doc_id in enumerate(ids)}, vectors=vectors,
        indexes=indexes, load_seconds=time.perf_counter() - start, loaded_at=datetime.now(UTC),
    )


def read_version(root: Path, collection: str, version: str) -> tuple[Manifest, Path]:
    """The manifest of a published version, checked to name that version."""
    path = version_dir(root, collection, version)
    manifest = read_manifest(path)
    if manifest.collection != collection or manifest.version != version:
        raise ArtifactError(f"{path}: manifest names {manifest.collection}/{manifest.version}")
    return manifest, path


def _load_unsharded(manifest: Manifest, path: Path, mmap: bool) -> LoadedVersion:
    (part,) = manifest.parts()
    loaded = load_part(manifest, path, part, mmap)
    log.info("loaded %s version %s (%d vectors, %s) in %.2fs", manifest.collection, manifest.version,
             manifest.count, ", ".join(loaded.indexes), loaded.load_seconds)
    return loaded


def load_version(root: Path, collection: str, version: str, mmap: bool = True) -> LoadedVersion:
    """Load an unsharded version in this process, refusing it if any file does not match its manifest."""
    manifest, path = read_version(root, collection, version)
    return _load_unsharded(manifest, path, mmap)


Served = LoadedVersion | ShardedVersion
Note = Callable[[str], None]
"""How a loader says, while it works, why a version is not served yet (e.g. waiting for resources)."""


class Loader(Protocol):
    """Turns a published version into something the registry can serve."""

    def start(self) -> None: ...

    def __call__(self, collection: str, version: str, note: Note) -> Served: ...

    def close(self) -> None: ...


class LocalLoader:
    """Loads versions into this process: unsharded ones as before, sharded ones part by part."""

    def __init__(self, root: Path, executor: Executor, mmap: bool = True) -> None:
        self.root, self.executor, self.mmap = root, executor, mmap

    def start(self) -> None:
        return None

    def __call__(self, collection: str, version: str, note: Note) -> Served:
        manifest, path = read_version(self.root, collection, version)
        if not manifest.sharded:
            return _load_unsharded(manifest, path, self.mmap)
        start = time.perf_counter()
        parts = [load_part(manifest, path, part, self.mmap) for part in manifest.parts()]
        elapsed = time.perf_counter() - start
        log.info("loaded %s version %s (%d vectors in %d shards) in %.2fs", collection, version,
                 manifest.count, len(parts), elapsed)
        return ShardedVersion(collection, manifest, path, LocalShards(parts, self.executor), elapsed,
                              datetime.now(UTC))

    def close(self) -> None:
        return None
