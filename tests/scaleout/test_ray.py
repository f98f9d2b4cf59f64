"""Scale-out on a real local Ray cluster: sharded builds as Ray tasks, shards on Ray Serve.

Every build and server here starts its own local cluster (`--ray local`,
DOTCOS_RAY_ADDRESS=local) bound to 127.0.0.1, as a user would on one machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from index_builder.artifact.layout import list_versions, read_current
from service.core.query import SearchOptions
from tests.builder.helpers import active_manifest
from tests.conftest import BIN, Corpus, build
from tests.scaleout.answers import assert_same_answers, load, top_k
from tests.service.oracle import true_scores
from tests.service.test_changes import AUTH, TOKEN

if importlib.util.find_spec("ray") is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI runs the scale-out tests: install with `make install EXTRAS=dev,ray`")
    pytest.skip("Ray is the `ray` extra: `make install EXTRAS=dev,ray` runs these", allow_module_level=True)

METRICS = "dot,cosine,norm_pow:0.5,norm_sigmoid,covariance"
RAY_ENV = {"DOTCOS_RAY_REPLICA_CPUS": "0", "DOTCOS_RAY_DRAIN_S": "2"}


def ray_build(root: Path, corpus: Corpus, name: str, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`dotcos-build build --ray local` as a separate process (Ray workers are processes anyway)."""
    argv = [
        str(BIN / "dotcos-build"),
        "build",
        "--input",
        str(corpus.docs_path),
        "--ids",
        str(corpus.ids_path),
        "--queries",
        str(corpus.queries_path),
        "--name",
        name,
        "--root",
        str(root),
        "--ray",
        "local",
        "--quiet",
        *extra,
    ]
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


@pytest.fixture(scope="module")
def root(corpus: Corpus, users: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same corpus unsharded ('single') and built on Ray in 3 shards ('sharded')."""
    root = tmp_path_factory.mktemp("ray-root")
    assert build(root, corpus, "single", "--metrics", METRICS, "--users", str(users)) == 0
    done = ray_build(root, corpus, "sharded", "--metrics", METRICS, "--users", str(users), "--shards", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    return root


@pytest.mark.parametrize("metric", METRICS.split(","))
def test_ray_sharded_flat_build_equals_unsharded(root: Path, corpus: Corpus, metric: str) -> None:
    assert_same_answers(load(root, "sharded"), load(root, "single"), corpus.queries[:16], metric, corpus.ids)


def test_ray_sharded_mips_build_equals_unsharded(corpus: Corpus, tmp_path: Path) -> None:
    assert build(tmp_path, corpus, "single", "--metrics", "dot", "--mips", "l2") == 0
    done = ray_build(tmp_path, corpus, "sharded", "--metrics", "dot", "--mips", "l2", "--shards", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    sharded = load(tmp_path, "sharded")
    assert sharded.manifest.metrics["dot"].index.layout == "l2_augmented"
    assert_same_answers(sharded, load(tmp_path, "single"), corpus.queries[:16], "dot", corpus.ids)


def test_ray_sharded_hnsw_merged_recall_matches_its_manifest(corpus: Corpus, tmp_path: Path) -> None:
    done = ray_build(tmp_path, corpus, "hnsw", "--metrics", "dot,cosine", "--index", "hnsw", "--shards", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    from service.core.query import SearchOptions
    from tests.scaleout.answers import top_k

    version = load(tmp_path, "hnsw")
    row_of = {doc_id: i for i, doc_id in enumerate(corpus.ids)}
    for metric in ("dot", "cosine"):
        answers = top_k(version, corpus.queries, SearchOptions(k=10, metric=metric))
        hits = 0
        for query, answer in zip(corpus.queries, answers, strict=True):
            scores = true_scores(metric, query, corpus.docs)
            kth = np.sort(scores)[-10]
            hits += sum(scores[row_of[doc_id]] >= kth - 1e-5 for doc_id, _ in answer)
        recall = hits / (10 * len(corpus.queries))
        manifest_recall = version.manifest.metrics[metric].index.self_check.recall_at_10
        assert manifest_recall >= 0.9
        assert abs(recall - manifest_recall) <= 0.05, (metric, recall, manifest_recall)


def test_a_shard_task_that_keeps_dying_publishes_nothing(corpus: Corpus, tmp_path: Path) -> None:
    assert build(tmp_path, corpus, "items", "--metrics", "dot") == 0
    before = read_current(tmp_path, "items")
    done = ray_build(
        tmp_path,
        corpus,
        "items",
        "--metrics",
        "dot",
        "--shards",
        "2",
        "--task-retries",
        "1",
        DOTCOS_CRASH_AT="shard.build",
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: shards task")
    assert read_current(tmp_path, "items") == before
    assert list_versions(tmp_path, "items") == [before]
    assert not list((tmp_path / "items").glob(".staging*"))


def test_bad_input_found_by_a_ray_task_exits_2_with_one_line(corpus: Corpus, tmp_path: Path) -> None:
    docs = corpus.docs.copy()
    docs[2500, 3] = np.nan
    np.save(tmp_path / "nan.npy", docs)
    argv = [
        str(BIN / "dotcos-build"),
        "build",
        "--input",
        str(tmp_path / "nan.npy"),
        "--name",
        "items",
        "--root",
        str(tmp_path),
        "--shards",
        "2",
        "--ray",
        "local",
        "--quiet",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1]
        == f"error: {tmp_path / 'nan.npy'}: row 2500 holds nan (NaN or Inf is not allowed)"
    )
    assert list_versions(tmp_path, "items") == []


def test_a_shard_task_killed_once_is_retried_by_ray(corpus: Corpus, tmp_path: Path) -> None:
    done = ray_build(tmp_path, corpus, "items", "--metrics", "dot", "--shards", "2", DOTCOS_CRASH_AT="shard.build.once")
    assert done.returncode == 0, done.stderr[-2000:]
    _, manifest = active_manifest(tmp_path, "items")
    assert len(manifest.shards) == 2 and manifest.count == len(corpus.ids)


def _post(client: httpx.Client, path: str, body: dict) -> tuple[int, dict]:
    response = client.post(path, json=body)
    return response.status_code, response.json()


def _requests(corpus: Corpus) -> list[tuple[str, dict]]:
    q = corpus.queries
    ids = corpus.ids
    out: list[tuple[str, dict]] = []
    for metric in ("dot", "cosine", "norm_sigmoid", "covariance"):
        out += [
            ("search/batch", {"vectors": q[:8].tolist(), "k": 10, "metric": metric}),
            ("search", {"vector": q[9].tolist(), "k": 7, "metric": metric, "exclude": ids[::5]}),
            ("search", {"vector": q[10].tolist(), "k": 7, "metric": metric, "include": ids[::13]}),
            ("similar", {"id": ids[77], "k": 5, "metric": metric}),
            ("score", {"vectors": q[:2].tolist(), "ids": [ids[:9], ids[-3:]], "metric": metric}),
        ]
    out += [
        ("search", {"vector": q[0].tolist(), "include": ["no-such-id"]}),
        ("similar", {"id": "no-such-id"}),
        ("score", {"vector": q[0].tolist(), "ids": [ids[0], "no-such-id"]}),
        ("search", {"vector": [1.0, 2.0]}),
        ("search", {"vector": q[0].tolist(), "metric": "nope:1"}),
        ("search", {"vector": q[0].tolist(), "k": 0}),
    ]
    return out


def test_ray_serve_answers_exactly_like_one_process(root: Path, corpus: Corpus, serve) -> None:
    plain = serve(root)
    on_ray = serve(root, DOTCOS_RAY_ADDRESS="local", DOTCOS_RELOAD_INTERVAL="0", **RAY_ENV)
    with plain.client() as a, on_ray.client() as b:
        assert b.get("/v1/collections/sharded").json()["shards"] == 3
        for path, body in _requests(corpus):
            for name in ("sharded", "single"):
                assert _post(a, f"/v1/collections/{name}/{path}", body) == _post(
                    b, f"/v1/collections/{name}/{path}", body
                ), (name, path)
        status, single = _post(a, "/v1/collections/single/search/batch", _requests(corpus)[0][1])
        assert status == 200
        assert (
            _post(b, "/v1/collections/sharded/search/batch", _requests(corpus)[0][1])[1]["results"] == single["results"]
        )


@contextmanager
def hammering(url: str, corpus: Corpus, expected: dict[str, list], threads: int = 3) -> Iterator[list]:
    """Searches from `threads` clients for as long as the block runs; yields their (status, detail) list."""
    stop, outcomes = threading.Event(), []
    workers = [threading.Thread(target=_hammer, args=(url, corpus, expected, stop, outcomes)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1.0)
        yield outcomes
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def _hammer(
    url: str, corpus: Corpus, expected: dict[str, list], stop: threading.Event, outcomes: list[tuple[int, str]]
) -> None:
    """Search in a loop; record (status, version) and flag any 200 whose answer is not the expected one."""
    body = {"vectors": corpus.queries[:4].tolist(), "k": 10, "metric": "dot"}
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            response = client.post("/v1/collections/items/search/batch", json=body)
            data = response.json()
            if response.status_code == 200:
                right = data["results"] == expected.get(data["version"])
                outcomes.append((200 if right else -1, data["version"]))
            else:
                outcomes.append((response.status_code, data["error"]["message"]))


def _expected(root: Path, corpus: Corpus) -> dict[str, list]:
    answers = {}
    for version in list_versions(root, "items"):
        (root / "items" / "CURRENT").write_text(version)
        rows = top_k(load(root, "items"), corpus.queries[:4], SearchOptions(k=10, metric="dot"))
        answers[version] = [[{"id": i, "score": s} for i, s in row] for row in rows]
    return answers


def test_ray_hot_swap_under_load_fails_no_request(corpus: Corpus, tmp_path: Path, serve) -> None:
    assert build(tmp_path, corpus, "items", "--metrics", "dot", "--shards", "2", "--version", "v1") == 0
    assert build(tmp_path, corpus, "items", "--metrics", "dot", "--shards", "3", "--version", "v2") == 0
    expected = _expected(tmp_path, corpus)
    (tmp_path / "items" / "CURRENT").write_text("v1")
    server = serve(tmp_path, DOTCOS_RAY_ADDRESS="local", **RAY_ENV)
    with hammering(server.url, corpus, expected) as outcomes:
        (tmp_path / "items" / "CURRENT").write_text("v2")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(v == "v2" for _, v in outcomes[-5:]):
            time.sleep(0.2)
        time.sleep(4.0)
    versions = [v for _, v in outcomes]
    assert {status for status, _ in outcomes} == {200}, [o for o in outcomes if o[0] != 200][:3]
    assert versions[0] == "v1" and versions[-1] == "v2"
    assert len(outcomes) > 50


def _replica_pids(app_part: str) -> list[int]:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return [int(line.split()[0]) for line in listing if "ServeReplica:dotcos-" in line and app_part in line]


def _restarted(victim: int, replicas: int) -> bool:
    pids = _replica_pids("-items-v1-0")
    return len(pids) == replicas and victim not in pids


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_killed_replica_never_gives_a_wrong_answer(corpus: Corpus, tmp_path: Path, serve, replicas: int) -> None:
    assert build(tmp_path, corpus, "items", "--metrics", "dot", "--shards", "2", "--version", "v1") == 0
    expected = _expected(tmp_path, corpus)
    server = serve(tmp_path, DOTCOS_RAY_ADDRESS="local", DOTCOS_RAY_REPLICAS=str(replicas), **RAY_ENV)
    with hammering(server.url, corpus, expected) as outcomes:
        victims = _replica_pids("-items-v1-0")
        assert len(victims) == replicas
        os.kill(victims[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _restarted(victims[0], replicas):
            time.sleep(0.5)
        time.sleep(2.0)
    statuses = [status for status, _ in outcomes]
    assert -1 not in statuses
    assert set(statuses) <= {200, 503}
    assert statuses[-20:] == [200] * 20
    assert len(_replica_pids("-items-v1-0")) == replicas
    unavailable = [message for status, message in outcomes if status == 503]
    assert all("unavailable" in message for message in unavailable)
    print(f"killed 1 of {replicas} replicas: {len(statuses)} requests, {len(unavailable)} answered 503, none wrong")


def _refused(client: httpx.Client) -> bool:
    return any(
        line.startswith('dotcos_reloads_total{collection="items",outcome="refused"}')
        for line in client.get("/metrics").text.splitlines()
    )


def test_a_version_with_a_corrupt_shard_is_refused_on_ray(corpus: Corpus, tmp_path: Path, serve) -> None:
    assert build(tmp_path, corpus, "items", "--metrics", "dot", "--shards", "2", "--version", "v1") == 0
    expected = _expected(tmp_path, corpus)
    assert build(tmp_path, corpus, "items", "--metrics", "dot", "--shards", "2", "--version", "v2") == 0
    broken = tmp_path / "items" / "versions" / "v2" / "dot.s001.faiss"
    broken.chmod(0o644)
    data = bytearray(broken.read_bytes())
    data[40:80] = b"\xff" * 40
    broken.write_bytes(bytes(data))
    (tmp_path / "items" / "CURRENT").write_text("v1")
    server = serve(tmp_path, DOTCOS_RAY_ADDRESS="local", **RAY_ENV)
    with server.client() as client, hammering(server.url, corpus, expected) as outcomes:
        (tmp_path / "items" / "CURRENT").write_text("v2")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _refused(client):
            time.sleep(0.5)
        assert _refused(client)
    assert {status for status, _ in outcomes} == {200} and {v for _, v in outcomes} == {"v1"}
    assert "refused items version v2" in server.log() and "dot.s001.faiss" in server.log()


def test_a_collection_ray_cannot_place_is_an_error_a_person_sees(corpus: Corpus, tmp_path: Path, serve) -> None:
    cpus = os.cpu_count() or 1
    assert build(tmp_path, corpus, "fits", "--metrics", "dot", "--version", "v1") == 0
    assert build(tmp_path, corpus, "toobig", "--metrics", "dot", "--shards", "2", "--version", "v1") == 0
    server = serve(
        tmp_path,
        wait_for="/healthz",
        DOTCOS_RAY_ADDRESS="local",
        DOTCOS_RAY_REPLICA_CPUS=str(cpus / 2),
        DOTCOS_RAY_REPLICAS="1",
        DOTCOS_RAY_DEPLOY_TIMEOUT_S="20",
    )
    with server.client() as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "toobig" not in client.get("/readyz").text:
            time.sleep(0.25)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "toobig" in ready.json()["error"]["message"]
        blocked = client.post("/v1/collections/toobig/search", json={"vector": corpus.queries[0].tolist()})
        assert blocked.status_code == 503
        assert "collection 'toobig' is not served yet" in blocked.json()["error"]["message"]
        assert "CPUs" in blocked.json()["error"]["message"]
        assert (
            client.post("/v1/collections/fits/search", json={"vector": corpus.queries[0].tolist()}).status_code == 200
        )
    log = server.wait_log("toobig/v1 waits for", timeout=60)
    assert f"waits for {cpus:g} CPUs on Ray (2 shards x DOTCOS_RAY_REPLICAS=1" in log


def test_ray_serves_aliases_and_pins_like_one_process(corpus: Corpus, tmp_path: Path, serve) -> None:
    """Rollouts on Ray Serve: the aliased version's parts are deployed beside the current one's, and
    pins, splits and the route answer exactly as in one process."""
    root = tmp_path / "root"
    assert build(root, corpus, "items", "--version", "old", "--model", "m1") == 0
    assert build(root, corpus, "items", "--version", "new", "--model", "m2", "--shards", "2") == 0
    for argv in (
        ["activate", "--version", "old"],
        ["alias", "--set", "candidate=new"],
        ["route", "--split", "current=1,candidate=1"],
    ):
        done = subprocess.run(
            [str(BIN / "dotcos-build"), argv[0], "--name", "items", "--root", str(root), *argv[1:]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    plain = serve(root)
    on_ray = serve(root, DOTCOS_RAY_ADDRESS="local", DOTCOS_RELOAD_INTERVAL="0", **RAY_ENV)
    body = {"vector": corpus.queries[0].tolist(), "k": 5}
    with plain.client() as a, on_ray.client() as b:
        assert set(b.get("/v1/collections/items").json()["served"]) == {"current", "candidate"}
        for extra in ({}, {"model": "m2"}, {"version": "candidate"}, {"route_key": "user-7"}, {"model": "m3"}):
            assert _post(a, "/v1/collections/items/search", {**body, **extra}) == _post(
                b, "/v1/collections/items/search", {**body, **extra}
            ), extra
        routes = [b.post("/v1/collections/items/route", json={"route_key": f"u{i}"}).json()["arm"] for i in range(40)]
        assert set(routes) == {"current", "candidate"}


def _write(client: httpx.Client, step: int, rng: np.random.Generator, corpus: Corpus) -> dict:
    """One change (an upsert of new and stored ids, a delete, an attribute change, in turn) as the
    admin routes take it."""
    if step % 3 == 1:
        return _post(client, "/v1/collections/items/delete", {"ids": [corpus.ids[step * 7], "never-held"]})[1]
    if step % 3 == 2:
        body = {"ids": [corpus.ids[step * 13], "new-0"], "set": {"brand": "changed"}}
        return _post(client, "/v1/collections/items/attributes", body)[1]
    vectors = rng.standard_normal((2, corpus.docs.shape[1])).astype(np.float32)
    body = {"ids": [f"new-{step}", corpus.ids[step * 11 + 1]], "vectors": vectors.tolist()}
    return _post(client, "/v1/collections/items/upsert", body)[1]


def _reads(corpus: Corpus) -> list[tuple[str, dict]]:
    q = corpus.queries
    ids = [*corpus.ids[:12], "new-0", "new-3", corpus.ids[7]]
    return [
        *[("search", {"vector": q[i].tolist(), "k": 10, "metric": m}) for i in range(4) for m in ("dot", "cosine")],
        ("search/batch", {"vectors": q[4:9].tolist(), "k": 20, "metric": "dot", "exclude": ["new-6"]}),
        ("search", {"vector": q[9].tolist(), "k": 5, "include": ["new-0", "new-3", *corpus.ids[:40]]}),
        ("similar", {"id": "new-3", "k": 5, "metric": "cosine"}),
        ("score", {"vector": q[0].tolist(), "ids": ["new-0", corpus.ids[12]]}),
        ("get", {"ids": ids, "with_vectors": True, "with_attributes": True}),
        ("count", {}),
        ("count", {"filter": CHANGED}),
        ("scroll", {"limit": 400, "with_attributes": True}),
        ("search", {"vector": q[1].tolist(), "k": 10, "filter": CHANGED, "with_attributes": True}),
        ("search", {"vector": q[2].tolist(), "k": 10, "filter": {"must_not": [CHANGED]}}),
    ]


CHANGED = {"must": [{"key": "brand", "match": "changed"}]}


def test_writes_on_ray_are_served_exactly_like_one_process(corpus: Corpus, tmp_path: Path, serve) -> None:
    """Deletes, upserts and attribute changes through a Ray front: journaled on the root, the stored rows hidden in
    every replica of every part, the upserted documents searched once, at the front; every read
    answers as one process given the same writes does."""
    plain_root, ray_root = tmp_path / "plain", tmp_path / "ray"
    brands = tmp_path / "brands.jsonl"
    brands.write_text("".join(json.dumps({"id": i, "brand": f"b{n % 5}"}) + "\n" for n, i in enumerate(corpus.ids)))
    flags = ("--metrics", "dot,cosine", "--shards", "2", "--attributes-file", str(brands))
    assert build(plain_root, corpus, "items", *flags) == 0
    shutil.copytree(plain_root, ray_root)
    admin = {"DOTCOS_ADMIN_TOKEN": TOKEN}
    plain = serve(plain_root, **admin)
    on_ray = serve(ray_root, DOTCOS_RAY_ADDRESS="local", DOTCOS_RAY_REPLICAS="2", **admin, **RAY_ENV)
    with plain.client() as a, on_ray.client() as b:
        a.headers.update(AUTH)
        b.headers.update(AUTH)
        for step in range(9):
            written = _write(b, step, np.random.default_rng(step), corpus)
            assert written == _write(a, step, np.random.default_rng(step), corpus), step
            for path, body in _reads(corpus):
                assert _post(a, f"/v1/collections/items/{path}", body) == _post(
                    b, f"/v1/collections/items/{path}", body
                ), (step, path)
        info = b.get("/v1/collections/items").json()
        assert [len(part["replicas"]) for part in info["parts"]] == [2, 2]
        assert {r["state"] for part in info["parts"] for r in part["replicas"]} == {"RUNNING"}
        assert len({r["node"] for part in info["parts"] for r in part["replicas"]}) == 1
        assert a.get("/v1/collections/items").json()["parts"] is None
        assert b.get("/readyz").status_code == 200
        changes = info["changes"]
        assert (changes["pending_upserts"], changes["pending_deletes"], changes["pending_attribute_changes"]) == (
            6,
            3,
            3,
        )
        assert info["count"] == len(corpus.ids) + 3 - 3
