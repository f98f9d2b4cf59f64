"""The Ray cluster of docker-compose.cluster.yml for real: a head and two worker nodes, each its own
container, a sharded build across the workers, two replicas of every part on different nodes, a
worker killed under search load and mid-build, and writes seen by every replica.

Runs in file order on one cluster (each test leaves both workers running). Talks to the service
only through the port the compose file publishes on 127.0.0.1.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pytest

from tests.containers.stack import Stack, published, wait_serving, write_data

pytestmark = pytest.mark.containers

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WORKERS = {"ray-worker-1", "ray-worker-2"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("cluster"),
        "test-ray",
        file="docker-compose.cluster.yml",
        name="cluster",
        DOTCOS_ADMIN_TOKEN=TOKEN,
    )
    try:
        stack.compose("build", timeout=1200)
        stack.compose("up", "-d", timeout=900)
        stack.wait_healthy(timeout=300)
        with client(stack) as http:
            wait_placed(http, "demo")
        yield stack
    finally:
        stack.down()


def client(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=60, headers=AUTH)


def placement(http: httpx.Client, name: str) -> list[list[tuple[str | None, str]]]:
    """Per part, its replicas' (node, state) as the collection info lists them (none while not served)."""
    reply = http.get(f"/v1/collections/{name}")
    parts = reply.json()["parts"] if reply.status_code == 200 else []
    return [[(r["node"], r["state"]) for r in part["replicas"]] for part in parts]


def wait_placed(http: httpx.Client, name: str, timeout: float = 180) -> None:
    """Until every part runs one replica on each worker node."""
    deadline = time.monotonic() + timeout
    while True:
        parts = placement(http, name)
        wanted = [(node, "RUNNING") for node in sorted(WORKERS)]
        if parts and all(sorted(part, key=lambda r: (r[0] or "", r[1])) == wanted for part in parts):
            return
        assert time.monotonic() < deadline, f"{name} not back on both workers: {parts}"
        time.sleep(1)


def ran_on(log: str) -> dict[str, int]:
    """The nodes a build's shard tasks ran on, with how many each, from its log."""
    match = re.findall(r"shards: tasks ran on (.+)", log)
    assert match, log[-3000:]
    return {name: int(n) for name, n in re.findall(r"([\w-]+) \((\d+)\)", match[-1])}


def kill(stack: Stack, service: str) -> None:
    subprocess.run(["docker", "kill", stack.container(service)], check=True, capture_output=True)


def revive(stack: Stack, service: str) -> None:
    subprocess.run(["docker", "start", stack.container(service)], check=True, capture_output=True)


def exact_top(http: httpx.Client, name: str, vectors: np.ndarray, metric: str) -> list[list[tuple[str, float]]]:
    reply = http.post(
        f"/v1/collections/{name}/search/batch", json={"vectors": vectors.tolist(), "k": 10, "metric": metric}
    )
    assert reply.status_code == 200, reply.text
    return [[(hit["id"], hit["score"]) for hit in hits] for hits in reply.json()["results"]]


def assert_same(got: list[list[tuple[str, float]]], want: list[list[tuple[str, float]]]) -> None:
    for a, b in zip(got, want, strict=True):
        assert [i for i, _ in a] == [i for i, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-5)


def test_the_cluster_builds_across_both_workers_and_places_replicas_apart(cluster: Stack) -> None:
    assert set(ran_on(cluster.logs("builder"))) == WORKERS
    with client(cluster) as http:
        assert http.get("/readyz").status_code == 200
        info = http.get("/v1/collections/demo").json()
        assert info["shards"] == 4
        wait_placed(http, "demo", timeout=30)


def test_a_sharded_build_on_the_cluster_answers_as_an_in_process_build(cluster: Stack) -> None:
    docs = write_data(cluster.data)
    flags = ("--input", "/data/items.npy", "--ids", "/data/items.ids", "--metrics", "dot,cosine")
    on_ray = cluster.builder("build", *flags, "--name", "items", "--shards", "4", "--ray", "auto")
    assert set(ran_on(on_ray.stderr)) == WORKERS
    here = cluster.builder("build", *flags, "--name", "local")
    with client(cluster) as http:
        wait_serving(http, "items", published(on_ray), timeout=240)
        wait_serving(http, "local", published(here), timeout=240)
        queries = np.random.default_rng(1).standard_normal((16, docs.shape[1])).astype(np.float32)
        for metric in ("dot", "cosine"):
            assert_same(exact_top(http, "items", queries, metric), exact_top(http, "local", queries, metric))


def test_writes_reach_every_replica_through_a_rebuild_a_rollback_and_a_restore(cluster: Stack) -> None:
    with client(cluster) as http:
        before = http.get("/v1/collections/items").json()
        doomed = http.post("/v1/collections/items/get", json={"ids": ["item-5"], "with_vectors": True})
        vector = doomed.json()["documents"][0]["vector"]
        fresh = (np.asarray(vector) * -30).tolist()
        deleted = http.post("/v1/collections/items/delete", json={"ids": ["item-5"]})
        assert deleted.status_code == 200, deleted.text
        written = http.post("/v1/collections/items/upsert", json={"ids": ["fresh-1"], "vectors": [fresh]})
        assert written.status_code == 200, written.text
        for _ in range(24):
            near_doomed = exact_top(http, "items", np.asarray([vector]), "cosine")[0]
            near_fresh = exact_top(http, "items", np.asarray([fresh]), "cosine")[0]
            assert "item-5" not in [i for i, _ in near_doomed] and near_fresh[0][0] == "fresh-1"
        assert http.post("/v1/collections/items/count", json={}).json()["count"] == before["count"]

        rebuilt = cluster.builder("build", "--name", "items", "--from-current", "--shards", "4", "--ray", "auto")
        assert set(ran_on(rebuilt.stderr)) == WORKERS
        info = wait_serving(http, "items", published(rebuilt), timeout=240)
        assert info["changes"]["pending_upserts"] == 0 and info["count"] == before["count"]
        assert exact_top(http, "items", np.asarray([fresh]), "dot")[0][0][0] == "fresh-1"

        cluster.builder("activate", "--name", "items", "--version", before["version"])
        info = wait_serving(http, "items", before["version"], timeout=240)
        assert info["changes"]["pending_upserts"] == 1 and info["changes"]["pending_deletes"] == 1
        assert exact_top(http, "items", np.asarray([fresh]), "dot")[0][0][0] == "fresh-1"

        restored = cluster.builder("restore", "--name", "items", "--position", str(deleted.json()["position"] - 1))
        version = re.search(r"restored position \d+ as version (\S+)", restored.stdout)
        assert version, restored.stdout + restored.stderr
        info = wait_serving(http, "items", version.group(1), timeout=240)
        assert info["count"] == before["count"] and info["changes"]["pending_upserts"] == 0
        assert exact_top(http, "items", np.asarray([vector]), "cosine")[0][0][0] == "item-5"
        wait_placed(http, "items")


@contextmanager
def searching(url: str, expected: dict[str, list], vectors: np.ndarray) -> Iterator[list[tuple[float, int, bool]]]:
    """Three clients searching the demo collection while the block runs: (latency s, status, right answer)."""
    stop, outcomes = threading.Event(), []

    def run() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            i = 0
            while not stop.is_set():
                body = {"vector": vectors[i % len(vectors)].tolist(), "k": 10}
                start = time.perf_counter()
                reply = http.post("/v1/collections/demo/search", json=body)
                right = reply.status_code == 200 and reply.json()["results"] == expected[str(i % len(vectors))]
                outcomes.append((time.perf_counter() - start, reply.status_code, right))
                i += 1

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def figures(outcomes: list[tuple[float, int, bool]]) -> str:
    latency = np.array([o[0] for o in outcomes]) * 1000
    failed = sum(1 for o in outcomes if o[1] != 200)
    return (
        f"{len(outcomes)} requests, p50 {np.percentile(latency, 50):.0f} ms, "
        f"p99 {np.percentile(latency, 99):.0f} ms, failed {failed}"
    )


def test_losing_a_worker_under_load_fails_no_request_and_its_replicas_return(cluster: Stack) -> None:
    with client(cluster) as http:
        dim = http.get("/v1/collections/demo").json()["dim"]
        vectors = np.random.default_rng(2).standard_normal((8, dim)).astype(np.float32)
        expected = {
            str(i): http.post("/v1/collections/demo/search", json={"vector": v.tolist(), "k": 10}).json()["results"]
            for i, v in enumerate(vectors)
        }
        phases = {}
        with searching(cluster.url, expected, vectors) as outcomes:
            time.sleep(5)
            phases["before"] = len(outcomes)
            kill(cluster, "ray-worker-1")
            time.sleep(15)
            ready = http.get("/readyz").status_code
            time.sleep(10)
            phases["during"] = len(outcomes)
            revive(cluster, "ray-worker-1")
            wait_placed(http, "demo")
            time.sleep(5)
        assert ready == 200
        spans = {"before": (0, phases["before"]), "during": (phases["before"], phases["during"])}
        spans["after"] = (phases["during"], len(outcomes))
        for phase, (start, end) in spans.items():
            print(f"{phase} the loss: {figures(outcomes[start:end])}")
        assert all(status == 200 and right for _, status, right in outcomes)


def test_a_part_with_no_replica_left_answers_503_never_a_partial_merge(cluster: Stack) -> None:
    with client(cluster) as http:
        dim = http.get("/v1/collections/demo").json()["dim"]
        kill(cluster, "ray-worker-1")
        kill(cluster, "ray-worker-2")
        try:
            statuses = {http.post("/v1/collections/demo/search", json={"vector": [0.1] * dim}).status_code}
            deadline = time.monotonic() + 120
            while http.get("/readyz").status_code != 503:
                statuses.add(http.post("/v1/collections/demo/search", json={"vector": [0.1] * dim}).status_code)
                assert time.monotonic() < deadline, "readyz still 200 with no worker node"
        finally:
            revive(cluster, "ray-worker-1")
            revive(cluster, "ray-worker-2")
        assert statuses == {503}
        wait_placed(http, "demo")
        assert http.get("/readyz").status_code == 200


def test_a_worker_killed_mid_build_is_retried_and_the_version_is_whole(cluster: Stack) -> None:
    rng = np.random.default_rng(7)
    np.save(cluster.data / "big.npy", rng.standard_normal((40_000, 48)).astype(np.float32))
    flags = ("build", "--input", "/data/big.npy", "--metrics", "dot")
    started = cluster.compose(
        "run", "-d", "builder", *flags, "--name", "big", "--index", "hnsw", "--shards", "4", "--ray", "auto"
    )
    builder = started.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 300
    while "shards: started" not in (log := docker_logs(builder)):
        assert time.monotonic() < deadline, log[-2000:]
        time.sleep(0.2)
    kill(cluster, "ray-worker-2")
    try:
        done = subprocess.run(["docker", "wait", builder], capture_output=True, text=True, timeout=600)
        log = docker_logs(builder)
        assert done.stdout.strip() == "0", log[-3000:]
        assert ran_on(log) == {"ray-worker-1": 4}
    finally:
        subprocess.run(["docker", "rm", "-f", builder], capture_output=True)
        revive(cluster, "ray-worker-2")
    here = cluster.builder(*flags, "--name", "big-local")
    with client(cluster) as http:
        version = re.search(r"published big version (\S+):", log)
        assert version, log[-3000:]
        wait_serving(http, "big", version.group(1), timeout=300)
        wait_serving(http, "big-local", published(here), timeout=300)
        queries = rng.standard_normal((8, 48)).astype(np.float32)
        body = {"vectors": queries.tolist(), "k": 10, "params": {"exact": True}}
        sharded = post_retrying(http, "/v1/collections/big/search/batch", body)
        whole = post_retrying(http, "/v1/collections/big-local/search/batch", body)
        assert sharded.status_code == whole.status_code == 200, sharded.text + whole.text
        ids = [[[h["id"] for h in hits] for hits in reply.json()["results"]] for reply in (sharded, whole)]
        assert ids[0] == ids[1]
        wait_placed(http, "demo")


def post_retrying(http: httpx.Client, path: str, body: dict, timeout: float = 120) -> httpx.Response:
    """Posts as a client should: a 503 says a part's replicas are (re)starting, so retry shortly.
    On 2 starved cores, replicas placed on a just-revived node can miss their first calls."""
    deadline = time.monotonic() + timeout
    while (reply := http.post(path, json=body)).status_code == 503 and time.monotonic() < deadline:
        time.sleep(1)
    return reply


def docker_logs(container: str) -> str:
    out = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
    return out.stdout + out.stderr
