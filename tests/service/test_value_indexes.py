"""Value indexes: a frequent keyword value's documents indexed on their own, built for the values
within VALUE_SHARES, listed in the manifest and the collection info, and searched (at recall, with
min(k, passing) results) by filters that require the value, on one part and on shards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index_builder.artifact.attributes import AttributeType
from index_builder.artifact.layout import read_current, version_dir
from index_builder.artifact.manifest import read_manifest
from index_builder.attributes import Attributes
from index_builder.cli import main as build_main
from index_builder.value_indexes import frequent_values
from service.core import part as part_module
from service.core.filters import HasId, Match, Range, Tree
from service.core.part import load_parts
from tests.conftest import in_process, make_corpus
from tests.service.oracle import top_k, true_scores

N = 3000
BRANDS = ["big"] * 900 + ["mid"] * 300 + ["small"] * 90 + [f"rare-{i % 57}" for i in range(N - 1290)]
"""30 %, 10 % and 3 % of the documents, the rest spread over 57 values of about 1 % each."""


def _tags(row: int) -> list[str]:
    return ["hot", "hot"] if row % 5 == 0 else ["cold"] if row % 25 == 1 else []


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path, np.ndarray, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("values")
    corpus = make_corpus(tmp / "corpus", n=N)
    brands = np.array(BRANDS)[np.random.default_rng(2).permutation(N)]
    table = pa.table(
        {
            "id": corpus.ids,
            "vector": list(corpus.docs),
            "brand": brands.tolist(),
            "tags": [_tags(r) for r in range(N)],
            "price": np.arange(N, dtype=np.float64),
        }
    )
    pq.write_table(table, tmp / "docs.parquet")
    for name, extra in (("one", []), ("sharded", ["--shards", "2"]), ("coded", ["--hnsw-codes", "sq8"])):
        argv = ["build", "--input", str(tmp / "docs.parquet"), "--name", name, "--root", str(tmp / "root")]
        argv += ["--index", "hnsw", "--hnsw-m", "8", "--filter-index", "always", "--attributes", "brand,tags,price"]
        assert build_main([*argv, "--quiet", *extra]) == 0
    yield corpus, tmp / "root", brands, np.array([bool(_tags(r)) and _tags(r)[0] == "hot" for r in range(N)])


def test_the_values_within_the_shares_get_indexes_the_most_frequent_first(built) -> None:
    _, root, brands, hot = built
    path = version_dir(root, "one", read_current(root, "one"))
    manifest = read_manifest(path)
    for metric in ("dot", "cosine"):
        listed = [(v.attribute, v.value) for v in manifest.metrics[metric].index.value_indexes]
        assert listed == [("brand", "big"), ("tags", "hot"), ("brand", "mid")]
    part = load_parts(manifest, path, mmap=True)[0]
    assert {key: served.ntotal for key, served in part.values["dot"].items()} == {
        ("brand", "big"): 900,
        ("tags", "hot"): 600,
        ("brand", "mid"): 300,
    }
    zero = [5, 17, 123]
    assert part.values["cosine"][("brand", "big")].ntotal == 900 - int((brands[zero] == "big").sum())
    assert part.values["cosine"][("tags", "hot")].ntotal == 600 - int(hot[zero].sum())
    both = Tree(must=(Match("brand", ("big",)), Tree(must=(Match("tags", ("hot",)),))))
    assert part.narrowed("dot", both) is part.values["dot"][("tags", "hot")]
    assert part.narrowed("dot", Tree(must=(Match("brand", ("big",)), HasId(("doc-00001",))))) is not None
    for loose in (
        Tree(must=(Match("brand", ("big", "mid")),)),
        Tree(should=(Match("brand", ("big",)),)),
        Tree(must_not=(Match("brand", ("big",)),)),
        Tree(must=(Match("brand", ("small",)), Range("price", None, 10.0, False, True))),
    ):
        assert part.narrowed("dot", loose) is None


def _chosen(tags: list[list[str]]) -> list[str]:
    table = pa.table({"tags": tags})
    dictionary = sorted({tag for row in tags for tag in row})
    attributes = Attributes(table, {"tags": AttributeType.KEYWORDS}, {"tags": dictionary})
    chosen = frequent_values(attributes)
    assert all(dictionary[c.code] == c.value for c in chosen)
    return [c.value for c in chosen]


def test_value_indexes_over_lossy_codes_rescore_as_the_index_does(built) -> None:
    """HNSW over int8 codes fetches more candidates per result to rescore exactly; its value
    indexes, built with the same options, are served with the same depth."""
    _, root, _, _ = built
    path = version_dir(root, "coded", read_current(root, "coded"))
    manifest = read_manifest(path)
    part = load_parts(manifest, path, mmap=True)[0]
    for metric in ("dot", "cosine"):
        depth = manifest.metrics[metric].index.refine_factor
        assert depth > 1
        assert [v.refine_factor for v in manifest.metrics[metric].index.value_indexes] == [depth] * 3
        assert {served.refine_factor for served in part.values[metric].values()} == {depth}


def test_values_are_counted_once_per_document_within_a_budget_of_the_corpus() -> None:
    """x, y and z are carried by 50, 50 and 40 of 100 documents: z would index more documents than
    the corpus holds. w is listed 8 times but by 4 documents, under 5 %; v by 10."""
    assert _chosen([["x", "z"] if row < 40 else ["x"] if row < 50 else ["y"] for row in range(100)]) == ["x", "y"]
    assert _chosen([["w", "w"] if row < 4 else ["v"] if row < 14 else [] for row in range(100)]) == ["v"]


@pytest.fixture(scope="module")
def client(built) -> Iterator[httpx.Client]:
    _, root, _, _ = built
    with in_process(root) as http:
        yield http


def test_the_collection_info_lists_them(client: httpx.Client) -> None:
    info = client.get("/v1/collections/sharded").json()
    assert info["metrics"]["cosine"]["value_indexes"] == ["brand=big", "tags=hot", "brand=mid"]


@pytest.mark.parametrize("name", ["one", "sharded", "coded"])
@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_filters_requiring_a_value_search_its_index_at_recall(
    built, client: httpx.Client, monkeypatch: pytest.MonkeyPatch, name: str, metric: str
) -> None:
    corpus, _, brands, hot = built
    searched: list[int] = []
    search = part_module.run_search

    def spy(served: Any, lists: Any, query: Any, allowed: Any) -> Any:
        searched.append(served.ntotal)
        return search(served, lists, query, allowed)

    monkeypatch.setattr(part_module, "run_search", spy)
    price = np.arange(N)
    cases = [
        ({"must": [{"key": "brand", "match": "big"}]}, brands == "big"),
        ({"must": [{"key": "tags", "match": "hot"}, {"key": "price", "range": {"lt": 1500}}]}, hot & (price < 1500)),
    ]
    for tree, passing in cases:
        allowed = np.flatnonzero(passing)
        found = wanted = 0
        for query in corpus.queries[:20]:
            body = {"vector": query.tolist(), "k": 10, "metric": metric, "filter": tree}
            reply = client.post(f"/v1/collections/{name}/search", json=body)
            assert reply.status_code == 200, reply.text
            ids = [hit["id"] for hit in reply.json()["results"]]
            assert len(ids) == 10 and all(passing[corpus.ids.index(i)] for i in ids)
            want = {corpus.ids[r] for r in top_k(true_scores(metric, query, corpus.docs), 10, allowed)}
            found, wanted = found + len(want & set(ids)), wanted + len(want)
        assert found / wanted >= 0.95
    indexed = np.ones(N, bool)
    indexed[[5, 17, 123]] = metric == "dot"
    assert len(searched) == 40 * (2 if name == "sharded" else 1)
    assert sum(searched) == 20 * int((indexed & (brands == "big")).sum() + (indexed & hot).sum())
