"""Benchmark data: seeded two-tower-like embeddings, or any (documents, queries) .npy pair."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index_builder.synthetic import TwoTowerSpec, two_tower

PRESETS = {
    "quick": TwoTowerSpec(docs=100_000, queries=1_000, dim=384, clusters=64, seed=1),
    "full": TwoTowerSpec(docs=1_000_000, queries=1_000, dim=128, clusters=256, seed=1),
}


@dataclass(frozen=True)
class Dataset:
    name: str
    docs_path: Path
    queries_path: Path
    docs: np.ndarray
    queries: np.ndarray


def load(name: str, workdir: Path, docs: Path | None = None, queries: Path | None = None) -> Dataset:
    """A preset (generated once, cached under workdir) or a user's .npy pair."""
    if docs is not None and queries is not None:
        return Dataset(name, docs, queries, np.load(docs, mmap_mode="r"), np.load(queries).astype(np.float32))
    spec = PRESETS[name]
    workdir.mkdir(parents=True, exist_ok=True)
    docs_path, queries_path = workdir / f"{name}-docs.npy", workdir / f"{name}-queries.npy"
    if not docs_path.exists():
        d, q = two_tower(spec)
        np.save(docs_path, d)
        np.save(queries_path, q)
    return Dataset(name, docs_path, queries_path, np.load(docs_path, mmap_mode="r"), np.load(queries_path))


def two_tower_queries(dim: int, count: int = 200) -> np.ndarray:
    """Queries for the tiny collection."""
    return two_tower(TwoTowerSpec(docs=10, queries=count, dim=dim, seed=3))[1]


def tiny(workdir: Path) -> Path:
    """1k documents: the fixed per-request cost shows when the search itself is nearly free."""
    path = workdir / "tiny-docs.npy"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        np.save(path, two_tower(TwoTowerSpec(docs=1_000, queries=10, dim=32, seed=2))[0])
    return path
