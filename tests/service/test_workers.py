"""Several uvicorn workers: every worker loads the collections, says so in the log, and answers;
none takes a search before its load has finished."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Corpus, build, stop_server


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


LOADED_BESIDE = 6
"""Collections every worker loads besides `items`: loads long enough for workers to finish apart."""
LAST = f"other-{LOADED_BESIDE - 1}"
"""The collection a worker loads last (they load in name order): the searches ask for it."""


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (uvicorn's workers under its supervisor)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _fresh_searches(url: str, vector: list[float], count: int) -> list[int]:
    """Statuses of `count` searches, each on its own connection, so every worker gets some."""
    statuses = []
    for _ in range(count):
        reply = httpx.post(
            f"{url}/v1/collections/{LAST}/search",
            json={"vector": vector, "k": 3},
            headers={"Connection": "close"},
            timeout=30,
        )
        statuses.append(reply.status_code)
    return statuses


@pytest.mark.parametrize("workers", [2, 4])
def test_once_readyz_answers_no_worker_answers_a_search_with_503(
    workers: int, corpus: Corpus, tmp_path: Path, serve
) -> None:
    """A worker takes connections only once it has loaded, so right after /readyz turns 200 (from
    whichever worker) no search gets a 503, across restarts and after a worker is killed."""
    root = tmp_path / "root"
    assert build(root, corpus, "items", "--index", "hnsw") == 0
    for n in range(LOADED_BESIDE):
        assert build(root, corpus, f"other-{n}", "--index", "hnsw") == 0
    vector = corpus.queries[0].tolist()
    for _ in range(2):
        server = serve(root, DOTCOS_WORKERS=str(workers))
        assert _fresh_searches(server.url, vector, 4 * workers) == [200] * (4 * workers)
        stop_server(server)
    server = serve(root, DOTCOS_WORKERS=str(workers))
    victim = next(
        pid for pid in _children(server.process.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()
    )
    loads = server.wait_log("serving items version", timeout=60, times=workers).count("serving items version")
    os.kill(victim, signal.SIGKILL)
    statuses: list[int] = []
    deadline = time.monotonic() + 60
    while server.log().count("serving items version") <= loads and time.monotonic() < deadline:
        statuses += _fresh_searches(server.url, vector, 1)
    statuses += _fresh_searches(server.url, vector, 4 * workers)
    assert f"Child process [{victim}] died" in server.log()
    assert server.log().count("serving items version") == loads + 1
    assert statuses == [200] * len(statuses)
