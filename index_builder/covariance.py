"""The `covariance` metric's transform: W = C^(1/2) from a sample of user vectors.

cos(W a, W b) is the correlation of the scores documents a and b get from a random
user, which no invertible reparametrization (docs x -> A x, users u -> A^-T u) changes.
C is accumulated in float64 around a shift (the first block's mean) to avoid the
cancellation of the naive E[uu^T] - E[u]E[u]^T, symmetrized, and its eigenvalues below
a relative floor are treated as exact zeros so a near-singular C gives a stable W.
"""

from __future__ import annotations

import numpy as np

from index_builder.artifact.errors import InputError
from index_builder.progress import Progress
from index_builder.staging import InputSpec, stream_vectors

EIGEN_FLOOR = 1e-10


def user_covariance(spec: InputSpec, dim: int, block_bytes: int, progress: Progress) -> np.ndarray:
    """Covariance of the user vectors in `spec`, streamed in blocks (float64, (dim, dim))."""
    shift: np.ndarray | None = None
    total = np.zeros(dim)
    outer = np.zeros((dim, dim))
    count = 0
    rows = max(1, block_bytes // (8 * dim))
    with progress.stage("users", None) as bar:
        for block in stream_vectors(spec, dim, "--users", rows):
            centered = block.astype(np.float64)
            shift = centered.mean(axis=0) if shift is None else shift
            centered -= shift
            total += centered.sum(axis=0)
            outer += centered.T @ centered
            count += len(block)
            bar.update(len(block))
    if count < 2:
        raise InputError(f"--users needs at least 2 user vectors, got {count}")
    mean = total / count
    cov = (outer - count * np.outer(mean, mean)) / (count - 1)
    return (cov + cov.T) / 2.0


def whitening_matrix(cov: np.ndarray) -> np.ndarray:
    """The symmetric square root C^(1/2), with numerically-zero directions set to zero."""
    values, vectors = np.linalg.eigh(cov)
    top = float(values.max()) if len(values) else 0.0
    if top <= 0:
        raise InputError("--users vectors are all identical; their covariance is zero")
    values = np.where(values > top * EIGEN_FLOOR, values, 0.0)
    return np.asarray((vectors * np.sqrt(values)) @ vectors.T)
