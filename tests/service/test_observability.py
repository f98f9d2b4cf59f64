"""Per-request debug logs, and /healthz answering while searches keep the executor busy."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from service.api.observability import ServiceMetrics
from tests.conftest import build, in_process, make_corpus


def test_debug_log_has_one_line_per_request(tmp_path: Path, serve) -> None:
    corpus = make_corpus(tmp_path / "data", n=500)
    assert build(tmp_path / "root", corpus, "c") == 0
    server = serve(tmp_path / "root", DOTCOS_LOG_LEVEL="debug")
    with server.client() as client:
        client.post("/v1/collections/c/search", json={"vector": corpus.queries[0].tolist(), "metric": "cosine"})
        client.get("/v1/collections/nope")
    post = "request method=POST route=/v1/collections/{name}/search metric=cosine status=200"
    get = "request method=GET route=/v1/collections/{name} metric=- status=404"
    log = server.wait_log(post, get)
    assert post in log
    assert get in log


def test_healthz_answers_while_searches_run(tmp_path: Path, serve) -> None:
    corpus = make_corpus(tmp_path / "data", n=20000, dim=64)
    assert build(tmp_path / "root", corpus, "c", "--index", "hnsw", "--hnsw-m", "8", "--ef-construction", "16") == 0
    server = serve(tmp_path / "root", DOTCOS_SEARCH_THREADS="1")
    body = {"vectors": corpus.queries[:64].tolist() * 4, "k": 50, "metric": "cosine", "params": {"exact": True}}
    in_flight = 0
    lock, stop = threading.Lock(), threading.Event()
    answered_during_search = 0

    def search() -> None:
        nonlocal in_flight
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not stop.is_set():
                with lock:
                    in_flight += 1
                try:
                    assert client.post("/v1/collections/c/search/batch", json=body).status_code == 200
                finally:
                    with lock:
                        in_flight -= 1

    workers = [threading.Thread(target=search) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        with server.client() as client:
            for _ in range(30):
                with lock:
                    busy_before = in_flight > 0
                assert client.get("/healthz").status_code == 200
                with lock:
                    answered_during_search += busy_before and in_flight > 0
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert answered_during_search > 0


def test_request_metrics_accumulate_per_label_set() -> None:
    metrics = ServiceMetrics()
    for seconds in (0.002, 0.004):
        metrics.request_done("/v1/collections/{name}/search", "dot", 200, seconds)
    metrics.request_done("/v1/collections/{name}/search", "cosine", 400, 0.001)
    value = metrics.registry.get_sample_value
    search = {"route": "/v1/collections/{name}/search"}
    assert value("dotcos_requests_total", {**search, "metric": "dot", "status": "200"}) == 2
    assert value("dotcos_requests_total", {**search, "metric": "cosine", "status": "400"}) == 1
    assert value("dotcos_request_seconds_sum", {**search, "metric": "dot"}) == pytest.approx(0.006)
    assert value("dotcos_request_seconds_count", {**search, "metric": "cosine"}) == 1


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series of a Prometheus exposition, or None when it is absent."""
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.startswith(name + "{") and set(series[len(name) + 1 : -1].split(",")) == wanted:
            return float(value)
    return None


def test_metrics_show_pending_changes_the_journal_and_the_query_log(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "data", n=500)
    assert build(tmp_path / "root", corpus, "c") == 0
    auth = {"Authorization": "Bearer t"}
    env = {"DOTCOS_ADMIN_TOKEN": "t", "DOTCOS_QUERY_LOG_FLUSH_S": "0.05"}
    with in_process(tmp_path / "root", **env) as client:
        q = corpus.queries[0].tolist()
        client.post("/v1/collections/c/delete", json={"ids": ["doc-00001", "doc-00002"]}, headers=auth)
        written = client.post("/v1/collections/c/upsert", json={"ids": ["n1"], "vectors": [q]}, headers=auth).json()
        client.post("/v1/collections/c/search", json={"vector": q, "metric": "cosine"})
        deadline = time.monotonic() + 10
        while _sample(client.get("/metrics").text, "dotcos_query_log_vectors", collection="c", metric="cosine") is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        text = client.get("/metrics").text
        assert _sample(text, "dotcos_pending_changes", collection="c", kind="delete") == 2
        assert _sample(text, "dotcos_pending_changes", collection="c", kind="upsert") == 1
        assert _sample(text, "dotcos_pending_changes", collection="c", kind="attributes") == 0
        assert _sample(text, "dotcos_journal_position", collection="c") == written["position"]
        assert _sample(text, "dotcos_overlay_bytes", collection="c") > 0
        assert _sample(text, "dotcos_query_log_vectors", collection="c", metric="cosine") == 1


def test_failed_requests_carry_the_metric_they_named(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "data", n=500)
    assert build(tmp_path / "root", corpus, "c") == 0
    with in_process(tmp_path / "root") as client:
        assert client.post("/v1/collections/c/search", json={"vector": [1.0], "metric": "cosine"}).status_code == 400
        assert client.post("/v1/collections/c/search", json={"vector": "x", "metric": "cosine"}).status_code == 422
        assert client.post("/v1/collections/c/search", json={"vector": [1.0], "metric": "l7"}).status_code == 400
        assert client.post("/v1/collections/c/search", json={"vector": [1.0]}).status_code == 400
        binary = {"Content-Type": "application/octet-stream"}
        assert (
            client.post("/v1/collections/c/search?metric=cosine", content=b"\0" * 8, headers=binary).status_code == 400
        )
        text = client.get("/metrics").text
    route = "/v1/collections/{name}/search"
    assert _sample(text, "dotcos_requests_total", route=route, metric="cosine", status="400") == 2
    assert _sample(text, "dotcos_requests_total", route=route, metric="cosine", status="422") == 1
    assert _sample(text, "dotcos_requests_total", route=route, metric="invalid", status="400") == 1
    assert _sample(text, "dotcos_requests_total", route=route, metric="dot", status="400") == 1
