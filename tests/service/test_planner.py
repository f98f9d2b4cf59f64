"""The filter planner: at every selectivity band, on flat, HNSW, IVF and sharded versions with a
pending delta of upserts and deletes, a numeric range filter keeps recall@10 >= 0.95 against numpy
over what passes and returns exactly min(k, passing) documents; the filter index answers in true
units when the planner takes it; the collection info says per band what the planner uses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import faiss
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index_builder.artifact.manifest import FilterRoute
from index_builder.cli import main as build_main
from index_builder.retrieval.ann import FILTER_BANDS, ServedIndex
from index_builder.retrieval.rowsets import Rows
from index_builder.retrieval.scoring import Prepared, doc_scales, scan_costs_less
from index_builder.retrieval.spaces import Layout, Metric, fit_metric_space, row_norms
from service.core import planner
from service.core.config import Limits
from service.core.query import Query, SearchOptions
from tests.conftest import in_process, make_corpus
from tests.service.oracle import true_scores

N = 6000
K = 10
QUERIES = 12
SHARES = (*FILTER_BANDS, 0.001)
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NAMES = ("flat", "hnsw", "ivf", "hnsw-sharded")


class Store:
    """The collection as numpy sees it: every stored id's vector and rank, after the changes."""

    def __init__(self, ids: list[str], docs: np.ndarray, ranks: np.ndarray) -> None:
        self.docs = {doc_id: (docs[i], int(ranks[i])) for i, doc_id in enumerate(ids)}

    def top(self, metric: str, query: np.ndarray, below: int) -> tuple[list[str], int]:
        """Exact top-k ids among documents of rank < `below` (cosine leaves zero vectors out), and
        how many it could rank."""
        ids = [doc_id for doc_id, (_, rank) in self.docs.items() if rank < below]
        if not ids:
            return [], 0
        scores = true_scores(metric, query, np.stack([self.docs[i][0] for i in ids]))
        rankable = np.isfinite(scores)
        order = np.argsort(-np.where(rankable, scores, -np.inf), kind="stable")[: min(K, int(rankable.sum()))]
        return [ids[r] for r in order], int(rankable.sum())


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Any, Store]]:
    tmp = tmp_path_factory.mktemp("planner")
    corpus = make_corpus(tmp / "data", n=N)
    ranks = np.random.default_rng(11).permutation(N)
    table = pa.table(
        {
            "id": pa.array(corpus.ids),
            "vector": pa.array(corpus.docs.tolist(), type=pa.list_(pa.float32())),
            "rank": pa.array(ranks, type=pa.int64()),
        }
    )
    pq.write_table(table, tmp / "docs.parquet")
    root = tmp / "root"
    common = ["--root", str(root), "--metrics", "dot,cosine", "--quiet", "--queries", str(corpus.queries_path)]
    common += ["--input", str(tmp / "docs.parquet"), "--attributes", "rank"]
    for name, extra in (
        ("flat", []),
        ("hnsw", ["--index", "hnsw", "--filter-index", "always"]),
        ("ivf", ["--index", "ivf", "--nlist", "32"]),
        ("hnsw-sharded", ["--index", "hnsw", "--shards", "2", "--filter-index", "always"]),
    ):
        assert build_main(["build", "--name", name, *common, *extra]) == 0
    store = Store(corpus.ids, corpus.docs, ranks)
    with in_process(root, DOTCOS_ADMIN_TOKEN=TOKEN, DOTCOS_LIVE_RECALL_SAMPLE="0") as client:
        _pend(client, store, np.random.default_rng(5))
        yield client, corpus, store


def _pend(client: httpx.Client, store: Store, rng: np.random.Generator) -> None:
    """The same pending delta on every collection: 300 upserts (half replacing stored documents,
    with new vectors and ranks) and 150 deletes."""
    stored = list(store.docs)
    replaced = [stored[i] for i in rng.choice(len(stored), 150, replace=False)]
    ids = replaced + [f"new-{i}" for i in range(150)]
    vectors = (rng.standard_normal((len(ids), 24)) * 1.5).astype(np.float32)
    ranks = rng.integers(0, N, len(ids))
    doomed = [stored[i] for i in rng.choice(len(stored), 150, replace=False) if stored[i] not in replaced]
    for name in NAMES:
        body = {"ids": ids, "vectors": vectors.tolist(), "attributes": [{"rank": int(r)} for r in ranks]}
        assert client.post(f"/v1/collections/{name}/upsert", json=body, headers=AUTH).status_code == 200
        assert client.post(f"/v1/collections/{name}/delete", json={"ids": doomed}, headers=AUTH).status_code == 200
    store.docs.update({doc_id: (vectors[i], int(ranks[i])) for i, doc_id in enumerate(ids)})
    for doc_id in doomed:
        del store.docs[doc_id]


def _recall(client: httpx.Client, corpus: Any, store: Store, name: str, metric: str, share: float) -> float:
    """recall@10 over the queries for `rank < share * N`, checking each answer's length, that every
    hit passes, and that its score is the true one."""
    below = max(1, round(share * N))
    found = total = 0
    for q in range(QUERIES):
        query = corpus.queries[q]
        body = {"vector": query.tolist(), "k": K, "metric": metric, "filter": {"must": [rank_below(below)]}}
        reply = client.post(f"/v1/collections/{name}/search", json=body)
        assert reply.status_code == 200, reply.text
        hits = reply.json()["results"]
        want, rankable = store.top(metric, query, below)
        assert len(hits) == min(K, rankable), (name, metric, share, q)
        assert all(store.docs[h["id"]][1] < below for h in hits)
        got = [h["score"] for h in hits]
        scores = true_scores(metric, query, np.stack([store.docs[h["id"]][0] for h in hits])) if hits else []
        np.testing.assert_allclose(got, scores, rtol=1e-4, atol=1e-4)
        found += len(set(want) & {h["id"] for h in hits})
        total += len(want)
    return found / max(total, 1)


def rank_below(below: int) -> dict[str, Any]:
    return {"key": "rank", "range": {"lt": below}}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("share", SHARES)
def test_every_band_keeps_recall_and_returns_min_k_passing(setup, name: str, metric: str, share: float) -> None:
    client, corpus, store = setup
    assert _recall(client, corpus, store, name, metric, share) >= 0.95


@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("share", (0.2, 0.02))
def test_the_filter_index_answers_in_true_units_when_taken(
    setup, monkeypatch: pytest.MonkeyPatch, metric: str, share: float
) -> None:
    client, corpus, store = setup
    taken: list[str] = []

    def filter_index(served: Any, lists: Any, query: Any, allowed: Any, eligible: int) -> planner.Way:
        taken.append("filter_index" if lists is not None else "exact")
        return planner.Way("filter_index", 4096) if lists is not None else planner.EXACT

    monkeypatch.setattr(planner, "choose", filter_index)
    assert _recall(client, corpus, store, "hnsw", metric, share) >= 0.95
    assert "filter_index" in taken


def test_the_info_says_per_band_what_the_planner_uses(setup) -> None:
    client, _, _ = setup
    for name, structures in (("hnsw", {"index", "filter_index", "exact"}), ("ivf", {"index", "exact"})):
        metrics = client.get(f"/v1/collections/{name}").json()["metrics"]
        for metric in ("dot", "cosine"):
            plan = metrics[metric]["filter_plan"]
            assert set(plan) == {str(band) for band in FILTER_BANDS}
            for band in plan.values():
                assert band["uses"] in structures and band["exact_micros"] > 0
                assert band["micros"] > 0 and all(way["recall_at_10"] >= 0.95 for way in band["ways"])
        assert (metrics["dot"]["filter_index"] is not None) == (name == "hnsw")


def _served(index: faiss.Index, docs: np.ndarray) -> ServedIndex:
    space = fit_metric_space(Metric.parse("dot"), row_norms(docs), None)
    return ServedIndex.of([index], space, Layout.IP, 1, docs, doc_scales(space, docs, len(docs)))


@pytest.mark.parametrize("scan_micros, uses", [(500.0, "filter_index"), (50.0, "exact")])
def test_measured_costs_outrank_the_distance_model(scan_micros: float, uses: str) -> None:
    """At 5 % of 2,000 rows the distance model prices a scan of 100 gathered rows below 16 probed
    lists of 125; the build's timings decide which is cheaper, as they do at 1M rows."""
    docs = np.random.default_rng(8).standard_normal((2000, 8)).astype(np.float32)
    graph = faiss.IndexIDMap(faiss.IndexHNSWFlat(8, 8, faiss.METRIC_INNER_PRODUCT))
    lists = faiss.IndexIDMap(faiss.IndexIVFFlat(faiss.IndexFlatIP(8), 8, 16, faiss.METRIC_INNER_PRODUCT))
    lists.train(docs)
    for index in (graph, lists):
        index.add_with_ids(docs, np.arange(len(docs)))
    served, filters = _served(graph, docs), _served(lists, docs)
    route = FilterRoute(structure="filter_index", nprobe=16, recall_at_10=1.0, micros=100.0)
    limits = Limits(1000, 64, 10000, None, 4096, 64, 8, 10000)
    query = Query(
        "dot",
        Prepared.of(served.space, docs[:1]),
        SearchOptions(k=10),
        {"efSearch": 32},
        limits,
        plan={"0.05": [route]},
        exact_micros={"0.05": scan_micros, "0.5": 20 * scan_micros},
    )
    allowed = Rows(np.arange(0, 2000, 20, dtype=np.int64))
    assert scan_costs_less(100, 2000, filters.search_cost(16))
    assert planner.choose(served, filters, query, allowed, 100).structure == uses
