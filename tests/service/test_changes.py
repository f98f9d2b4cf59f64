"""Changes between rebuilds against a numpy oracle of "previous version plus journal": deletes and
upserts through the admin routes, searches and /similar and /score on the overlay, a rebuild
with --from-current equal to a fresh build of the same final data, and bad input refused whole."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from index_builder.artifact.journal import DELETE, Change, Journal
from index_builder.artifact.layout import read_current
from index_builder.cli import main as build_main
from tests.builder.helpers import active_manifest
from tests.conftest import BIN, Corpus, build, in_process, make_corpus
from tests.service.oracle import true_scores

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Oracle:
    """The collection's documents as they stand: stored ones untouched in row order, then the
    upserted ones in the order first upserted since their last delete (the fold's order)."""

    def __init__(self, ids: list[str], docs: np.ndarray) -> None:
        self.stored = dict(zip(ids, docs, strict=True))
        self.changed: dict[str, np.ndarray] = {}

    def delete(self, ids: list[str]) -> None:
        for i in ids:
            self.stored.pop(i, None)
            self.changed.pop(i, None)

    def upsert(self, ids: list[str], vectors: np.ndarray) -> None:
        for i, v in zip(ids, vectors, strict=True):
            self.stored.pop(i, None)
            self.changed[i] = v

    def items(self) -> tuple[list[str], np.ndarray]:
        ids = [*self.stored, *self.changed]
        return ids, np.stack([*self.stored.values(), *self.changed.values()]).astype(np.float32)

    def top(self, metric: str, query: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
        ids, docs = self.items()
        scores = true_scores(metric, query, docs)
        order = np.argsort(-scores, kind="stable")[:k]
        order = order[np.isfinite(scores[order])]
        return [ids[i] for i in order], scores


def _check(hits: list[dict], oracle: Oracle, metric: str, query: np.ndarray, exact: bool) -> None:
    ids, docs = oracle.items()
    row = {i: r for r, i in enumerate(ids)}
    expected, scores = oracle.top(metric, query, len(hits) or 10)
    assert all(h["id"] in row for h in hits), "a deleted id came back"
    got = np.array([h["score"] for h in hits])
    np.testing.assert_allclose(got, scores[[row[h["id"]] for h in hits]], rtol=1e-4, atol=1e-4)
    if exact:
        np.testing.assert_allclose(np.sort(got), np.sort(scores[[row[i] for i in expected]]), rtol=1e-4, atol=1e-4)
    else:
        assert len(set(expected) & {h["id"] for h in hits}) >= 0.8 * len(expected)


@pytest.mark.parametrize(("index", "shards"), [("flat", []), ("hnsw", []), ("flat", ["--shards", "3"])])
def test_random_changes_match_the_oracle_and_fold_into_a_rebuild(tmp_path: Path, index: str, shards: list[str]) -> None:
    corpus = make_corpus(tmp_path / "data", n=1500, dim=16, zeros=1)
    root = tmp_path / "root"
    assert build(root, corpus, "items", "--index", index, *shards) == 0
    oracle = Oracle(corpus.ids, corpus.docs)
    rng = np.random.default_rng(3)
    with in_process(root, DOTCOS_ADMIN_TOKEN=TOKEN, DOTCOS_LIVE_RECALL_SAMPLE="0") as client:
        fresh = 0
        for step in range(24):
            if step % 3 == 0:
                known = list(oracle.stored) + list(oracle.changed)
                doomed = [known[i] for i in rng.choice(len(known), 5, replace=False)] + ["never-there"]
                reply = client.post("/v1/collections/items/delete", json={"ids": doomed}, headers=AUTH)
                assert reply.status_code == 200, reply.text
                assert reply.json()["unknown"] == ["never-there"] and reply.json()["count"] == 5
                oracle.delete(doomed)
            else:
                known = list(oracle.stored)
                replaced = [known[i] for i in rng.choice(len(known), 3, replace=False)]
                new = [f"new-{fresh + j}" for j in range(3)]
                fresh += 3
                ids = replaced + new
                vectors = (rng.standard_normal((len(ids), 16)) * 2).astype(np.float32)
                body = {"ids": ids, "vectors": vectors.tolist()}
                reply = client.post("/v1/collections/items/upsert", json=body, headers=AUTH)
                assert reply.status_code == 200, reply.text
                oracle.upsert(ids, vectors)
            last = reply.json()["position"]
            query = corpus.queries[step % len(corpus.queries)]
            for metric in ("dot", "cosine"):
                for exact in (True, False):
                    body = {"vector": query.tolist(), "k": 10, "metric": metric, "params": {"exact": exact}}
                    hits = client.post("/v1/collections/items/search", json=body).json()["results"]
                    assert len(hits) == 10
                    _check(hits, oracle, metric, query, exact or index == "flat")
        upserted = next(iter(oracle.changed))
        similar = client.post("/v1/collections/items/similar", json={"id": upserted, "k": 5, "metric": "cosine"})
        assert similar.status_code == 200 and upserted not in [h["id"] for h in similar.json()["results"]]
        best = client.post(
            "/v1/collections/items/search",
            json={"vector": oracle.changed[upserted].tolist(), "k": 1, "metric": "cosine", "params": {"exact": True}},
        ).json()["results"][0]
        assert best["id"] == upserted and best["score"] == pytest.approx(1.0, abs=1e-5)
        gone = next(i for i in corpus.ids if i not in oracle.stored and i not in oracle.changed)
        assert client.post("/v1/collections/items/similar", json={"id": gone}).status_code == 404
        scored = client.post(
            "/v1/collections/items/score",
            json={"vector": corpus.queries[0].tolist(), "ids": [upserted], "metric": "dot"},
        ).json()["results"]
        assert scored[0]["score"] == pytest.approx(float(oracle.changed[upserted] @ corpus.queries[0]), rel=1e-4)
        assert (
            client.post(
                "/v1/collections/items/score", json={"vector": corpus.queries[0].tolist(), "ids": [gone]}
            ).status_code
            == 404
        )
        info = client.get("/v1/collections/items").json()["changes"]
        assert info["journal_position"] == last and info["built_position"] == 0
        assert info["pending_upserts"] == len(oracle.changed) and info["memory_bytes"] > 0

        fold = ["build", "--from-current", "--name", "items", "--root", str(root), "--quiet", *shards]
        assert build_main(fold) == 0
        client.post("/v1/admin/reload", headers=AUTH)
        info = client.get("/v1/collections/items").json()
        assert info["changes"]["built_position"] == last and info["changes"]["pending_upserts"] == 0
        assert info["changes"]["at_build"]["folded"]["count"] == 24
        assert info["count"] == len(oracle.items()[0])
        folded = [
            client.post("/v1/collections/items/search", json={"vector": q.tolist(), "k": 10, "metric": m}).json()[
                "results"
            ]
            for q in corpus.queries[:8]
            for m in ("dot", "cosine")
        ]

    ids, docs = oracle.items()
    final = make_final(tmp_path / "final", ids, docs, corpus)
    other = tmp_path / "other"
    assert build(other, final, "items", "--index", index, *shards) == 0
    with in_process(other) as client:
        fresh_answers = [
            client.post("/v1/collections/items/search", json={"vector": q.tolist(), "k": 10, "metric": m}).json()[
                "results"
            ]
            for q in corpus.queries[:8]
            for m in ("dot", "cosine")
        ]
    assert folded == fresh_answers


def make_final(path: Path, ids: list[str], docs: np.ndarray, corpus: Corpus) -> Corpus:
    path.mkdir()
    np.save(path / "docs.npy", docs)
    (path / "ids.txt").write_text("\n".join(ids) + "\n")
    return Corpus(docs, corpus.queries, ids, path / "docs.npy", corpus.queries_path, path / "ids.txt")


def test_bad_changes_are_refused_whole(tmp_path: Path, corpus: Corpus) -> None:
    root = tmp_path / "root"
    assert build(root, corpus, "items", "--metrics", "cosine") == 0
    with in_process(root, DOTCOS_ADMIN_TOKEN=TOKEN, DOTCOS_OVERLAY_MAX_ENTRIES="4") as client:

        def upsert(body: dict, headers: dict | None = None) -> tuple[int, str]:
            reply = client.post("/v1/collections/items/upsert", json=body, headers=AUTH if headers is None else headers)
            return reply.status_code, reply.text

        v = [0.5] * 24
        before = client.get("/v1/collections/items").json()["changes"]["journal_position"]
        assert upsert({"ids": ["a"], "vectors": [v]}, headers={})[0] == 401
        assert upsert({"ids": ["a"], "vectors": [v]}, headers={"Authorization": "Bearer no"})[0] == 403
        status, text = upsert({"ids": ["a"], "vectors": [[1.0] * 23]})
        assert status == 400 and "vectors: dimension 24 expected" in text
        status, text = upsert({"ids": ["a", "a"], "vectors": [v, v]})
        assert status == 400 and "appears twice" in text
        status, text = upsert({"ids": ["a"], "vectors": [[0.0] * 24]})
        assert status == 400 and "zero-norm" in text
        status, text = upsert({"ids": ["a", "b"], "vectors": [v]})
        assert status == 400 and "2 vectors expected" in text
        status, text = upsert({"ids": ["a"], "vectors": [v], "attributes": [{"brand": "x"}]})
        assert status == 400 and "attributes[0].brand: unknown attribute" in text
        reply = client.post(
            "/v1/collections/items/upsert",
            content=b'{"ids": ["a"], "vectors": [[NaN]]}',
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert reply.status_code in (400, 422)
        assert client.get("/v1/collections/items").json()["changes"]["journal_position"] == before
        assert upsert({"ids": ["a", "b", "c", "d"], "vectors": [v] * 4})[0] == 200
        status, text = upsert({"ids": ["e"], "vectors": [v]})
        assert status == 503 and "--from-current" in text
        assert upsert({"ids": ["a"], "vectors": [v]})[0] == 200
    assert len([c for c in Journal(root, "items").read_new() if c.is_data]) == 2


def test_changes_with_attributes_are_filtered_like_stored_ones(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((400, 8)).astype(np.float32)
    table = pa.table(
        {
            "id": [f"d{i}" for i in range(400)],
            "vector": list(docs),
            "brand": [f"b{i % 4}" for i in range(400)],
            "stock": [i % 7 for i in range(400)],
        }
    )
    pq.write_table(table, tmp_path / "docs.parquet")
    root = tmp_path / "root"
    argv = ["build", "--input", str(tmp_path / "docs.parquet"), "--name", "items", "--root", str(root)]
    assert build_main([*argv, "--attributes", "brand,stock", "--quiet"]) == 0
    query = rng.standard_normal(8).astype(np.float32)
    with in_process(root, DOTCOS_ADMIN_TOKEN=TOKEN) as client:
        body = {"ids": ["n1", "n2"], "vectors": [(query * 3).tolist(), (query * 2).tolist()]}
        body["attributes"] = [{"brand": "new", "stock": 5}, {"brand": "b1"}]
        written = client.post("/v1/collections/items/upsert", json=body, headers=AUTH)
        assert written.status_code == 200
        wrong = {**body, "attributes": [{"stock": "5"}, None]}
        reply = client.post("/v1/collections/items/upsert", json=wrong, headers=AUTH)
        assert reply.status_code == 400 and "attributes[0].stock" in reply.text

        def search(flt: dict) -> list[str]:
            req = {"vector": query.tolist(), "k": 3, "metric": "dot", "filter": flt, "with_attributes": True}
            return [h["id"] for h in client.post("/v1/collections/items/search", json=req).json()["results"]]

        assert search({"must": [{"key": "brand", "match": "new"}]}) == ["n1"]
        top = search({"must": [{"key": "brand", "match": "b1"}]})
        assert top[0] == "n2" and len(top) == 3
        assert "n2" not in search({"must": [{"key": "stock", "is_null": False}]})
        assert search({"must": [{"key": "stock", "range": {"gte": 5}}]})[0] == "n1"
    assert build_main(["build", "--from-current", "--name", "items", "--root", str(root), "--quiet"]) == 0
    _, manifest = active_manifest(root, "items")
    position = written.json()["position"]
    assert manifest.journal_position == position and manifest.count == 402
    assert manifest.attributes["brand"].distinct == 5 and manifest.attributes["stock"].null_count == 1
    assert json.loads(manifest.to_json())["build_params"]["from_current"].endswith(f"+journal:{position}")


@pytest.mark.parametrize("point", ["publish.before_rename", "publish.before_current"])
def test_a_fold_killed_before_publishing_changes_nothing(tmp_path: Path, corpus: Corpus, point: str) -> None:
    root = tmp_path / "root"
    assert build(root, corpus, "items") == 0
    journal = Journal(root, "items")
    with journal.locked():
        deleted = journal.append(Change(0, DELETE, ("doc-00001",))).position
    before = read_current(root, "items")
    argv = [str(BIN / "dotcos-build"), "build", "--from-current", "--name", "items", "--root", str(root), "--quiet"]
    killed = subprocess.run(argv, env={**os.environ, "DOTCOS_CRASH_AT": point}, check=False)
    assert killed.returncode == -9 and read_current(root, "items") == before
    assert [c.position for c in Journal(root, "items").read_new()][-1] == deleted
    assert subprocess.run(argv, check=False).returncode == 0
    _, manifest = active_manifest(root, "items")
    assert manifest.journal_position == deleted and manifest.count == len(corpus.ids) - 1
    assert build_main(["gc", "--name", "items", "--root", str(root), "--keep", "1"]) == 0
    assert not any(p.name.startswith(".staging-") for p in (root / "items").iterdir())


def test_attribute_changes_merge_into_stored_documents_and_are_checked_whole(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    docs = rng.standard_normal((300, 8)).astype(np.float32)
    table = pa.table(
        {
            "id": [f"d{i}" for i in range(300)],
            "vector": list(docs),
            "brand": [f"b{i % 4}" for i in range(300)],
            "stock": [i % 7 for i in range(300)],
            "tags": [["x", f"t{i % 3}"] for i in range(300)],
        }
    )
    pq.write_table(table, tmp_path / "docs.parquet")
    root = tmp_path / "root"
    argv = ["build", "--input", str(tmp_path / "docs.parquet"), "--name", "items", "--root", str(root), "--quiet"]
    assert build_main([*argv, "--attributes", "brand,stock,tags"]) == 0
    query = docs[5] * 3

    with in_process(root, DOTCOS_ADMIN_TOKEN=TOKEN, DOTCOS_OVERLAY_REFRESH_S="0.05") as client:

        def change(body: dict) -> httpx.Response:
            return client.post("/v1/collections/items/attributes", json=body, headers=AUTH)

        def search(flt: dict | None = None, **extra: object) -> list[dict]:
            body = {
                "vector": query.tolist(),
                "k": 5,
                "metric": "cosine",
                "with_attributes": True,
                "filter": flt,
                **extra,
            }
            return client.post("/v1/collections/items/search", json=body).json()["results"]

        before = search()[0]
        assert before["id"] == "d5" and before["attributes"] == {"brand": "b1", "stock": 5, "tags": ["x", "t2"]}
        reply = change({"ids": ["d5", "nobody"], "set": {"brand": "new", "stock": 0}, "unset": ["tags"]})
        assert reply.status_code == 200 and reply.json()["count"] == 1 and reply.json()["unknown"] == ["nobody"]
        after = search()[0]
        assert after == {**before, "attributes": {"brand": "new", "stock": 0, "tags": None}}
        assert search({"must": [{"key": "brand", "match": "new"}]})[0]["id"] == "d5"
        assert "d5" not in [h["id"] for h in search({"must": [{"key": "brand", "match": "b1"}]}, k=300)]
        assert search({"must": [{"key": "tags", "is_null": True}]})[0]["id"] == "d5"
        grouped = search(group_by={"key": "brand", "max_per_group": 1}, k=5)
        assert [h["attributes"]["brand"] for h in grouped].count("new") == 1
        info = client.get("/v1/collections/items").json()
        assert info["count"] == 300 and info["changes"]["pending_attribute_changes"] == 1

        for bad, message in (
            ({"ids": ["d1"], "set": {"colour": "red"}}, "set.colour: unknown attribute"),
            ({"ids": ["d1"], "set": {"stock": "5"}}, "set.stock"),
            ({"ids": ["d1"], "set": {"brand": "a"}, "unset": ["brand"]}, "unset[0]: 'brand' is named twice"),
            ({"ids": ["d1"], "unset": ["colour"]}, "unset[0]: unknown attribute 'colour'"),
            ({"ids": ["d1"]}, "give at least one attribute to set or unset"),
            ({"ids": ["d1", "d1"], "set": {"stock": 1}}, "appears twice"),
        ):
            reply = change(bad)
            assert reply.status_code == 400 and message in reply.json()["error"]["message"], reply.text
        assert search()[0]["attributes"]["brand"] == "new"

        upsert = {"ids": ["d5"], "vectors": [docs[5].tolist()]}
        assert client.post("/v1/collections/items/upsert", json=upsert, headers=AUTH).status_code == 200
        assert search()[0]["attributes"] == {"brand": None, "stock": None, "tags": None}
        assert change({"ids": ["d5", "d6"], "set": {"stock": 3}}).status_code == 200
        assert search()[0]["attributes"] == {"brand": None, "stock": 3, "tags": None}

    assert build_main(["build", "--from-current", "--name", "items", "--root", str(root), "--quiet"]) == 0
    with in_process(root) as client:
        body = {"vector": query.tolist(), "k": 300, "metric": "dot", "with_attributes": True}
        hits = {
            h["id"]: h["attributes"] for h in client.post("/v1/collections/items/search", json=body).json()["results"]
        }
        assert hits["d5"] == {"brand": None, "stock": 3, "tags": None}
        assert hits["d6"] == {"brand": "b2", "stock": 3, "tags": ["x", "t0"]}
        assert client.get("/v1/collections/items").json()["changes"]["pending_attribute_changes"] == 0
