"""The query log's file: a bounded uniform sample of the query vectors a collection served, per
metric, kept under ROOT/<collection>/querylog/<metric>.npz (beside the versions, never inside an
immutable one). The service merges its new samples in; the builder reads it for the self-check.

The file holds `vectors` (float32, at most the sample size), `seen` (how many queries the sample
stands for) and `updated` (POSIX seconds). Writers take an exclusive lock on a sibling `.lock`
file, merge, write a temporary file and rename it over the old one, so several workers share one
log and a reader never sees half a file.
"""

from __future__ import annotations

import fcntl
import os
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QUERYLOG_DIR = "querylog"


@dataclass(frozen=True)
class Sample:
    """A uniform sample of `seen` query vectors."""

    vectors: np.ndarray
    seen: int
    updated: float = 0.0

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


def log_path(root: Path, collection: str, metric: str) -> Path:
    return root / collection / QUERYLOG_DIR / f"{metric.replace(':', '-')}.npz"


def read_sample(path: Path) -> Sample | None:
    """The logged sample, or None when there is none; ValueError when the file is corrupt."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            vectors = np.asarray(data["vectors"], dtype=np.float32)
            seen, updated = int(data["seen"]), float(data["updated"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"query log {path} is unreadable ({exc})") from None
    if vectors.ndim != 2 or seen < len(vectors) or not np.isfinite(vectors).all():
        raise ValueError(f"query log {path} is inconsistent ({vectors.shape} vectors standing for {seen})")
    return Sample(vectors, seen, updated)


def merge(a: Sample, b: Sample, size: int, rng: np.random.Generator) -> Sample:
    """A uniform sample of at most `size` of the a.seen + b.seen queries both samples stand for:
    each kept vector comes from a with probability a.seen / (a.seen + b.seen)."""
    total = a.seen + b.seen
    keep = min(size, len(a.vectors) + len(b.vectors))
    low, high = max(0, keep - len(b.vectors)), min(keep, len(a.vectors))
    from_a = int(np.clip(rng.binomial(keep, a.seen / total) if total else 0, low, high))
    picked_a = a.vectors[rng.choice(len(a.vectors), from_a, replace=False)]
    picked_b = b.vectors[rng.choice(len(b.vectors), keep - from_a, replace=False)]
    return Sample(np.concatenate([picked_a, picked_b]).astype(np.float32), total, max(a.updated, b.updated))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def merge_into(path: Path, new: Sample, size: int, rng: np.random.Generator) -> tuple[Sample, str | None]:
    """Merge `new` into the file (created if absent) under the lock; the merged sample and, when
    the old file was corrupt or of another dimension and was replaced, why."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        replaced = None
        old: Sample | None = None
        try:
            old = read_sample(path)
        except ValueError as exc:
            replaced = f"{exc}: started anew"
        if old is not None and old.dim != new.dim:
            replaced = f"query log {path} held dimension {old.dim}, now {new.dim}: started anew"
            old = None
        merged = new if old is None else merge(old, new, size, rng)
        merged = Sample(merged.vectors, merged.seen, time.time())
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as out:
            np.savez(out, vectors=merged.vectors, seen=np.int64(merged.seen), updated=np.float64(merged.updated))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    return merged, replaced
