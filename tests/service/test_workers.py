"""Several uvicorn workers: every worker loads the collections, says so in the log, and answers."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Corpus, build


def test_every_worker_logs_its_loads_and_answers(corpus: Corpus, tmp_path: Path, serve) -> None:
    root = tmp_path / "root"
    assert build(root, corpus, "items") == 0
    server = serve(root, DOTCOS_WORKERS="2")
    log = server.wait_log(
        "loaded items version", "serving items version", "Started server process", timeout=30, times=2
    )
    assert log.count("Started server process") == 2
    assert log.count("loaded items version") == 2 and log.count("serving items version") == 2
    with server.client() as client:
        for _ in range(8):
            reply = client.post("/v1/collections/items/search", json={"vector": corpus.queries[0].tolist(), "k": 3})
            assert reply.status_code == 200
