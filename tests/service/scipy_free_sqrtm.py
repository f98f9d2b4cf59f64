"""A symmetric PSD square root for the test oracle, independent of the builder's code."""

from __future__ import annotations

import numpy as np


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
