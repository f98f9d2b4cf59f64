"""Seeded two-tower-like embeddings for demos, tests and benchmarks.

Document directions come from a mixture of anisotropic Gaussian clusters and their
norms are lognormal (popularity), so dot and cosine rank very differently; queries
come from a related but separate mixture (other cluster weights, more noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TwoTowerSpec:
    docs: int = 20_000
    queries: int = 1_000
    dim: int = 32
    clusters: int = 32
    norm_sigma: float = 0.45
    seed: int = 0


def _mixture(
    rng: np.random.Generator, centers: np.ndarray, axes: np.ndarray, weights: np.ndarray, n: int, noise: float
) -> np.ndarray:
    labels = rng.choice(len(centers), size=n, p=weights)
    z = rng.standard_normal((n, centers.shape[1]))
    points = centers[labels] + noise * z * axes[labels]
    return np.asarray(points / np.linalg.norm(points, axis=1, keepdims=True))


def two_tower(spec: TwoTowerSpec) -> tuple[np.ndarray, np.ndarray]:
    """(documents, queries) as float32 arrays."""
    rng = np.random.default_rng(spec.seed)
    centers = rng.standard_normal((spec.clusters, spec.dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    axes = rng.lognormal(0.0, 0.5, size=(spec.clusters, spec.dim)) / np.sqrt(spec.dim)
    doc_weights = rng.dirichlet(np.ones(spec.clusters))
    query_weights = rng.dirichlet(np.ones(spec.clusters))
    directions = _mixture(rng, centers, axes, doc_weights, spec.docs, 1.0)
    norms = rng.lognormal(0.0, spec.norm_sigma, size=(spec.docs, 1))
    queries = _mixture(rng, centers, axes, query_weights, spec.queries, 1.5)
    queries *= rng.lognormal(0.0, 0.2, size=(spec.queries, 1))
    return (directions * norms).astype(np.float32), queries.astype(np.float32)
