"""Recording served queries: each worker keeps a uniform sample (reservoir) of the query vectors
of /search and /search/batch per collection and metric, and merges it into the shared log file
(index_builder.artifact.querylog) every few seconds and at shutdown, so a scheduled rebuild can
tune its default knob on real traffic.

Query vectors are user data: they are stored only there (ROOT/<collection>/querylog/), at most
DOTCOS_QUERY_LOG_SIZE per metric, and DOTCOS_QUERY_LOG=false turns recording off. A log that
cannot be written is warned about once and recording goes on in memory; serving never waits
for it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from index_builder.artifact.querylog import Sample, log_path, merge, merge_into
from service.core.periodic import Periodic

log = logging.getLogger(__name__)


@dataclass
class Reservoir:
    """A uniform sample of at most `size` of the vectors offered (algorithm R)."""

    size: int
    dim: int
    rng: np.random.Generator
    vectors: list[np.ndarray] = field(default_factory=list)
    seen: int = 0

    def offer(self, vectors: np.ndarray) -> None:
        for vector in vectors:
            if len(self.vectors) < self.size:
                self.vectors.append(vector.copy())
            else:
                slot = int(self.rng.integers(0, self.seen + 1))
                if slot < self.size:
                    self.vectors[slot] = vector.copy()
            self.seen += 1

    def sample(self) -> Sample:
        return Sample(np.asarray(self.vectors, dtype=np.float32).reshape(len(self.vectors), self.dim), self.seen)


class QueryLog:
    """This worker's new samples per (collection, metric), merged into the log files periodically."""

    def __init__(self, root: Path, size: int, flush_s: float, seed: int | None = None) -> None:
        self.root, self.size = root, size
        self.rng = np.random.default_rng(seed)
        self._pending: dict[tuple[str, str], Reservoir] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self.sizes: dict[tuple[str, str], int] = {}
        """Vectors in each log after this worker's last merge into it."""
        self._flusher = Periodic("dotcos-querylog", flush_s, self.flush, "merging the query log failed; retrying")

    def record(self, collection: str, metric: str, vectors: np.ndarray) -> None:
        """Offer the query vectors of one served request (cheap: called on the event loop)."""
        with self._lock:
            reservoir = self._pending.get((collection, metric))
            if reservoir is None or reservoir.dim != vectors.shape[1]:
                reservoir = Reservoir(self.size, vectors.shape[1], self.rng)
                self._pending[(collection, metric)] = reservoir
            reservoir.offer(vectors)

    def flush(self) -> None:
        """Merge every pending sample into its file; keep it in memory when the file cannot be written."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for (collection, metric), reservoir in pending.items():
            path = log_path(self.root, collection, metric)
            try:
                merged, replaced = merge_into(path, reservoir.sample(), self.size, self.rng)
            except OSError as exc:
                self._warn_once(str(path), f"query log {path} cannot be written ({exc}); serving goes on")
                self._keep(collection, metric, reservoir)
                continue
            self.sizes[(collection, metric)] = len(merged.vectors)
            if replaced:
                log.warning("%s", replaced)

    def _keep(self, collection: str, metric: str, reservoir: Reservoir) -> None:
        """Put an unwritten sample back, merged with whatever arrived meanwhile."""
        with self._lock:
            newer = self._pending.get((collection, metric))
            if newer is not None and newer.dim == reservoir.dim:
                merged = merge(reservoir.sample(), newer.sample(), self.size, self.rng)
                reservoir = Reservoir(self.size, reservoir.dim, self.rng, list(merged.vectors), merged.seen)
            self._pending[(collection, metric)] = reservoir

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def start(self) -> None:
        self._flusher.start()

    def stop(self) -> None:
        """Stop the periodic flush and write what is pending (at shutdown)."""
        self._flusher.stop()
        self.flush()
