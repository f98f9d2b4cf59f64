"""Loading a published version: verify checksums first, then open files memory-mapped."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import faiss

from index_builder.artifact.errors import ArtifactError
from index_builder.artifact.journal import Journal
from index_builder.artifact.layout import version_dir
from index_builder.artifact.manifest import Manifest, read_manifest
from index_builder.retrieval.spaces import MetricSpace
from service.core.batching import Coalescer
from service.core.config import OverlaySettings
from service.core.overlay import Overlay
from service.core.part import Part, load_parts
from service.core.tuning import Knobs
from service.core.version import LocalParts, Parts, Version

log = logging.getLogger(__name__)

Note = Callable[[str], None]
"""How a loader says, while it works, why a version is not served yet (e.g. waiting for resources)."""


def configure_runtime(threads: int, blas_threshold: int, switch_interval_ms: float) -> None:
    """Knobs of the search runtime, set once at start-up on the thread that will call FAISS.

    - OpenMP threads FAISS may use per call made on this thread (OpenMP keeps the count per
      thread: each search thread sets its own, see `faiss_threads`).
    - From how many queries flat search uses BLAS: FAISS ships a threshold of 20 (128000 in
      some releases); coalesced batches of 16-512 queries run several times faster through BLAS.
    - The GIL switch interval: search threads re-take the GIL between FAISS calls, and with a
      busy event loop each re-take waits up to the interval (5 ms by default in CPython).
    """
    faiss_threads(threads)
    faiss.cvar.distance_compute_blas_threshold = blas_threshold
    sys.setswitchinterval(switch_interval_ms / 1000)


def faiss_threads(threads: int) -> None:
    """OpenMP threads of the FAISS calls the calling thread makes (a thread starts with every core)."""
    faiss.omp_set_num_threads(threads)


def read_version(root: Path, collection: str, version: str) -> tuple[Manifest, Path]:
    """The manifest of a published version, checked to name that version."""
    path = version_dir(root, collection, version)
    manifest = read_manifest(path)
    if manifest.collection != collection or manifest.version != version:
        raise ArtifactError(f"{path}: manifest names {manifest.collection}/{manifest.version}")
    return manifest, path


def spaces_of(manifest: Manifest, path: Path) -> dict[str, MetricSpace]:
    """The fitted metric space of every built metric (queries are prepared with these)."""
    return {name: manifest.metric_space(name, path) for name in manifest.metrics}


def open_overlay(root: Path, manifest: Manifest, path: Path, parts: list[Part], settings: OverlaySettings) -> Overlay:
    """The version's view of its collection's change journal, over the parts that know its ids
    (loaded here, or on a Ray front only their ids, vectors and attributes)."""
    journal = Journal(root, manifest.collection, settings.segment_bytes)
    return Overlay(journal, manifest, path, spaces_of(manifest, path), parts, settings)


def new_version(manifest: Manifest, path: Path, parts: Parts, started: float, overlay: Overlay) -> Version:
    return Version(
        collection=manifest.collection,
        manifest=manifest,
        path=path,
        spaces=overlay.spaces,
        parts=parts,
        load_seconds=time.perf_counter() - started,
        loaded_at=datetime.now(UTC),
        knobs=Knobs(manifest),
        overlay=overlay,
    )


class Loader(Protocol):
    """Turns a published version into something the registry can serve."""

    def start(self) -> None: ...

    def __call__(self, collection: str, version: str, note: Note) -> Version: ...

    def close(self) -> None: ...


class LocalLoader:
    """Loads every part of a version into this process, refusing it if any file does not match its manifest."""

    def __init__(self, root: Path, coalescer: Coalescer, mmap: bool, overlay: OverlaySettings) -> None:
        self.root, self.coalescer, self.mmap, self.overlay = root, coalescer, mmap, overlay

    def start(self) -> None:
        return None

    def __call__(self, collection: str, version: str, note: Note) -> Version:
        started = time.perf_counter()
        manifest, path = read_version(self.root, collection, version)
        parts = load_parts(manifest, path, self.mmap)
        executor = self.coalescer.executor
        overlay = open_overlay(self.root, manifest, path, parts, self.overlay)
        loaded = new_version(manifest, path, LocalParts(parts, executor, self.coalescer), started, overlay)
        shards = f" in {len(parts)} shards" if manifest.sharded else ""
        log.info(
            "loaded %s version %s (%d vectors%s, %s) in %.2fs",
            collection,
            version,
            manifest.count,
            shards,
            ", ".join(manifest.metrics),
            loaded.load_seconds,
        )
        return loaded

    def close(self) -> None:
        return None
