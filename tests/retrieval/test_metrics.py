"""Property tests for the metric table and the MIPS-to-L2 augmentation."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index_builder.artifact.errors import InvalidMetric
from index_builder.retrieval.scoring import doc_scales, exact_topk, score_rows
from index_builder.retrieval.spaces import (
    Metric,
    MetricKind,
    MetricSpace,
    augment_documents,
    augment_queries,
    fit_metric_space,
    norm_range_bounds,
    norm_range_of,
    row_norms,
)
from tests.service.oracle import space_scores

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def skewed(seed: int, n: int = 200, d: int = 16, spread: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Documents whose norms span several orders of magnitude, and queries."""
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((n, d)) * rng.lognormal(0, spread, (n, 1))
    return docs.astype(np.float32), rng.standard_normal((8, d)).astype(np.float32)


def space(name: str, docs: np.ndarray) -> MetricSpace:
    return fit_metric_space(Metric.parse(name), row_norms(docs), None)


@given(seeds)
@settings(max_examples=40, deadline=None)
def test_cosine_scores_lie_in_unit_interval(seed: int) -> None:
    docs, queries = skewed(seed)
    cos = space("cosine", docs)
    scores = space_scores(cos, queries, docs)
    assert np.all(scores <= 1 + 1e-5) and np.all(scores >= -1 - 1e-5)


@given(seeds)
@settings(max_examples=40, deadline=None)
def test_prepared_inner_product_equals_exact_score(seed: int) -> None:
    docs, queries = skewed(seed)
    for name in ("dot", "cosine", "norm_pow:0.5", "norm_sigmoid"):
        sp = space(name, docs)
        via_index = sp.prepare_queries(queries) @ sp.prepare_documents(docs).T
        exact = space_scores(sp, queries, docs)
        np.testing.assert_allclose(via_index, exact, rtol=1e-4, atol=1e-4 * np.abs(exact).max())


@given(seeds)
@settings(max_examples=40, deadline=None)
def test_mips_augmentation_gives_the_inner_product_top_k(seed: int) -> None:
    docs, queries = skewed(seed, n=300, spread=1.5)
    max_norm = float(row_norms(docs).max())
    flat_l2 = faiss.IndexFlatL2(docs.shape[1] + 1)
    flat_l2.add(augment_documents(docs, max_norm))
    _, l2_rows = flat_l2.search(augment_queries(queries), 10)
    truth = queries.astype(np.float64) @ docs.T.astype(np.float64)
    for q in range(len(queries)):
        kth = np.sort(truth[q])[-10]
        recovered = truth[q, l2_rows[q]]
        # float32 distances |q|^2 + M^2 - 2 q.x carry a rounding error of a few eps * (|q|^2 + M^2)
        slack = 8 * np.finfo(np.float32).eps * (float(queries[q] @ queries[q]) + max_norm**2)
        assert np.all(recovered >= kth - slack), "augmented top-10 is not the IP top-10"


@given(seeds)
@settings(max_examples=40, deadline=None)
def test_augmented_distance_recovers_inner_product(seed: int) -> None:
    docs, queries = skewed(seed, spread=1.0)
    max_norm = float(row_norms(docs).max())
    aug_d = augment_documents(docs, max_norm).astype(np.float64)
    aug_q = augment_queries(queries).astype(np.float64)
    sq = ((aug_q[:, None, :] - aug_d[None, :, :]) ** 2).sum(-1)
    recovered = ((queries.astype(np.float64) ** 2).sum(1)[:, None] + max_norm * max_norm - sq) / 2.0
    truth = queries.astype(np.float64) @ docs.T.astype(np.float64)
    np.testing.assert_allclose(recovered, truth, atol=1e-3 * max_norm**2)


@given(st.floats(min_value=-2, max_value=3), seeds)
@settings(max_examples=30, deadline=None)
def test_norm_pow_weight_is_the_norm_to_alpha(alpha: float, seed: int) -> None:
    docs, queries = skewed(seed, spread=0.5)
    sp = space(f"norm_pow:{alpha!r}", docs)
    cos = space("cosine", docs)
    norms = row_norms(docs)
    expected = space_scores(cos, queries, docs) * norms[None, :] ** sp.metric.alpha
    np.testing.assert_allclose(space_scores(sp, queries, docs), expected, rtol=1e-3, atol=1e-5)


def test_norm_pow_extremes_match_cosine_and_dot_rankings() -> None:
    docs, queries = skewed(3)
    ranks = {}
    for name in ("norm_pow:0", "cosine", "norm_pow:1", "dot"):
        sp = space(name, docs)
        _, rows = exact_topk(sp, queries, docs, doc_scales(sp, docs, 64), 10)
        ranks[name] = rows
    np.testing.assert_array_equal(ranks["norm_pow:0"], ranks["cosine"])
    np.testing.assert_array_equal(ranks["norm_pow:1"], ranks["dot"])


def test_zero_vectors_never_produce_nan() -> None:
    docs, queries = skewed(1)
    docs[0] = 0
    queries[0] = 0
    for name in ("dot", "cosine", "norm_pow:0.5", "norm_sigmoid"):
        sp = space(name, docs)
        scores = space_scores(sp, queries, docs)
        assert np.isfinite(scores).all()
        assert np.all(scores[0] == 0) and np.all(scores[:, 0] == 0)


def test_prepare_never_modifies_the_callers_array() -> None:
    docs, queries = skewed(2)
    before = docs.copy(), queries.copy()
    sp = space("cosine", docs)
    sp.prepare_documents(docs)
    sp.prepare_queries(queries)
    np.testing.assert_array_equal(docs, before[0])
    np.testing.assert_array_equal(queries, before[1])


@pytest.mark.parametrize(
    "text, message",
    [
        ("l2", "unknown metric 'l2'"),
        ("norm_pow", "needs a numeric exponent"),
        ("norm_pow:x", "needs a numeric exponent"),
        ("cosine:1", "takes no parameter"),
        ("norm_pow:inf", "finite"),
    ],
)
def test_bad_metric_names_are_rejected_with_the_valid_list(text: str, message: str) -> None:
    with pytest.raises(InvalidMetric, match=message):
        Metric.parse(text)


def test_metric_names_are_canonical() -> None:
    assert Metric.parse("norm_pow:0.50").name == "norm_pow:0.5"
    assert Metric.parse(" cosine ").kind is MetricKind.COSINE


@given(seeds, st.integers(1, 16))
@settings(max_examples=40, deadline=None)
def test_norm_ranges_cover_every_document_in_order(seed: int, ranges: int) -> None:
    norms = np.random.default_rng(seed).lognormal(0, 1, 500).astype(np.float32)
    norms[:20] = norms[20]
    bounds = norm_range_bounds(norms, ranges)
    which = norm_range_of(norms, bounds)
    assert bounds == sorted(set(bounds)) and bounds[-1] == float(norms.max()) and len(bounds) <= ranges
    assert np.all(norms <= np.asarray(bounds)[which])
    assert np.all(norms[which > 0] > np.asarray(bounds)[which[which > 0] - 1])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    metric=st.sampled_from(["dot", "cosine", "norm_pow:0.5"]),
    candidates=st.integers(1, 64),
    queries=st.integers(1, 4),
)
def test_a_rows_score_does_not_depend_on_the_other_candidates(
    seed: int, metric: str, candidates: int, queries: int
) -> None:
    """Sharded and unsharded answers, and exact and ANN ones, are equal to the bit only if scoring
    a (query, row) pair gives the same float whatever else is in the candidate list."""
    docs, q = skewed(seed, n=300, d=48)
    s = space(metric, docs)
    scales = doc_scales(s, docs, 64)
    rows = np.random.default_rng(seed).integers(0, len(docs), (queries, candidates))
    together = score_rows(s, q[:queries], docs, scales, rows)
    for i in range(queries):
        for j in range(candidates):
            alone = score_rows(s, q[i : i + 1], docs, scales, rows[i : i + 1, j : j + 1])
            assert together[i, j] == alone[0, 0]
