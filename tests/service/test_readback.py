"""The read-back API against numpy: /get, /scroll (with writes landing between pages), /count,
`offset`, /recommend (both strategies) and MMR, on flat, HNSW and sharded versions that have
pending upserts, deletes and attribute changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index_builder.cli import main as build_main
from tests.conftest import in_process
from tests.service.oracle import true_scores

N, DIM = 1200, 16
TOKEN = "read-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BUILDS = {"flat": ["--index", "flat"], "hnsw": ["--index", "hnsw"], "sharded": ["--index", "flat", "--shards", "3"]}
Doc = tuple[np.ndarray, dict[str, Any]]


class State:
    """The collection's documents as they stand, kept beside the service's."""

    def __init__(self, ids: list[str], vectors: np.ndarray, attrs: list[dict[str, Any]]) -> None:
        self.docs: dict[str, Doc] = {i: (v, a) for i, v, a in zip(ids, vectors, attrs, strict=True)}

    def matrix(self, where: Any = None) -> tuple[list[str], np.ndarray]:
        ids = [i for i, (_, a) in self.docs.items() if where is None or where(a)]
        return ids, np.stack([self.docs[i][0] for i in ids])

    def top(self, metric: str, query: np.ndarray, k: int, skip: set[str] = frozenset()) -> tuple[list[str], np.ndarray]:
        ids, vectors = self.matrix()
        scores = true_scores(metric, query, vectors)
        order = [i for i in sorted(range(len(ids)), key=lambda j: (-scores[j], ids[j])) if ids[i] not in skip]
        return [ids[i] for i in order[:k]], scores[order[:k]]


@pytest.fixture(scope="module", params=list(BUILDS))
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, State]]:
    tmp = tmp_path_factory.mktemp(request.param)
    rng = np.random.default_rng(11)
    vectors = (rng.standard_normal((N, DIM)) * rng.lognormal(0, 0.4, (N, 1))).astype(np.float32)
    ids = [f"d{i:04d}" for i in range(N)]
    attrs = [{"brand": f"b{i % 7}", "price": float(i % 100)} for i in range(N)]
    table = pa.table(
        {"id": ids, "vector": list(vectors), "brand": [a["brand"] for a in attrs], "price": [a["price"] for a in attrs]}
    )
    pq.write_table(table, tmp / "docs.parquet")
    argv = ["build", "--input", str(tmp / "docs.parquet"), "--name", "c", "--root", str(tmp / "root"), "--quiet"]
    assert build_main([*argv, "--attributes", "brand,price", *BUILDS[request.param]]) == 0
    state = State(ids, vectors, attrs)
    with in_process(tmp / "root", DOTCOS_ADMIN_TOKEN=TOKEN) as client:
        new = (rng.standard_normal((20, DIM)) * 2).astype(np.float32)
        upserted = [f"new-{i}" for i in range(10)] + ids[:10]
        body = {"ids": upserted, "vectors": new.tolist(), "attributes": [{"brand": "b1", "price": 5.0}] * 20}
        assert client.post("/v1/collections/c/upsert", json=body, headers=AUTH).status_code == 200
        for doc_id, vector in zip(upserted, new, strict=True):
            state.docs[doc_id] = (vector, {"brand": "b1", "price": 5.0})
        deleted = ids[10:30]
        assert client.post("/v1/collections/c/delete", json={"ids": deleted}, headers=AUTH).status_code == 200
        for doc_id in deleted:
            del state.docs[doc_id]
        patched = ids[30:45]
        body = {"ids": patched, "set": {"brand": "zz"}, "unset": ["price"]}
        assert client.post("/v1/collections/c/attributes", json=body, headers=AUTH).status_code == 200
        for doc_id in patched:
            state.docs[doc_id] = (state.docs[doc_id][0], {"brand": "zz", "price": None})
        yield client, state


def post(client: httpx.Client, route: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = client.post(f"/v1/collections/c/{route}", json=body)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def test_get_returns_documents_as_they_stand_in_the_order_asked(served) -> None:
    client, state = served
    asked = ["nope", "new-3", "d0005", "d0015", "d0031", "d0500"]
    answer = post(client, "get", {"ids": asked, "with_vectors": True})
    standing = [i for i in asked if i in state.docs]
    assert [d["id"] for d in answer["documents"]] == standing
    assert answer["missing"] == [i for i in asked if i not in state.docs]
    for doc in answer["documents"]:
        vector, attrs = state.docs[doc["id"]]
        assert np.array_equal(np.asarray(doc["vector"], np.float32), vector)
        assert doc["attributes"] == attrs
    bare = post(client, "get", {"ids": ["d0500"], "with_attributes": False})["documents"][0]
    assert bare == {"id": "d0500"}
    twice = client.post("/v1/collections/c/get", json={"ids": ["d0500", "d0500"]})
    assert twice.status_code == 400 and "appears twice" in twice.text


@pytest.mark.parametrize(
    "flt",
    [
        None,
        {"must": [{"key": "brand", "match": "b1"}]},
        {"must": [{"key": "price", "range": {"lt": 10}}]},
        {"must_not": [{"key": "price", "is_null": False}]},
    ],
)
def test_count_is_exact_and_current(served, flt) -> None:
    client, state = served
    passes = _predicate(flt)
    expected = sum(1 for _, a in state.docs.values() if passes(a))
    assert post(client, "count", {} if flt is None else {"filter": flt})["count"] == expected


def _predicate(flt: dict | None):
    if flt is None:
        return lambda a: True
    condition = (flt.get("must") or flt.get("must_not"))[0]
    negate = "must_not" in flt
    if "match" in condition:
        test = lambda a: a[condition["key"]] == condition["match"]  # noqa: E731
    elif "range" in condition:
        test = lambda a: a[condition["key"]] is not None and a[condition["key"]] < condition["range"]["lt"]  # noqa: E731
    else:
        test = lambda a: (a[condition["key"]] is None) == condition["is_null"]  # noqa: E731
    return (lambda a: not test(a)) if negate else test


def test_a_scroll_returns_every_passing_document_once_while_writes_land(served) -> None:
    client, state = served
    flt = {"must": [{"key": "price", "range": {"lt": 60}}]}
    expected = {i: d for i, d in state.docs.items() if d[1]["price"] is not None and d[1]["price"] < 60}
    seen: list[str] = []
    body: dict[str, Any] = {"filter": flt, "limit": 97, "with_vectors": True}
    written = 0
    while True:
        page = post(client, "scroll", body)
        for doc in page["documents"]:
            vector, attrs = expected[doc["id"]]
            assert np.array_equal(np.asarray(doc["vector"], np.float32), vector) and doc["attributes"] == attrs
        seen += [d["id"] for d in page["documents"]]
        if page["next_cursor"] is None:
            break
        body["cursor"] = page["next_cursor"]
        victim = f"d{900 + written:04d}"
        change = {"ids": [victim, f"late-{written}"], "vectors": [[1.0] * DIM] * 2, "attributes": [{"price": 1.0}] * 2}
        assert client.post("/v1/collections/c/upsert", json=change, headers=AUTH).status_code == 200
        written += 1
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))
    assert written > 3
    again = post(client, "scroll", {"filter": flt, "limit": 1000})
    assert {f"late-{i}" for i in range(written)} <= {d["id"] for d in again["documents"]}
    other = client.post("/v1/collections/c/scroll", json={"filter": {}, "cursor": body["cursor"]})
    assert other.status_code == 400 and "another filter" in other.text
    assert client.post("/v1/collections/c/scroll", json={"cursor": "garbage!"}).status_code == 400
    assert client.post("/v1/collections/c/scroll", json={"limit": 1001}).status_code == 400
    for doc_id in [f"d{900 + i:04d}" for i in range(written)] + [f"late-{i}" for i in range(written)]:
        state.docs[doc_id] = (np.ones(DIM, np.float32), {"brand": None, "price": 1.0})


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_offset_is_the_window_of_the_top_offset_plus_k(served, metric: str) -> None:
    client, state = served
    query = np.random.default_rng(2).standard_normal(DIM).astype(np.float32)
    body = {"vector": query.tolist(), "metric": metric, "k": 7, "offset": 5, "params": {"exact": True}}
    hits = post(client, "search", body)["results"]
    _, scores = state.top(metric, query, 12)
    np.testing.assert_allclose([h["score"] for h in hits], scores[5:12], rtol=1e-5, atol=1e-5)
    window = post(
        client, "search/batch", {**{k: v for k, v in body.items() if k != "vector"}, "vectors": [query.tolist()] * 2}
    )
    assert [[h["id"] for h in row] for row in window["results"]] == [[h["id"] for h in hits]] * 2
    binary = client.post(
        "/v1/collections/c/search",
        content=query.astype("<f4").tobytes(),
        headers={"Content-Type": "application/octet-stream"},
        params={"metric": metric, "k": 7, "offset": 5, "exact": "true"},
    ).json()["results"]
    assert [h["id"] for h in binary] == [h["id"] for h in hits]
    too_far = client.post("/v1/collections/c/search", json={"vector": query.tolist(), "k": 10, "offset": 995})
    assert too_far.status_code == 400 and "offset + k must be at most 1000" in too_far.text


def test_hits_carry_their_stored_vectors_when_asked(served) -> None:
    client, state = served
    query = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
    body = {
        "vector": query.tolist(),
        "k": 8,
        "with_vectors": True,
        "filter": {"must": [{"key": "brand", "match": "b1"}]},
    }
    hits = post(client, "search", body)["results"]
    assert len(hits) == 8 and any(h["id"].startswith("new-") or h["id"] < "d0010" for h in hits)
    for hit in hits:
        assert (
            np.array_equal(np.asarray(hit["vector"], np.float32), state.docs[hit["id"]][0]) and "attributes" not in hit
        )
    liked = post(client, "recommend", {"positive": ["d0100"], "k": 3, "with_vectors": True, "with_attributes": True})
    assert all(np.array_equal(np.asarray(h["vector"], np.float32), state.docs[h["id"]][0]) for h in liked["results"])
    assert all(h["attributes"] == state.docs[h["id"]][1] for h in liked["results"])
    assert "vector" not in post(client, "search", {**body, "with_vectors": False})["results"][0]


def _average(state: State, examples: list[str | list[float]]) -> np.ndarray:
    return np.mean([state.docs[e][0] if isinstance(e, str) else np.asarray(e, np.float32) for e in examples], axis=0)


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_recommend_average_vector_equals_numpy(served, metric: str) -> None:
    client, state = served
    positive: list[str | list[float]] = ["d0100", "new-2", list(np.linspace(-1, 1, DIM))]
    negative: list[str | list[float]] = ["d0200"]
    body = {"positive": positive, "negative": negative, "metric": metric, "k": 8, "params": {"exact": True}}
    hits = post(client, "recommend", body)["results"]
    mean = _average(state, positive)
    target = (mean + (mean - _average(state, negative))).astype(np.float32)
    ids, scores = state.top(metric, target, 8, skip={"d0100", "new-2", "d0200"})
    assert [h["id"] for h in hits] == ids
    np.testing.assert_allclose([h["score"] for h in hits], scores, rtol=1e-5, atol=1e-5)
    solo = post(client, "recommend", {"positive": ["d0100"], "k": 3, "metric": metric, "params": {"exact": True}})
    assert [h["id"] for h in solo["results"]] == state.top(metric, state.docs["d0100"][0], 3, skip={"d0100"})[0]
    similar = post(client, "similar", {"ids": ["d0100", "new-2"], "k": 3, "metric": metric, "params": {"exact": True}})
    assert [h["id"] for h in similar["results"]] == state.top(
        metric, _average(state, ["d0100", "new-2"]), 3, skip={"d0100", "new-2"}
    )[0]


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_recommend_best_score_equals_numpy(served, metric: str) -> None:
    client, state = served
    positive, negative = ["d0300", "new-5"], ["d0400", "d0401"]
    examples = set(positive) | set(negative)
    body = {
        "positive": positive,
        "negative": negative,
        "strategy": "best_score",
        "metric": metric,
        "k": 6,
        "params": {"exact": True},
    }
    hits = post(client, "recommend", body)["results"]
    candidates = sorted({i for p in positive for i in state.top(metric, state.docs[p][0], 6, skip=examples)[0]})
    matrix = np.stack([state.docs[i][0] for i in candidates])
    best = np.max([true_scores(metric, state.docs[p][0], matrix) for p in positive], axis=0)
    worst = np.max([true_scores(metric, state.docs[n][0], matrix) for n in negative], axis=0)
    value = np.where(best > worst, best, -worst)
    order = sorted(range(len(candidates)), key=lambda j: (-value[j], candidates[j]))[:6]
    assert [h["id"] for h in hits] == [candidates[j] for j in order]
    np.testing.assert_allclose([h["score"] for h in hits], value[order], rtol=1e-5, atol=1e-5)
    unknown = client.post("/v1/collections/c/recommend", json={"positive": ["ghost"], "strategy": "best_score"})
    assert unknown.status_code == 404 and "ghost" in unknown.text


@pytest.mark.parametrize(("metric", "diversity"), [("dot", 0.3), ("cosine", 0.7), ("cosine", 0.0)])
def test_mmr_equals_numpy_and_keeps_relevance_as_the_score(served, metric: str, diversity: float) -> None:
    client, state = served
    query = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
    mmr = {"diversity": diversity, "candidates": 40}
    body = {"vector": query.tolist(), "metric": metric, "k": 8, "mmr": mmr, "params": {"exact": True}}
    hits = post(client, "search", body)["results"]
    ids, relevance = state.top(metric, query, 40)
    unit = np.stack([state.docs[i][0] / np.linalg.norm(state.docs[i][0]) for i in ids])
    picked = [0]
    while len(picked) < 8:
        value = [
            -np.inf
            if j in picked
            else (1 - diversity) * relevance[j] - diversity * max(unit[j] @ unit[p] for p in picked)
            for j in range(len(ids))
        ]
        picked.append(int(np.argmax(value)))
    assert [h["id"] for h in hits] == [ids[j] for j in picked]
    np.testing.assert_allclose([h["score"] for h in hits], relevance[picked], rtol=1e-5, atol=1e-5)
    if diversity == 0.0:
        assert [h["id"] for h in hits] == ids[:8]
    offset = post(client, "search", {**body, "k": 4, "offset": 4})["results"]
    assert [h["id"] for h in offset] == [h["id"] for h in hits][4:]
    bad = client.post("/v1/collections/c/search", json={**body, "mmr": {"diversity": 1.5}})
    assert bad.status_code == 400 and "mmr.diversity" in bad.text


def test_a_scroll_whose_version_was_replaced_gets_410(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", rng.standard_normal((300, 4)).astype(np.float32))
    argv = ["build", "--input", str(tmp_path / "v.npy"), "--name", "c", "--root", str(tmp_path / "root"), "--quiet"]
    assert build_main(argv) == 0
    with in_process(tmp_path / "root", DOTCOS_ADMIN_TOKEN=TOKEN) as client:
        cursor = post(client, "scroll", {"limit": 100})["next_cursor"]
        assert build_main(argv) == 0
        client.post("/v1/admin/reload", headers=AUTH)
        gone = client.post("/v1/collections/c/scroll", json={"limit": 100, "cursor": cursor})
        assert gone.status_code == 410 and "start the scroll again" in gone.json()["error"]["message"]
