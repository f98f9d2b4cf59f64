"""/similar and /score over HTTP for every metric, checked against numpy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import Corpus, build, in_process, make_corpus
from tests.service.scipy_free_sqrtm import sqrtm_psd

METRICS = ["dot", "cosine", "norm_pow:0.5", "norm_pow:0", "norm_pow:1", "norm_sigmoid", "covariance"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Corpus, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("items")
    corpus = make_corpus(tmp / "data", n=1500)
    users = np.random.default_rng(9).standard_normal((800, corpus.docs.shape[1])) @ np.random.default_rng(
        10
    ).standard_normal((corpus.docs.shape[1], corpus.docs.shape[1]))
    np.save(tmp / "users.npy", users.astype(np.float32))
    root = tmp / "root"
    assert build(root, corpus, "items", "--metrics", ",".join(METRICS), "--users", str(tmp / "users.npy")) == 0
    assert (
        build(
            root, corpus, "hnsw", "--metrics", ",".join(METRICS), "--users", str(tmp / "users.npy"), "--index", "hnsw"
        )
        == 0
    )
    with in_process(root) as client:
        yield client, corpus, users.astype(np.float32)


def oracle(metric: str, queries: np.ndarray, docs: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Exact scores (nq, n) of each metric from its definition."""
    q, x = queries.astype(np.float64), docs.astype(np.float64)
    if metric == "covariance":
        w = sqrtm_psd(np.cov(users.astype(np.float64), rowvar=False))
        q, x = q @ w, x @ w
    dots = q @ x.T
    if metric == "dot":
        return dots
    qn, xn = np.linalg.norm(q, axis=1), np.linalg.norm(x, axis=1)
    cos = np.divide(dots, np.outer(qn, xn), out=np.zeros_like(dots), where=np.outer(qn, xn) > 0)
    norms = np.linalg.norm(docs.astype(np.float64), axis=1)
    if metric.startswith("norm_pow"):
        alpha = float(metric.split(":")[1])
        weight = np.power(norms, alpha, out=np.zeros_like(norms), where=norms > 0)
        return cos * weight
    if metric == "norm_sigmoid":
        return cos / (1 + np.exp(-(norms - norms.min()) / (norms.max() - norms.min())))
    return cos


def post(client: httpx.Client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("metric", METRICS)
def test_similar_by_id_equals_numpy_and_never_returns_the_item(metric: str, setup) -> None:
    client, corpus, users = setup
    for row in (1, 40, 777):
        body = post(client, "/v1/collections/items/similar", {"id": corpus.ids[row], "k": 10, "metric": metric})
        scores = oracle(metric, corpus.docs[row : row + 1], corpus.docs, users)[0]
        scores[row] = -np.inf
        if metric != "dot":
            scores[np.linalg.norm(corpus.docs, axis=1) == 0] = -np.inf
        got = [corpus.ids.index(h["id"]) for h in body["results"]]
        assert corpus.ids[row] not in {h["id"] for h in body["results"]} and len(got) == 10
        np.testing.assert_allclose([h["score"] for h in body["results"]], scores[got], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.sort(scores[got]), np.sort(scores)[-10:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("metric", ["dot", "cosine", "covariance"])
def test_similar_by_vector_and_with_exclude(metric: str, setup) -> None:
    client, corpus, users = setup
    vector = corpus.docs[3] * 1.5 + 0.01
    body = post(
        client,
        "/v1/collections/hnsw/similar",
        {"vector": vector.tolist(), "k": 5, "metric": metric, "exclude": corpus.ids[:20], "params": {"exact": True}},
    )
    scores = oracle(metric, vector[None, :], corpus.docs, users)[0]
    scores[:20] = -np.inf
    got = [corpus.ids.index(h["id"]) for h in body["results"]]
    np.testing.assert_allclose(np.sort(scores[got]), np.sort(scores)[-5:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_score_gives_exact_scores_in_the_given_order(metric: str, setup) -> None:
    client, corpus, users = setup
    queries = corpus.queries[:3].copy()
    queries[2] = 0.0
    candidates = [[corpus.ids[i] for i in (9, 2, 5, 300)], [corpus.ids[7]], []]
    body = post(
        client, "/v1/collections/items/score", {"vectors": queries.tolist(), "ids": candidates, "metric": metric}
    )
    assert body["metric"] == metric
    expected = oracle(metric, queries, corpus.docs, users)
    for i, (hits, ids) in enumerate(zip(body["results"], candidates, strict=True)):
        assert [h["id"] for h in hits] == ids
        rows = [corpus.ids.index(x) for x in ids]
        np.testing.assert_allclose([h["score"] for h in hits], expected[i, rows], rtol=1e-4, atol=1e-5)
    assert all(h["score"] == 0 for h in body["results"][2])
    single = post(
        client, "/v1/collections/items/score", {"vector": queries[0].tolist(), "ids": candidates[0], "metric": metric}
    )
    assert single["results"] == body["results"][0]


def test_zero_vectors_score_zero_under_cosine(setup) -> None:
    client, corpus, _ = setup
    body = post(
        client,
        "/v1/collections/items/score",
        {"vector": corpus.queries[0].tolist(), "ids": ["doc-00005", "doc-00017"], "metric": "cosine"},
    )
    assert [h["score"] for h in body["results"]] == [0.0, 0.0]


def test_norm_pow_extremes(setup) -> None:
    client, corpus, _ = setup
    for q in corpus.queries[:5]:
        search = {"vector": q.tolist(), "k": 10, "params": {"exact": True}}
        zero = post(client, "/v1/collections/items/search", {**search, "metric": "norm_pow:0"})["results"]
        cosine = post(client, "/v1/collections/items/search", {**search, "metric": "cosine"})["results"]
        one = post(client, "/v1/collections/items/search", {**search, "metric": "norm_pow:1"})["results"]
        dot = post(client, "/v1/collections/items/search", {**search, "metric": "dot"})["results"]
        assert [h["id"] for h in zero] == [h["id"] for h in cosine]
        np.testing.assert_allclose([h["score"] for h in zero], [h["score"] for h in cosine], rtol=1e-5)
        assert [h["id"] for h in one] == [h["id"] for h in dot]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"id": "nope"}, 404, "id: unknown id(s) in collection 'items': 'nope'"),
        ({"id": "doc-00005", "metric": "cosine"}, 400, "id: zero-norm vector has no cosine score"),
        ({}, 422, "give exactly one of id, ids and vector"),
        ({"id": "doc-00001", "metric": "l1"}, 400, "unknown metric 'l1'"),
    ],
)
def test_similar_errors(body: dict, status: int, message: str, setup) -> None:
    client, _, _ = setup
    response = client.post("/v1/collections/items/similar", json=body)
    assert response.status_code == status and message in response.json()["error"]["message"], response.text


@pytest.mark.parametrize(
    "body, status, message",
    [
        (
            {"vector": [0.1] * 24, "ids": ["doc-00001", "ghost", "ghost2"]},
            404,
            "ids: unknown id(s) in collection 'items': 'ghost', 'ghost2'",
        ),
        ({"vectors": [[0.1] * 24], "ids": ["doc-00001"]}, 422, "ids must be a list of id lists"),
        ({"vectors": [[0.1] * 24, [0.2] * 24], "ids": [["doc-00001"]]}, 400, "ids: 2 candidate lists expected"),
        ({"vector": [0.1] * 3, "ids": ["doc-00001"]}, 400, "dimension 24 expected"),
    ],
)
def test_score_errors(body: dict, status: int, message: str, setup) -> None:
    client, _, _ = setup
    response = client.post("/v1/collections/items/score", json=body)
    assert response.status_code == status and message in response.json()["error"]["message"], response.text


def test_covariance_is_reported_not_built_without_users(corpus: Corpus, tmp_path: Path, capsys) -> None:
    assert build(tmp_path, corpus, "c", "--metrics", "dot,covariance") == 0
    assert "covariance     not built: needs --users FILE" in capsys.readouterr().out
    with in_process(tmp_path) as client:
        assert client.get("/v1/collections/c").json()["not_built"] == {
            "covariance": "needs --users FILE (a sample of user vectors)"
        }
        reply = client.post("/v1/collections/c/similar", json={"id": "doc-00001", "metric": "covariance"})
        assert reply.status_code == 400 and "built: dot" in reply.json()["error"]["message"]
