"""The search core without HTTP: filters, exact paths and fallbacks on a loaded version."""

from __future__ import annotations

import numpy as np
import pytest

from index_builder.artifact.errors import InputError, InvalidMetric, NotFoundError
from service.core.errors import TooLarge
from service.core.query import SearchOptions
from tests.conftest import Corpus, build
from tests.core_calls import load, new_searcher, search
from tests.service.oracle import assert_matches, top_k, true_scores


@pytest.fixture(scope="module")
def version(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("core")
    assert build(root, corpus, "c", "--index", "hnsw", "--hnsw-m", "8") == 0
    return load(root, "c")


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_small_include_sets_are_scored_exactly(metric: str, version, corpus: Corpus) -> None:
    allowed = np.random.default_rng(4).choice(len(corpus.docs), 40, replace=False)
    options = SearchOptions(k=10, metric=metric, include=[corpus.ids[r] for r in allowed])
    result = search(version, corpus.queries[:4], options)
    for query, hits in zip(corpus.queries[:4], result.hits, strict=True):
        scores = true_scores(metric, query, corpus.docs)
        assert_matches([h._asdict() for h in hits], scores, corpus.ids, top_k(scores, 10, allowed))


def test_selective_ann_filter_falls_back_to_exact(version, corpus: Corpus) -> None:
    """A graph search restricted to 12 scattered ids can strand; the answer must still be complete."""
    allowed = np.random.default_rng(5).choice(len(corpus.docs), 12, replace=False)
    options = SearchOptions(k=10, metric="cosine", include=[corpus.ids[r] for r in allowed], ef_search=16)
    result = search(version, corpus.queries[:16], options, new_searcher(exact_filter_threshold=0))
    for query, hits in zip(corpus.queries[:16], result.hits, strict=True):
        scores = true_scores("cosine", query, corpus.docs)
        assert_matches([h._asdict() for h in hits], scores, corpus.ids, top_k(scores, 10, allowed))


def test_ties_are_broken_by_id(version, corpus: Corpus) -> None:
    result = search(version, np.zeros((1, corpus.docs.shape[1]), np.float32), SearchOptions(k=5, metric="dot"))
    ids = [h.id for h in result.hits[0]]
    assert ids == sorted(ids)
    assert {h.score for h in result.hits[0]} == {0.0}


@pytest.mark.parametrize(
    "options, batch, error, message",
    [
        (SearchOptions(k=0), 1, InputError, "k: must be between 1 and 1000, got 0"),
        (SearchOptions(k=5000), 1, InputError, "got 5000"),
        (SearchOptions(metric="norm_sigmoid"), 1, InvalidMetric, "not built for collection 'c'; built: dot, cosine"),
        (
            SearchOptions(include=["doc-00001", "ghost"]),
            1,
            NotFoundError,
            "include: unknown id(s) in collection 'c': 'ghost'",
        ),
        (SearchOptions(), 2000, TooLarge, "batch of 2000 exceeds the limit of 1024"),
    ],
)
def test_bad_requests_name_the_field(options, batch, error, message, version, corpus: Corpus) -> None:
    vectors = np.ones((batch, corpus.docs.shape[1]), np.float32)
    with pytest.raises(error) as info:
        search(version, vectors, options, field="vectors")
    assert message in str(info.value)


def test_non_finite_and_wrong_dimension_vectors_are_refused(version, corpus: Corpus) -> None:
    bad = np.ones((3, corpus.docs.shape[1]), np.float32)
    bad[2, 1] = np.inf
    with pytest.raises(InputError, match=r"vectors\[2\]: holds NaN or Inf"):
        search(version, bad, SearchOptions(), field="vectors")
    with pytest.raises(InputError, match="dimension 24 expected by collection 'c', got 5"):
        search(version, np.ones((1, 5), np.float32), SearchOptions())


def test_default_metric_is_the_first_built(version) -> None:
    assert version.default_metric == "dot"
