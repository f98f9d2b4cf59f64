"""Hot swap under load: a new version goes live without a failed request; bad ones are refused."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx

from index_builder.artifact.layout import read_current, write_atomic
from tests.conftest import Corpus, build

THREADS = 4


class Hammer:
    """Client threads searching in a loop, recording every version seen and every failure."""

    def __init__(self, url: str, vector: list[float]) -> None:
        self.url, self.vector = url, vector
        self.stop = threading.Event()
        self.versions: list[list[str]] = [[] for _ in range(THREADS)]
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(THREADS)]

    def _run(self, slot: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(
                        "/v1/collections/c/search/batch",
                        json={"vectors": [self.vector] * 4, "k": 10, "metric": "cosine"},
                    )
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code != 200 or len(response.json()["results"][0]) != 10:
                    self.failures.append(response.text)
                    continue
                self.versions[slot].append(response.json()["version"])

    def __enter__(self) -> Hammer:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def seen(self) -> set[str]:
        return {v for slot in self.versions for v in slot[-3:]}


def wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def refused_count(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('dotcos_reloads_total{collection="c",outcome="refused"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def publish_broken(root: Path, scratch: Path, corpus: Corpus, version: str, breakage: str) -> None:
    """Publish a complete version whose index file or manifest checksum is wrong, then point CURRENT at it."""
    assert build(scratch, corpus, "c", "--version", version) == 0
    source = scratch / "c" / "versions" / version
    target = root / "c" / "versions" / version
    shutil.copytree(source, target)
    for path in target.iterdir():
        path.chmod(0o644)
    if breakage == "index":
        data = bytearray((target / "cosine.faiss").read_bytes())
        data[40:80] = b"\xff" * 40
        (target / "cosine.faiss").write_bytes(bytes(data))
    else:
        manifest = json.loads((target / "manifest.json").read_text())
        manifest["files"]["vectors.npy"]["sha256"] = "0" * 64
        (target / "manifest.json").write_text(json.dumps(manifest))
    write_atomic(root / "c" / "CURRENT", version)


def test_swap_under_load_fails_no_request(corpus: Corpus, tmp_path: Path, serve) -> None:
    root = tmp_path / "root"
    assert build(root, corpus, "c", "--index", "hnsw") == 0
    first = read_current(root, "c")
    server = serve(root)
    with server.client() as client, Hammer(server.url, corpus.queries[0].tolist()) as hammer:
        wait_for(lambda: all(len(v) > 3 for v in hammer.versions))
        assert build(root, corpus, "c", "--index", "hnsw") == 0
        second = read_current(root, "c")
        wait_for(lambda: hammer.seen() == {second})
        for n, breakage in enumerate(("index", "manifest"), start=1):
            publish_broken(root, tmp_path / f"scratch{n}", corpus, f"broken{n}", breakage)
            wait_for(lambda n=n: refused_count(client) >= n)
        time.sleep(0.5)
    assert hammer.failures == []
    for slot in hammer.versions:
        changes = [v for i, v in enumerate(slot) if i == 0 or slot[i - 1] != v]
        assert changes == [first, second], changes
    assert server.process.poll() is None
    assert "refused c version broken1" in server.log() and "refused c version broken2" in server.log()
    with server.client() as client:
        assert client.get("/v1/collections/c").json()["version"] == second
        assert client.get("/readyz").status_code == 200
