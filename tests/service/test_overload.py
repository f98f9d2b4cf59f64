"""Past its queue limit the service sheds load at once with 503 + Retry-After; deadlines are honoured."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import numpy as np

from tests.conftest import build, make_corpus

SLOW = {"k": 100, "metric": "cosine", "params": {"exact": True}}


def test_overload_is_shed_with_503_and_retry_after(tmp_path: Path, serve) -> None:
    corpus = make_corpus(tmp_path / "data", n=20000, dim=64)
    assert build(tmp_path / "root", corpus, "c", "--index", "hnsw", "--hnsw-m", "8", "--ef-construction", "16") == 0
    server = serve(tmp_path / "root", DOTCOS_MAX_PENDING="2", DOTCOS_SEARCH_THREADS="1", DOTCOS_COALESCE_MAX_BATCH="1")
    queries = np.random.default_rng(0).standard_normal((40, 64)).tolist()
    replies: list[httpx.Response] = []
    lock = threading.Lock()

    def fire(i: int) -> None:
        body = {"vectors": [queries[i]] * 64, **SLOW}
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.post("/v1/collections/c/search/batch", json=body)
        with lock:
            replies.append(response)

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shed = [r for r in replies if r.status_code == 503]
    served = [r for r in replies if r.status_code == 200]
    assert len(shed) + len(served) == len(replies)
    assert shed and served
    for reply in shed:
        assert reply.headers["Retry-After"] == "1"
        assert "overloaded" in reply.json()["error"]["message"]
    assert all(len(r.json()["results"]) == 64 for r in served)
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics").text
        assert 'status="503"' in metrics


def test_a_deadline_that_cannot_be_met_is_a_503(tmp_path: Path, serve) -> None:
    corpus = make_corpus(tmp_path / "data", n=20000, dim=64)
    assert build(tmp_path / "root", corpus, "c", "--index", "hnsw", "--hnsw-m", "8", "--ef-construction", "16") == 0
    server = serve(tmp_path / "root")
    body = {"vectors": np.random.default_rng(1).standard_normal((512, 64)).tolist(), **SLOW}
    with server.client() as client:
        late = client.post("/v1/collections/c/search/batch", json=body, headers={"X-Deadline-Ms": "0.5"})
        assert late.status_code == 503 and "deadline of 0.5 ms" in late.json()["error"]["message"]
        bad = client.post("/v1/collections/c/search/batch", json=body, headers={"X-Deadline-Ms": "soon"})
        assert bad.status_code == 400 and "X-Deadline-Ms" in bad.json()["error"]["message"]
        ok = client.post("/v1/collections/c/search/batch", json=body, headers={"X-Deadline-Ms": "60000"})
        assert ok.status_code == 200
