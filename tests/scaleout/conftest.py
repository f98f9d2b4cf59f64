"""Fixtures shared by the scale-out tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Corpus


@pytest.fixture(scope="module")
def users(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample of user vectors near the queries, for the covariance metric."""
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("users") / "users.npy"
    np.save(
        path,
        (
            corpus.queries[rng.integers(0, len(corpus.queries), 400)]
            + 0.1 * rng.standard_normal((400, corpus.queries.shape[1]))
        ).astype(np.float32),
    )
    return path
