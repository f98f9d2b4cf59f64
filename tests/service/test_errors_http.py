"""Every bad input gets the documented JSON error over HTTP, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Corpus, build, in_process, make_corpus

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Corpus]]:
    tmp = tmp_path_factory.mktemp("errors")
    corpus = make_corpus(tmp / "data", n=500)
    assert build(tmp / "root", corpus, "c") == 0
    with in_process(
        tmp / "root",
        DOTCOS_ADMIN_TOKEN=TOKEN,
        DOTCOS_MAX_BATCH="4",
        DOTCOS_MAX_BODY_BYTES="20000",
        DOTCOS_MAX_K="50",
    ) as http:
        yield http, corpus


def vec(corpus: Corpus) -> list[float]:
    return corpus.queries[0].tolist()


def raw_post(http: httpx.Client, path: str, text: str) -> httpx.Response:
    return http.post(path, content=text, headers={"Content-Type": "application/json"})


CASES = [
    (
        "unknown collection",
        "/v1/collections/nope/search",
        lambda c: {"vector": vec(c)},
        404,
        "collection 'nope' not found (served: c)",
    ),
    (
        "wrong dimension",
        "/v1/collections/c/search",
        lambda c: {"vector": [1.0, 2.0]},
        400,
        "vector: dimension 24 expected by collection 'c', got 2",
    ),
    (
        "ragged batch",
        "/v1/collections/c/search/batch",
        lambda c: {"vectors": [vec(c), [1.0]]},
        400,
        "vectors[1]: dimension 24 expected (as vectors[0]), got 1",
    ),
    (
        "empty vector",
        "/v1/collections/c/search",
        lambda c: {"vector": []},
        422,
        "vector: List should have at least 1 item",
    ),
    (
        "not a number",
        "/v1/collections/c/search",
        lambda c: {"vector": ["x"] * 24},
        422,
        "vector[0]: Input should be a valid number",
    ),
    ("missing vector", "/v1/collections/c/search", lambda c: {"k": 3}, 422, "vector: Field required"),
    (
        "zero k",
        "/v1/collections/c/search",
        lambda c: {"vector": vec(c), "k": 0},
        400,
        "k: must be between 1 and 50, got 0",
    ),
    (
        "k over limit",
        "/v1/collections/c/search",
        lambda c: {"vector": vec(c), "k": 51},
        400,
        "k: must be between 1 and 50, got 51",
    ),
    (
        "batch over limit",
        "/v1/collections/c/search/batch",
        lambda c: {"vectors": [vec(c)] * 5},
        413,
        "vectors: batch of 5 exceeds the limit of 4",
    ),
    (
        "metric not built",
        "/v1/collections/c/search",
        lambda c: {"vector": vec(c), "metric": "norm_sigmoid"},
        400,
        "metric 'norm_sigmoid' is not built for collection 'c'; built: dot, cosine",
    ),
    (
        "unknown metric",
        "/v1/collections/c/search",
        lambda c: {"vector": vec(c), "metric": "l2"},
        400,
        "unknown metric 'l2'; expected one of",
    ),
    (
        "zero cosine query",
        "/v1/collections/c/search",
        lambda c: {"vector": [0.0] * 24, "metric": "cosine"},
        400,
        "vector: zero-norm vector has no cosine score",
    ),
    (
        "unknown include",
        "/v1/collections/c/search",
        lambda c: {"vector": vec(c), "include": ["doc-00001", "zz"]},
        404,
        "include: unknown id(s) in collection 'c': 'zz'",
    ),
    (
        "unknown field",
        "/v1/collections/c/search",
        lambda c: {"vector": vec(c), "topk": 3},
        422,
        "topk: Extra inputs are not permitted",
    ),
    (
        "negative nprobe",
        "/v1/collections/c/search",
        lambda c: {"vector": vec(c), "params": {"nprobe": -1}},
        400,
        "params.nprobe: must be at least 1, got -1",
    ),
    (
        "zero ef_search",
        "/v1/collections/c/search",
        lambda c: {"vector": vec(c), "params": {"ef_search": 0}},
        400,
        "params.ef_search: must be between 1 and",
    ),
    (
        "k as a string",
        "/v1/collections/c/search",
        lambda c: {"vector": vec(c), "k": "5"},
        422,
        'k: Input should be a valid integer (got "5")',
    ),
    (
        "a vector of strings is not echoed",
        "/v1/collections/c/search",
        lambda c: {"vector": ["0.5"] * 24},
        422,
        "vector[0]: Input should be a valid number",
    ),
    (
        "float32 overflow",
        "/v1/collections/c/search",
        lambda c: {"vector": [1e39] + vec(c)[1:]},
        400,
        "vector: the value at position 0 is outside the float32 range",
    ),
]


@pytest.mark.parametrize("path, make, status, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_json_error(path: str, make, status: int, message: str, client) -> None:
    http, corpus = client
    response = http.post(path, json=make(corpus))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["code"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_numbers_are_refused(literal: str, client) -> None:
    http, corpus = client
    values = ", ".join([literal] + [str(v) for v in vec(corpus)[1:]])
    response = raw_post(http, "/v1/collections/c/search", f'{{"vector": [{values}]}}')
    assert response.status_code in (400, 422)
    assert "vector" in response.json()["error"]["message"]


def test_malformed_json_is_422(client) -> None:
    http, _ = client
    response = raw_post(http, "/v1/collections/c/search", '{"vector": [1, 2')
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_unknown_exclude_ids_are_ignored(client) -> None:
    http, corpus = client
    response = http.post("/v1/collections/c/search", json={"vector": vec(corpus), "exclude": ["ghost"]})
    assert response.status_code == 200 and len(response.json()["results"]) == 10


def test_body_too_large_is_413(client) -> None:
    http, corpus = client
    response = http.post("/v1/collections/c/search", json={"vector": vec(corpus), "exclude": ["x" * 30000]})
    assert response.status_code == 413
    assert "exceed the limit of 20000" in response.json()["error"]["message"]

    def chunks():
        yield b'{"vector": ['
        for _ in range(5000):
            yield b"1.0, "
        yield b"1.0]}"

    streamed = http.post("/v1/collections/c/search", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_unknown_route_and_method_use_the_error_shape(client) -> None:
    http, _ = client
    assert http.get("/v2/nothing").json()["error"]["code"] == "not_found"
    assert http.get("/v1/collections/c/search").status_code == 405


def test_admin_reload_needs_the_token(client) -> None:
    http, _ = client
    assert http.post("/v1/admin/reload").status_code == 401
    wrong = http.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    ok = http.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok.json()["results"][0]["status"] == "unchanged"


def test_admin_routes_say_they_are_off_without_a_token(corpus: Corpus, tmp_path, serve) -> None:
    assert build(tmp_path, corpus, "c") == 0
    server = serve(tmp_path)
    with server.client() as http:
        for path in ("/v1/admin/reload", "/v1/collections/c/delete", "/v1/collections/c/attributes"):
            reply = http.post(path, headers={"Authorization": "Bearer x"}, json={"ids": ["doc-00001"]})
            assert reply.status_code == 404
            assert reply.json()["error"]["message"] == "admin routes are off: set DOTCOS_ADMIN_TOKEN to turn them on"
        assert http.get("/healthz").json() == {"status": "ok"}
    assert TOKEN not in server.log()


def test_readyz_is_ready_with_no_collections(tmp_path) -> None:
    with in_process(tmp_path / "empty") as http:
        assert http.get("/readyz").json() == {"status": "ready", "collections": {}}
        assert http.get("/v1/collections").json() == {"collections": []}


def test_numpy_answers_are_unchanged_by_bad_requests(client) -> None:
    http, corpus = client
    good = http.post("/v1/collections/c/search", json={"vector": vec(corpus)}).json()
    assert raw_post(http, "/v1/collections/c/search", '{"vector": [NaN, 1, 2]}').status_code == 400
    assert http.post("/v1/collections/c/search", json={"vector": vec(corpus)}).json() == good
