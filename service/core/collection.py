"""One loaded, verified version of a collection: ids, raw vectors and an index per metric."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from index_builder.contract.errors import InputError, InvalidMetric, NotFoundError
from index_builder.contract.manifest import Manifest
from index_builder.contract.metrics import Metric
from index_builder.contract.search import ServedIndex

MAX_NAMED_IDS = 5


def unknown_ids(field: str, collection: str, missing: list[str]) -> NotFoundError:
    """The error for ids a collection does not hold, naming the first few."""
    shown = ", ".join(repr(i) for i in missing[:MAX_NAMED_IDS])
    more = f" and {len(missing) - MAX_NAMED_IDS} more" if len(missing) > MAX_NAMED_IDS else ""
    return NotFoundError(f"{field}: unknown id(s) in collection {collection!r}: {shown}{more}")


class VersionFacts:
    """What any served version (one part or many shards) says about itself through its manifest."""

    manifest: Manifest

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def default_metric(self) -> str:
        return next(iter(self.manifest.metrics))


@dataclass(frozen=True)
class LoadedVersion(VersionFacts):
    """Immutable once loaded: a request holds one for its whole life, so a swap never tears it."""

    collection: str
    manifest: Manifest
    path: Path
    ids: list[str]
    rows_by_id: dict[str, int]
    vectors: np.ndarray
    indexes: dict[str, ServedIndex]
    load_seconds: float
    loaded_at: datetime

    def served(self, metric: str | None) -> ServedIndex:
        """The index for a metric name (default: the first built), or an error naming the built ones."""
        if metric is None:
            return self.indexes[self.default_metric]
        name = Metric.parse(metric).name
        if name not in self.indexes:
            built = ", ".join(self.indexes)
            raise InvalidMetric(
                f"metric {name!r} is not built for collection {self.collection!r}; built: {built}"
            )
        return self.indexes[name]

    def rows_for(self, ids: list[str], field: str) -> np.ndarray:
        """Row numbers of ids; NotFoundError naming the unknown ones."""
        missing = [i for i in ids if i not in self.rows_by_id]
        if missing:
            raise unknown_ids(field, self.collection, missing)
        return np.fromiter((self.rows_by_id[i] for i in ids), dtype=np.int64, count=len(ids))

    def vector_of(self, doc_id: str) -> np.ndarray | None:
        """The stored vector of a document as a (1, d) float32 array, or None when not held here."""
        row = self.rows_by_id.get(doc_id)
        return None if row is None else np.asarray(self.vectors[row : row + 1], dtype=np.float32)

    def known_rows(self, ids: list[str]) -> np.ndarray:
        """Row numbers of the ids that exist (unknown ones are ignored)."""
        rows = [self.rows_by_id[i] for i in ids if i in self.rows_by_id]
        return np.unique(np.asarray(rows, dtype=np.int64))

    def check_vectors(self, vectors: np.ndarray, field: str) -> None:
        """Dimension and finiteness checks with the field and row named."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            got = vectors.shape[-1] if vectors.ndim else 0
            raise InputError(f"{field}: dimension {self.dim} expected by collection "
                             f"{self.collection!r}, got {got}")
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            where = f"{field}[{row}]" if len(vectors) > 1 else field
            raise InputError(f"{where}: holds NaN or Inf; every value must be a finite number")
