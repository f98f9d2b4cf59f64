"""Search routes in-process, checked against numpy brute force."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.builder.helpers import active_manifest
from tests.conftest import Corpus, build, in_process, make_corpus
from tests.service.oracle import assert_matches, top_k, true_scores

METRICS = ["dot", "cosine"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Corpus, Path]]:
    tmp = tmp_path_factory.mktemp("search")
    corpus = make_corpus(tmp / "data")
    root = tmp / "root"
    assert build(root, corpus, "flat") == 0
    assert build(root, corpus, "hnsw", "--index", "hnsw") == 0
    assert build(root, corpus, "mips", "--index", "hnsw", "--mips", "l2", "--metrics", "dot") == 0
    assert build(root, corpus, "ivf", "--index", "ivf", "--nlist", "32") == 0
    with in_process(root, DOTCOS_EXACT_FILTER_THRESHOLD="0") as client:
        yield client, corpus, root


def search(client: httpx.Client, name: str, vector: np.ndarray, **body: object) -> dict:
    response = client.post(f"/v1/collections/{name}/search", json={"vector": vector.tolist(), **body})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("metric", METRICS)
def test_flat_equals_numpy_brute_force(metric: str, setup) -> None:
    client, corpus, _ = setup
    for query in corpus.queries[:20]:
        body = search(client, "flat", query, k=10, metric=metric)
        assert body["metric"] == metric and body["collection"] == "flat"
        scores = true_scores(metric, query, corpus.docs)
        assert_matches(body["results"], scores, corpus.ids, top_k(scores, 10))


@pytest.mark.parametrize("name", ["hnsw", "ivf"])
@pytest.mark.parametrize("metric", METRICS)
def test_ann_recall_is_close_to_the_manifest(name: str, metric: str, setup) -> None:
    client, corpus, root = setup
    _, manifest = active_manifest(root, name)
    hits = 0
    for query in corpus.queries:
        body = search(client, name, query, k=10, metric=metric)
        scores = true_scores(metric, query, corpus.docs)
        kth = np.sort(scores)[-10]
        got = np.array([h["score"] for h in body["results"]])
        np.testing.assert_allclose(
            got, scores[[corpus.ids.index(h["id"]) for h in body["results"]]], rtol=1e-4, atol=1e-4
        )
        hits += int((got >= kth - 1e-5).sum())
    recall = hits / (10 * len(corpus.queries))
    assert recall >= manifest.metrics[metric].index.self_check.recall_at_10 - 0.05


@pytest.mark.parametrize("name", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("metric", METRICS)
def test_exclude_most_of_the_top_still_gives_k_correct_results(name: str, metric: str, setup) -> None:
    client, corpus, _ = setup
    query = corpus.queries[3]
    scores = true_scores(metric, query, corpus.docs)
    banned = top_k(scores, 200)
    exclude = [corpus.ids[r] for r in banned] + ["no-such-id"]
    body = search(client, name, query, k=10, metric=metric, exclude=exclude)
    assert len(body["results"]) == 10
    assert not {h["id"] for h in body["results"]} & set(exclude)
    allowed = np.setdiff1d(np.arange(len(scores)), banned)
    exact = search(client, name, query, k=10, metric=metric, exclude=exclude, params={"exact": True})
    assert_matches(exact["results"], scores, corpus.ids, top_k(scores, 10, allowed))


@pytest.mark.parametrize("name", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("metric", METRICS)
def test_include_restricts_to_the_candidates(name: str, metric: str, setup) -> None:
    """This server sends every include through the ANN selector (threshold 0): k results, all eligible."""
    client, corpus, _ = setup
    rng = np.random.default_rng(1)
    allowed = rng.choice(len(corpus.docs), 40, replace=False)
    query = corpus.queries[5]
    scores = true_scores(metric, query, corpus.docs)
    include = [corpus.ids[r] for r in allowed]
    body = search(client, name, query, k=10, metric=metric, include=include, exclude=[include[0]])
    assert len(body["results"]) == 10
    assert {h["id"] for h in body["results"]} <= set(include[1:])
    exact = search(
        client, name, query, k=10, metric=metric, include=include, exclude=[include[0]], params={"exact": True}
    )
    assert_matches(exact["results"], scores, corpus.ids, top_k(scores, 10, allowed[1:]))


def test_include_smaller_than_k_returns_what_exists(setup) -> None:
    client, corpus, _ = setup
    body = search(client, "hnsw", corpus.queries[0], k=10, include=corpus.ids[:3])
    assert sorted(h["id"] for h in body["results"]) == corpus.ids[:3]


@pytest.mark.parametrize("name", ["flat", "hnsw"])
def test_batch_equals_single_queries(name: str, setup) -> None:
    client, corpus, _ = setup
    queries = corpus.queries[:8]
    for metric in METRICS:
        response = client.post(
            f"/v1/collections/{name}/search/batch",
            json={"vectors": queries.tolist(), "k": 7, "metric": metric, "exclude": corpus.ids[:50]},
        )
        assert response.status_code == 200, response.text
        batch = response.json()["results"]
        singles = [search(client, name, q, k=7, metric=metric, exclude=corpus.ids[:50])["results"] for q in queries]
        assert [[h["id"] for h in r] for r in batch] == [[h["id"] for h in r] for r in singles]


def test_mips_collection_returns_true_dot_products(setup) -> None:
    client, corpus, _ = setup
    for query in corpus.queries[:10]:
        exact_mips = search(client, "mips", query, k=10, params={"exact": True})
        exact_dot = search(client, "flat", query, k=10, metric="dot", params={"exact": True})
        assert exact_mips["results"] == exact_dot["results"]
        ann = search(client, "mips", query, k=10)
        scores = true_scores("dot", query, corpus.docs)
        got = [scores[corpus.ids.index(h["id"])] for h in ann["results"]]
        np.testing.assert_allclose([h["score"] for h in ann["results"]], got, rtol=1e-4, atol=1e-4)


def test_knobs_can_be_set_per_request(setup) -> None:
    client, corpus, _ = setup
    low = search(client, "ivf", corpus.queries[0], params={"nprobe": 1})
    high = search(client, "ivf", corpus.queries[0], params={"nprobe": 32})
    exact = search(client, "ivf", corpus.queries[0], params={"exact": True})
    assert high["results"] == exact["results"]
    assert len(low["results"]) == 10
    assert (
        search(client, "hnsw", corpus.queries[0], params={"ef_search": 512})["results"]
        == search(client, "hnsw", corpus.queries[0], params={"exact": True})["results"]
    )


def test_zero_query_is_fine_for_dot_but_refused_for_cosine(setup) -> None:
    client, corpus, _ = setup
    zero = np.zeros(corpus.docs.shape[1])
    assert len(search(client, "flat", zero, metric="dot")["results"]) == 10
    response = client.post("/v1/collections/flat/search", json={"vector": zero.tolist(), "metric": "cosine"})
    assert response.status_code == 400
    assert "zero-norm" in response.json()["error"]["message"]


def test_cosine_never_returns_zero_norm_documents(setup) -> None:
    client, corpus, _ = setup
    for params in ({"exact": True}, {}):
        body = search(
            client,
            "hnsw",
            corpus.queries[0],
            k=10,
            metric="cosine",
            params=params,
            include=["doc-00005", "doc-00017", "doc-00001"],
        )
        assert [h["id"] for h in body["results"]] == ["doc-00001"]


def test_describe_collections(setup) -> None:
    client, corpus, root = setup
    listing = client.get("/v1/collections").json()["collections"]
    assert [c["name"] for c in listing] == ["flat", "hnsw", "ivf", "mips"]
    info = client.get("/v1/collections/hnsw").json()
    _, manifest = active_manifest(root, "hnsw")
    assert info["version"] == manifest.version and info["count"] == len(corpus.docs)
    assert info["dim"] == corpus.docs.shape[1] and info["default_metric"] == "dot"
    assert info["metrics"]["cosine"]["index_kind"] == "hnsw"
    assert info["metrics"]["dot"]["recall_at_10"] == manifest.metrics["dot"].index.self_check.recall_at_10
    assert info["load_seconds"] >= 0


def test_metrics_endpoint_counts_requests(setup) -> None:
    client, corpus, _ = setup
    search(client, "flat", corpus.queries[0], metric="cosine")
    text = client.get("/metrics").text
    assert 'dotcos_requests_total{metric="cosine",route="/v1/collections/{name}/search",status="200"}' in text
    assert 'dotcos_loaded_version_info{collection="flat"' in text
    assert "dotcos_request_seconds_bucket" in text


def binary(
    client: httpx.Client, name: str, vectors: np.ndarray, batch: bool = False, **params: object
) -> httpx.Response:
    path = f"/v1/collections/{name}/search" + ("/batch" if batch else "")
    headers = {"Content-Type": "application/octet-stream"}
    query = {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in params.items()}
    return client.post(path, content=np.asarray(vectors, "<f4").tobytes(), headers=headers, params=query)


@pytest.mark.parametrize("name", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("metric", METRICS)
def test_a_binary_body_answers_as_the_json_body(name: str, metric: str, setup) -> None:
    """Raw float32 vectors with the options in the query string: the same JSON answer, to the bit."""
    client, corpus, _ = setup
    knob = {"hnsw": {"ef_search": 40}, "ivf": {"nprobe": 4}}.get(name, {})
    for query in corpus.queries[:10]:
        expected = search(client, name, query, k=7, metric=metric, params=knob)
        got = binary(client, name, query[None, :], k=7, metric=metric, **knob)
        assert got.status_code == 200, got.text
        assert got.json() == expected
    exact = binary(client, name, corpus.queries[:1], metric=metric, exact=True).json()
    scores = true_scores(metric, corpus.queries[0], corpus.docs)
    assert_matches(exact["results"], scores, corpus.ids, top_k(scores, 10))


def test_a_binary_batch_answers_as_the_json_batch(setup) -> None:
    client, corpus, _ = setup
    queries = corpus.queries[:5]
    body = {"vectors": queries.tolist(), "k": 3, "metric": "cosine"}
    expected = client.post("/v1/collections/hnsw/search/batch", json=body).json()
    got = binary(client, "hnsw", queries, batch=True, k=3, metric="cosine")
    assert got.status_code == 200 and got.json() == expected


@pytest.mark.parametrize(
    ("body", "params", "batch", "status", "message"),
    [
        (b"\x00\x00\x80", {}, False, 400, "vector: the body must hold float32 values (4 bytes each), got 3 bytes"),
        (b"", {}, False, 400, "vector: the body must hold float32 values"),
        (
            np.ones(13, "<f4").tobytes(),
            {},
            True,
            400,
            "vectors: 13 float32 values are not a whole number of vectors of dimension",
        ),
        (np.ones(5, "<f4").tobytes(), {}, False, 400, "dimension"),
        (
            np.ones(3 * 24, "<f4").tobytes(),
            {},
            False,
            400,
            "the body holds 3 vectors of dimension 24; send one to /search",
        ),
        (np.array([1, np.nan] * 16, "<f4").tobytes(), {}, False, 400, "vector"),
        (None, {"k": "0"}, False, 400, "k: must be between 1 and"),
        (None, {"k": "ten"}, False, 400, "k: expected a whole number, got 'ten'"),
        (None, {"ef_search": "-3"}, False, 400, "ef_search: expected a whole number"),
        (None, {"ef_search": "0"}, False, 400, "params.ef_search: must be between 1 and"),
        (None, {"exact": "yes"}, False, 400, "exact: expected true or false, got 'yes'"),
        (None, {"filter": "x"}, False, 400, "filter: not a parameter of a binary search; known: k, offset, metric"),
        (None, {"metric": "euclid"}, False, 400, "metric"),
        (None, {"k": "100000"}, False, 400, "k"),
    ],
)
def test_bad_binary_bodies_are_refused_naming_the_field(setup, body, params, batch, status, message) -> None:
    client, corpus, _ = setup
    content = body if body is not None else corpus.queries[0].astype("<f4").tobytes()
    path = "/v1/collections/flat/search" + ("/batch" if batch else "")
    response = client.post(path, content=content, headers={"Content-Type": "application/octet-stream"}, params=params)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"], response.text


def test_a_repeated_binary_parameter_is_refused(setup) -> None:
    client, corpus, _ = setup
    response = client.post(
        "/v1/collections/flat/search?k=2&k=3",
        content=corpus.queries[0].astype("<f4").tobytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 400 and "k: given more than once" in response.json()["error"]["message"]
