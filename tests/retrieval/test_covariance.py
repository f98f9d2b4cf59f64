"""The covariance metric is invariant under reparametrization; dot and cosine are not."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from index_builder.covariance import whitening_matrix
from index_builder.retrieval.scoring import doc_scales, exact_topk
from index_builder.retrieval.spaces import Metric, fit_metric_space, row_norms


def model(seed: int, n_docs: int = 300, n_users: int = 400, d: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Documents with skewed norms, correlated users, and a random well-conditioned invertible A."""
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((n_docs, d)) * rng.lognormal(0, 0.8, (n_docs, 1))
    mixing = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    users = rng.standard_normal((n_users, d)) @ mixing + 0.3 * rng.standard_normal(d)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    r, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a = q @ np.diag(rng.uniform(0.3, 3.0, d)) @ r
    return docs.astype(np.float32), users, a


def neighbours(name: str, docs: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    whitening = whitening_matrix(np.cov(users, rowvar=False)) if name == "covariance" else None
    space = fit_metric_space(Metric.parse(name), row_norms(docs), whitening)
    scales = doc_scales(space, docs, 1024)
    scores, rows = exact_topk(space, docs[:40], docs, scales, 11)
    return scores[:, 1:], rows[:, 1:]


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_covariance_neighbours_survive_reparametrization(seed: int) -> None:
    docs, users, a = model(seed)
    moved_docs = (docs.astype(np.float64) @ a.T).astype(np.float32)
    moved_users = users @ np.linalg.inv(a)
    np.testing.assert_allclose(
        users @ docs.T.astype(np.float64), moved_users @ moved_docs.T.astype(np.float64), rtol=1e-3, atol=1e-3
    )
    before_s, before_r = neighbours("covariance", docs, users)
    after_s, after_r = neighbours("covariance", moved_docs, moved_users)
    np.testing.assert_allclose(before_s, after_s, atol=2e-4)
    clear = (before_s[:, -1] - neighbours_gap(docs, users)) > 1e-3
    np.testing.assert_array_equal(np.sort(before_r[clear], 1), np.sort(after_r[clear], 1))
    for name in ("dot", "cosine"):
        assert not np.array_equal(neighbours(name, docs, users)[1], neighbours(name, moved_docs, moved_users)[1])


def neighbours_gap(docs: np.ndarray, users: np.ndarray) -> np.ndarray:
    """The 12th-best covariance score per query: a near-tie with the 11th makes the set ambiguous."""
    whitening = whitening_matrix(np.cov(users, rowvar=False))
    space = fit_metric_space(Metric.parse("covariance"), row_norms(docs), whitening)
    scores, _ = exact_topk(space, docs[:40], docs, doc_scales(space, docs, 1024), 12)
    return scores[:, -1]


def test_near_singular_user_covariance_gives_a_finite_transform() -> None:
    rng = np.random.default_rng(0)
    users = rng.standard_normal((500, 3)) @ rng.standard_normal((3, 10))
    whitening = whitening_matrix(np.cov(users, rowvar=False))
    assert np.isfinite(whitening).all()
    np.testing.assert_allclose(whitening @ whitening, np.cov(users, rowvar=False), atol=1e-8)
