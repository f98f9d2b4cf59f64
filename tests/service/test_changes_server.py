"""Changes on a real server with 2 workers: each change is visible in every worker within the
refresh delay, a rebuild --from-current is swapped in under search load while changes keep
streaming, and no request fails; the final answers equal the oracle's."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from index_builder.artifact.layout import read_current
from index_builder.cli import main as build_main
from tests.conftest import Corpus, build
from tests.service.test_changes import AUTH, TOKEN, Oracle, _check
from tests.service.test_hot_swap import Hammer, wait_for

FRESH = {"Connection": "close"}


def positions(url: str, tries: int = 12) -> set[int]:
    """The journal position each answering worker has applied (fresh connections reach both)."""
    seen = set()
    for _ in range(tries):
        info = httpx.get(f"{url}/v1/collections/c", headers=FRESH, timeout=10).json()
        seen.add(info["changes"]["journal_position"])
    return seen


@pytest.mark.parametrize("layout", [["--index", "hnsw"], ["--index", "flat", "--shards", "2"]])
def test_changes_stream_through_two_workers_and_a_rebuild(
    corpus: Corpus, tmp_path: Path, serve, layout: list[str]
) -> None:
    root = tmp_path / "root"
    assert build(root, corpus, "c", *layout) == 0
    server = serve(root, DOTCOS_WORKERS="2", DOTCOS_ADMIN_TOKEN=TOKEN, DOTCOS_OVERLAY_REFRESH_S="0.1")
    oracle = Oracle(corpus.ids, corpus.docs)
    rng = np.random.default_rng(5)
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []
    written: list[int] = []

    def stream() -> None:
        n = 0
        with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client:
            while not stop.is_set():
                with lock:
                    if n % 2:
                        doomed = [list(oracle.stored)[int(rng.integers(len(oracle.stored)))]]
                        reply = client.post("/v1/collections/c/delete", json={"ids": doomed})
                        oracle.delete(doomed)
                    else:
                        ids = [f"new-{n}", list(oracle.stored)[int(rng.integers(len(oracle.stored)))]]
                        vectors = rng.standard_normal((2, corpus.docs.shape[1])).astype(np.float32)
                        reply = client.post("/v1/collections/c/upsert", json={"ids": ids, "vectors": vectors.tolist()})
                        oracle.upsert(ids, vectors)
                if reply.status_code != 200:
                    errors.append(reply.text)
                else:
                    written.append(reply.json()["position"])
                n += 1
                time.sleep(0.02)

    writer = threading.Thread(target=stream)
    with Hammer(server.url, corpus.queries[0].tolist()) as hammer:
        writer.start()
        wait_for(lambda: len(written) >= 20)
        with lock:
            target = written[-1]
        wait_for(lambda: min(positions(server.url)) >= target, timeout=10)
        fold = ["build", "--from-current", "--name", "c", "--root", str(root), "--quiet", *layout[2:]]
        assert build_main(fold) == 0
        second = read_current(root, "c")
        wait_for(lambda: hammer.seen() == {second})
        time.sleep(1.0)
        stop.set()
        writer.join()
    assert errors == [] and hammer.failures == []
    final = written[-1]
    wait_for(lambda: positions(server.url) == {final}, timeout=10)
    changes = httpx.get(f"{server.url}/v1/collections/c").json()["changes"]
    built = changes["built_position"]
    assert target <= built <= final
    assert changes["pending_deletes"] + changes["pending_upserts"] <= 2 * (final - built)
    for query in corpus.queries[:6]:
        for metric in ("dot", "cosine"):
            for _ in range(2):
                body = {"vector": query.tolist(), "k": 10, "metric": metric, "params": {"exact": True}}
                reply = httpx.post(f"{server.url}/v1/collections/c/search", json=body, headers=FRESH)
                _check(reply.json()["results"], oracle, metric, query, exact=True)
