"""Rolling out a new embedding model: several versions served at once, requests pinned by version
or model (never answered by the wrong tower), split by a stable hash of a route key, and shadowed;
checked against numpy on two versions built from differently rotated embeddings of the same items."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from index_builder.artifact.layout import list_versions, read_current
from index_builder.artifact.serving import Route
from index_builder.cli import main as build_main
from tests.builder.helpers import active_manifest
from tests.conftest import in_process, stop_server

TOKEN = "rollout-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
N, DIM = 800, 12


def cli(root: Path, *argv: str) -> int:
    return build_main([argv[0], "--name", "c", "--root", str(root), *argv[1:]])


@pytest.fixture(scope="module")
def towers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """Version `old` (tower@1) of documents X, version `new` (tower@2) of X rotated; `new` is the
    alias candidate, `old` stays current."""
    tmp = tmp_path_factory.mktemp("towers")
    rng = np.random.default_rng(8)
    docs = (rng.standard_normal((N, DIM)) * rng.lognormal(0, 0.5, (N, 1))).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    rotated = (docs @ rotation).astype(np.float32)
    (tmp / "ids.txt").write_text("".join(f"item-{i}\n" for i in range(N)))
    root = tmp / "root"
    for name, vectors, model in (("old", docs, "tower@1"), ("new", rotated, "tower@2")):
        np.save(tmp / f"{name}.npy", vectors)
        argv = ["--input", str(tmp / f"{name}.npy"), "--ids", str(tmp / "ids.txt"), "--version", name]
        assert cli(root, "build", *argv, "--model", model, "--index", "flat", "--quiet") == 0
    assert cli(root, "activate", "--version", "old") == 0
    assert cli(root, "alias", "--set", "candidate=new") == 0
    queries = rng.standard_normal((5, DIM)).astype(np.float32)
    return root, {"old": docs, "new": rotated, "rotation": rotation.astype(np.float32), "queries": queries}


def top(docs: np.ndarray, query: np.ndarray, k: int) -> list[str]:
    scores = docs @ query
    return [f"item-{i}" for i in sorted(range(len(docs)), key=lambda j: (-scores[j], j))[:k]]


def search(client: httpx.Client, vector: np.ndarray, **fields: object) -> httpx.Response:
    return client.post("/v1/collections/c/search", json={"vector": vector.tolist(), "k": 8, **fields})


def test_pinning_by_version_or_model_answers_from_that_tower(towers) -> None:
    root, data = towers
    old, new, rotation = data["old"], data["new"], data["rotation"]
    with in_process(root) as client:
        for query in data["queries"]:
            user_old, user_new = query, (query @ rotation).astype(np.float32)
            default = search(client, user_old).json()
            assert (default["version"], default["model"], default["arm"]) == ("old", "tower@1", "current")
            assert [h["id"] for h in default["results"]] == top(old, user_old, 8)
            for pin in ({"model": "tower@2"}, {"version": "candidate"}, {"version": "new"}):
                answer = search(client, user_new, **pin).json()
                assert (answer["version"], answer["model"], answer["arm"]) == ("new", "tower@2", "candidate")
                assert [h["id"] for h in answer["results"]] == top(new, user_new, 8) == top(old, user_old, 8)
            mismatched = search(client, user_old, model="tower@2").json()
            assert [h["id"] for h in mismatched["results"]] == top(new, user_old, 8) != top(old, user_old, 8)
        unknown = search(client, data["queries"][0], model="tower@3")
        assert unknown.status_code == 409 and "served models: tower@1, tower@2" in unknown.json()["error"]["message"]
        clash = search(client, data["queries"][0], version="candidate", model="tower@1")
        assert clash.status_code == 409
        assert search(client, data["queries"][0], version="nope").status_code == 404
        for route, body in (
            ("similar", {"id": "item-1", "k": 3, "model": "tower@2"}),
            ("recommend", {"positive": ["item-1"], "k": 3, "version": "candidate"}),
            ("score", {"vector": new[2].tolist(), "ids": ["item-2"], "model": "tower@2"}),
            ("search/batch", {"vectors": [new[3].tolist()], "k": 2, "version": "candidate"}),
        ):
            answer = client.post(f"/v1/collections/c/{route}", json=body).json()
            assert answer["version"] == "new" and answer["model"] == "tower@2", answer
        score = client.post(
            "/v1/collections/c/score", json={"vector": new[2].tolist(), "ids": ["item-2"], "model": "tower@2"}
        )
        assert score.json()["results"][0]["score"] == pytest.approx(float(new[2] @ new[2]), rel=1e-5)
        binary = client.post(
            "/v1/collections/c/search",
            content=(data["queries"][0] @ rotation).astype("<f4").tobytes(),
            headers={"Content-Type": "application/octet-stream"},
            params={"model": "tower@2", "k": 3},
        ).json()
        assert binary["version"] == "new" and binary["arm"] == "candidate"
        info = client.get("/v1/collections/c").json()
        assert info["model"] == "tower@1" and set(info["served"]) == {"current", "candidate"}
        assert (
            info["served"]["candidate"]["memory"]["total_bytes"]
            > info["served"]["candidate"]["memory"]["vectors_bytes"]
        )


def test_a_write_applies_to_every_served_version(towers) -> None:
    root, data = towers
    with in_process(root, DOTCOS_ADMIN_TOKEN=TOKEN) as client:
        vector = np.full(DIM, 9.0, np.float32)
        assert (
            client.post(
                "/v1/collections/c/upsert", json={"ids": ["fresh"], "vectors": [vector.tolist()]}, headers=AUTH
            ).status_code
            == 200
        )
        for pin in ({}, {"version": "candidate"}):
            deadline = time.monotonic() + 10
            while search(client, vector, k=1, params={"exact": True}, **pin).json()["results"][0]["id"] != "fresh":
                assert time.monotonic() < deadline, f"the upsert never reached {pin or 'current'}"
                time.sleep(0.05)
        assert client.post("/v1/collections/c/delete", json={"ids": ["fresh"]}, headers=AUTH).status_code == 200


def test_the_split_is_a_stable_hash_of_the_route_key(towers, serve) -> None:
    root, _ = towers
    assert cli(root, "route", "--split", "current=90,candidate=10") == 0
    try:
        keys = [f"user-{i}" for i in range(10_000)]
        route = Route(split={"current": 90, "candidate": 10})
        arms = [route.arm("c", key) for key in keys]
        assert 0.085 < arms.count("candidate") / len(keys) < 0.115
        server = serve(root, DOTCOS_WORKERS="2")
        sample = keys[:150]
        first = [
            httpx.post(
                f"{server.url}/v1/collections/c/route", json={"route_key": k}, headers={"Connection": "close"}
            ).json()
            for k in sample
        ]
        assert [a["arm"] for a in first] == arms[:150]
        assert all(a["version"] == ("new" if a["arm"] == "candidate" else "old") for a in first)
        stop_server(server)
        again = serve(root, DOTCOS_WORKERS="2")
        second = [
            httpx.post(
                f"{again.url}/v1/collections/c/route", json={"route_key": k}, headers={"Connection": "close"}
            ).json()["arm"]
            for k in sample
        ]
        assert second == arms[:150]
        routed = httpx.post(
            f"{again.url}/v1/collections/c/search", json={"vector": [0.1] * DIM, "route_key": sample[0]}
        ).json()
        assert routed["arm"] == arms[0]
        pinned = httpx.post(
            f"{again.url}/v1/collections/c/search",
            json={"vector": [0.1] * DIM, "route_key": sample[0], "version": "old"},
        ).json()
        assert pinned["arm"] == "current" and pinned["version"] == "old"
    finally:
        assert cli(root, "route", "--clear") == 0


def test_changing_one_arms_weight_moves_keys_only_to_or_from_that_arm() -> None:
    keys = [f"k{i}" for i in range(5000)]
    before = Route(split={"a": 50, "b": 30, "c": 20})
    after = Route(split={"a": 50, "b": 30, "c": 60})
    moved = [(before.arm("x", k), after.arm("x", k)) for k in keys]
    assert all(old == new or new == "c" for old, new in moved)
    grown = Route(split={"a": 50, "b": 30, "c": 20, "d": 10})
    assert all(before.arm("x", k) == grown.arm("x", k) or grown.arm("x", k) == "d" for k in keys)
    assert {Route(split={"a": 1, "z": 0}).arm("x", k) for k in keys} == {"a"}


def test_the_shadow_overlap_equals_the_served_answers_overlap(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    np.save(tmp_path / "docs.npy", rng.standard_normal((3000, 16)).astype(np.float32))
    root = tmp_path / "root"
    argv = ["--input", str(tmp_path / "docs.npy"), "--model", "tower@1", "--quiet"]
    assert cli(root, "build", *argv, "--index", "flat", "--version", "flat") == 0
    assert (
        cli(root, "build", *argv, "--index", "hnsw", "--hnsw-m", "4", "--ef-construction", "8", "--version", "graph")
        == 0
    )
    assert cli(root, "activate", "--version", "flat") == 0
    assert cli(root, "alias", "--set", "candidate=graph") == 0
    assert cli(root, "route", "--shadow", "candidate", "--sample", "1") == 0
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    with in_process(root, DOTCOS_LIVE_RECALL_SAMPLE="0") as client:
        overlaps = []
        for query in queries:
            live = {h["id"] for h in search(client, query, k=10, version="current").json()["results"]}
            shadow = {h["id"] for h in search(client, query, k=10, version="candidate").json()["results"]}
            overlaps.append(len(live & shadow) / len(live))
        deadline = time.monotonic() + 30
        while (figure := client.get("/v1/collections/c").json()["shadow"]["metrics"].get("dot", {})).get(
            "samples", 0
        ) < 40:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert figure["samples"] == 40 and figure["shadow_version"] == "graph"
        assert figure["overlap_at_k"] == pytest.approx(np.mean(overlaps), abs=1e-4)
        assert 0.2 < np.mean(overlaps) < 1.0
        metrics = client.get("/metrics").text
        assert 'dotcos_shadow_overlap{collection="c",metric="dot"}' in metrics


def test_a_shadow_across_models_is_refused(towers, capsys) -> None:
    root, _ = towers
    assert cli(root, "route", "--shadow", "candidate") == 2
    assert "a shadow runs the same query vector" in capsys.readouterr().err


def test_hot_swap_of_current_while_an_alias_is_served_fails_no_request(towers, tmp_path: Path, serve) -> None:
    root, data = towers
    server = serve(root, DOTCOS_RELOAD_INTERVAL="0.1")
    failures: list[str] = []
    seen: set[tuple[str, str]] = set()
    stop = threading.Event()

    def hammer(pin: dict[str, str]) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                reply = search(client, data["queries"][0], **pin)
                if reply.status_code != 200:
                    failures.append(reply.text)
                else:
                    seen.add((reply.json()["arm"], reply.json()["version"]))

    threads = [threading.Thread(target=hammer, args=(pin,)) for pin in ({}, {"version": "candidate"}, {})]
    for thread in threads:
        thread.start()
    try:
        np.save(tmp_path / "third.npy", data["old"] * 2)
        ids = str(root.parent / "ids.txt")
        argv = ["--input", str(tmp_path / "third.npy"), "--ids", ids, "--model", "tower@1", "--version", "third"]
        assert cli(root, "build", *argv, "--index", "flat", "--quiet") == 0
        deadline = time.monotonic() + 30
        while ("current", "third") not in seen:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        assert cli(root, "activate", "--version", "old") == 0
    assert failures == []
    assert {("current", "old"), ("current", "third"), ("candidate", "new")} <= seen
    assert ("candidate", "third") not in seen


def test_gc_keeps_aliased_versions_and_too_many_aliases_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "docs.npy", rng.standard_normal((200, 4)).astype(np.float32))
    root = tmp_path / "root"
    for name in ("v1", "v2", "v3", "v4"):
        assert cli(root, "build", "--input", str(tmp_path / "docs.npy"), "--version", name, "--quiet") == 0
    assert cli(root, "alias", "--set", "first=v1") == 0
    assert cli(root, "alias", "--set", "second=v2") == 0
    assert cli(root, "gc", "--keep", "1") == 0
    assert list_versions(root, "c") == ["v1", "v2", "v4"]
    with in_process(root, DOTCOS_MAX_SERVED_VERSIONS="2") as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and "DOTCOS_MAX_SERVED_VERSIONS=2" in ready["refused"]["c"]["second"]
        assert search(client, np.ones(4, np.float32), version="first").json()["version"] == "v1"
        assert search(client, np.ones(4, np.float32), version="second").status_code == 404


def test_from_current_keeps_the_model_and_a_filter_names_the_version_lacking_its_attribute(towers) -> None:
    root, data = towers
    assert cli(root, "build", "--from-current", "--version", "kept", "--quiet") == 0
    assert active_manifest(root, "c")[1].model == "tower@1"
    assert cli(root, "activate", "--version", "old") == 0
    with in_process(root) as client:
        reply = search(
            client, data["queries"][0], version="candidate", filter={"must": [{"key": "brand", "match": "x"}]}
        )
        assert reply.status_code == 400 and "(version new)" in reply.json()["error"]["message"]
    assert read_current(root, "c") == "old"
