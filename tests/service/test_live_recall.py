"""Live recall: sampled served searches re-run exactly in the background; the figure agrees with an
independent numpy computation, within its interval, and is exported on /metrics and in the
collection's description."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from index_builder.cli import main as build_main
from service.core.monitor import Figure
from tests.conftest import Corpus, in_process, make_corpus, start_server, stop_server
from tests.service.oracle import true_scores


def test_the_interval_holds_the_estimate_and_narrows_with_samples() -> None:
    assert Figure("v").interval() is None and Figure("v").recall is None
    small, large = Figure("v", 10, 90, 100), Figure("v", 1000, 9000, 10000)
    for figure in (small, large):
        low, high = figure.interval()
        assert low < figure.recall < high
    assert large.interval()[1] - large.interval()[0] < small.interval()[1] - small.interval()[0]
    assert Figure("v", 10, 100, 100).interval()[1] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Corpus]]:
    tmp = tmp_path_factory.mktemp("live")
    corpus = make_corpus(tmp / "data", n=3000)
    root = tmp / "root"
    common = ["--input", str(corpus.docs_path), "--ids", str(corpus.ids_path), "--root", str(root), "--quiet"]
    assert (
        build_main(["build", "--name", "hnsw", *common, "--index", "hnsw", "--hnsw-m", "4", "--target-recall", "0.5"])
        == 0
    )
    assert build_main(["build", "--name", "flat", *common]) == 0
    monitor_only = {"DOTCOS_LIVE_RECALL_ADAPT": "false"}
    with in_process(root, DOTCOS_LIVE_RECALL_SAMPLE="1", DOTCOS_LIVE_RECALL_CPU_SHARE="1", **monitor_only) as client:
        yield client, corpus


def live(client: httpx.Client, name: str) -> dict:
    return client.get(f"/v1/collections/{name}").json()["metrics"]["dot"]["live_recall"]


def wait_for(client: httpx.Client, name: str, samples: int) -> dict:
    deadline = time.monotonic() + 60
    while (figure := live(client, name))["samples"] < samples and time.monotonic() < deadline:
        time.sleep(0.05)
    return figure


def test_no_traffic_claims_nothing(served) -> None:
    client, _ = served
    assert live(client, "hnsw") == {"recall_at_10": None, "samples": 0, "lower": None, "upper": None}
    exposed = client.get("/metrics").text
    assert 'dotcos_live_recall_samples{collection="hnsw",metric="dot"} 0.0' in exposed
    assert not re.search(r'^dotcos_live_recall\{collection="hnsw"', exposed, re.M)
    assert live(client, "flat") is None


def test_live_recall_agrees_with_an_independent_exact_computation(served) -> None:
    client, corpus = served
    rng = np.random.default_rng(3)
    queries = (corpus.queries[rng.integers(0, 64, 60)] + rng.normal(0, 0.2, (60, 24))).astype(np.float32)
    hits = possible = 0
    for i, q in enumerate(queries):
        body: dict = {"vector": q.tolist(), "k": 10, "metric": "dot"}
        if i % 3 == 0:
            body["exclude"] = corpus.ids[:200:2]
        results = client.post("/v1/collections/hnsw/search", json=body).json()["results"]
        scores = true_scores("dot", q, corpus.docs)
        if "exclude" in body:
            scores[:200:2] = -np.inf
        kth = np.sort(scores)[::-1][9]
        hits += sum(h["score"] >= kth - 1e-5 * max(abs(kth), 1) for h in results)
        possible += 10
    client.post("/v1/collections/hnsw/search", json={"vector": queries[0].tolist(), "params": {"ef_search": 64}})
    client.post("/v1/collections/hnsw/search", json={"vector": queries[0].tolist(), "params": {"exact": True}})
    figure = wait_for(client, "hnsw", 60)
    time.sleep(0.3)
    assert live(client, "hnsw")["samples"] == 60, "explicit knobs and exact requests are left out"
    independent = hits / possible
    assert figure["recall_at_10"] == pytest.approx(independent, abs=1e-4)
    assert figure["lower"] <= independent <= figure["upper"]
    assert figure["recall_at_10"] < 1.0, "a sparse graph at a low target must miss something"
    exposed = client.get("/metrics").text
    value = re.search(r'^dotcos_live_recall\{collection="hnsw",metric="dot"\} ([0-9.e-]+)$', exposed, re.M)
    assert value is not None and float(value.group(1)) == pytest.approx(independent, abs=1e-4)
    assert 'dotcos_live_recall_bound{bound="lower",collection="hnsw",metric="dot"}' in exposed
    info = client.get("/v1/collections/hnsw").json()["metrics"]["dot"]
    assert info["search_params"] == info["built_search_params"], "monitor only: the knob stays"


def test_the_monitor_never_touches_answers(served, tmp_path: Path) -> None:
    client, corpus = served
    body = {"vector": corpus.queries[5].tolist(), "k": 10, "metric": "dot"}
    first = client.post("/v1/collections/hnsw/search", json=body).json()["results"]
    for _ in range(5):
        assert client.post("/v1/collections/hnsw/search", json=body).json()["results"] == first


def _recall_at(client: httpx.Client, corpus: Corpus, queries: np.ndarray, ef: int) -> float:
    """Recall@10 of the collection at an explicit efSearch, against numpy brute force."""
    hits = 0
    for q in queries:
        body = {"vector": q.tolist(), "k": 10, "metric": "dot", "params": {"ef_search": ef}}
        results = client.post("/v1/collections/c/search", json=body).json()["results"]
        kth = np.sort(true_scores("dot", q, corpus.docs))[::-1][9]
        hits += sum(h["score"] >= kth - 1e-5 * max(abs(kth), 1) for h in results)
    return hits / (10 * len(queries))


def test_shifted_traffic_raises_the_knob_until_the_target_holds_and_tunes_the_next_build(tmp_path: Path) -> None:
    """On a real server: a build without --queries, shifted traffic, the knob rising, a rebuild on the log."""
    corpus = make_corpus(tmp_path / "data", n=3000)
    root = tmp_path / "root"
    argv = [
        "build",
        "--input",
        str(corpus.docs_path),
        "--ids",
        str(corpus.ids_path),
        "--name",
        "c",
        "--root",
        str(root),
    ]
    graph = ["--index", "hnsw", "--hnsw-m", "8", "--ef-construction", "40", "--metrics", "dot", "--quiet"]
    assert build_main([*argv, *graph]) == 0
    rng = np.random.default_rng(3)

    def shifted(n: int) -> np.ndarray:
        """User-tower-like queries: related to the documents' clusters, not drawn from them."""
        return (corpus.queries[rng.integers(0, 64, n)] * 0.5 + rng.normal(0, 0.5, (n, 24))).astype(np.float32)

    env = {"DOTCOS_LIVE_RECALL_SAMPLE": "1", "DOTCOS_LIVE_RECALL_CPU_SHARE": "1", "DOTCOS_QUERY_LOG_SIZE": "400"}
    server = start_server(root, tmp_path / "server.log", **env)
    with server.client() as client:
        built = client.get("/v1/collections/c").json()["metrics"]["dot"]["built_search_params"]["efSearch"]
        assert _recall_at(client, corpus, shifted(100), built) < 0.95, "documents flatter the default here"
        figure: dict = {}
        for _ in range(20):
            for q in shifted(40):
                client.post("/v1/collections/c/search", json={"vector": q.tolist(), "metric": "dot"})
            time.sleep(0.3)
            info = client.get("/v1/collections/c").json()["metrics"]["dot"]
            figure, now = info["live_recall"], info["search_params"]["efSearch"]
            if now > built and figure["samples"] >= 120 and figure["upper"] >= 0.95:
                break
        assert now > built and figure["upper"] >= 0.95, (built, now, figure)
        assert _recall_at(client, corpus, shifted(150), now) >= 0.93
        exposed = client.get("/metrics").text
        assert f'dotcos_default_knob{{collection="c",metric="dot",param="efSearch"}} {float(now)}' in exposed
    stop_server(server)
    assert "live recall@10 in [" in server.log() and f"raised efSearch from {built} to" in server.log()
    assert build_main([*argv, *graph]) == 0
    with in_process(root, DOTCOS_LIVE_RECALL_SAMPLE="0") as client:
        dot = client.get("/v1/collections/c").json()["metrics"]["dot"]
        assert dot["self_check_query_source"] == "recorded traffic"
        fresh = _recall_at(client, corpus, shifted(200), dot["built_search_params"]["efSearch"])
        assert abs(dot["recall_at_10"] - fresh) <= 0.03, (dot["recall_at_10"], fresh)
