"""The ASGI fast path and the FastAPI routes answer search identically, errors included."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Corpus, build


def test_fast_path_and_routes_agree(corpus: Corpus, tmp_path: Path, serve) -> None:
    assert build(tmp_path, corpus, "c", "--index", "hnsw") == 0
    fast, routed = serve(tmp_path), serve(tmp_path, DOTCOS_FAST_PATH="false")
    queries = corpus.queries[:4]
    bodies = [
        ("/v1/collections/c/search", {"vector": queries[0].tolist(), "k": 7, "metric": "cosine",
                                      "exclude": corpus.ids[:3]}),
        ("/v1/collections/c/search/batch", {"vectors": queries.tolist(), "k": 5}),
        ("/v1/collections/c/search", {"vector": [1.0, 2.0], "k": 5}),
        ("/v1/collections/c/search", {"vector": queries[0].tolist(), "k": 0}),
        ("/v1/collections/c/search", {"vector": queries[0].tolist(), "include": ["ghost"]}),
        ("/v1/collections/nope/search/batch", {"vectors": queries.tolist()}),
    ]
    with fast.client() as a, routed.client() as b:
        for path, body in bodies:
            one, two = a.post(path, json=body), b.post(path, json=body)
            assert one.status_code == two.status_code, (path, one.text, two.text)
            assert one.json() == two.json()
        bad = '{"vector": [1, 2'
        one = a.post("/v1/collections/c/search", content=bad, headers={"Content-Type": "application/json"})
        two = b.post("/v1/collections/c/search", content=bad, headers={"Content-Type": "application/json"})
        assert one.status_code == two.status_code == 422
        assert 'route="/v1/collections/{name}/search"' in a.get("/metrics").text
