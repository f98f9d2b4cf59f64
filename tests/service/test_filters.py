"""Attribute filters, group-by, score thresholds and attributes in results, through the routes
in-process, against a plain-Python oracle over the same parquet file, for dot and cosine, flat,
HNSW and IVF, sharded and unsharded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index_builder.cli import main as build_main
from tests.builder.helpers import active_manifest
from tests.conftest import Corpus, in_process, make_corpus, start_server, stop_server
from tests.service.filter_oracle import (
    MARKETS,
    SELLERS,
    TAGS,
    expected,
    make_attributes,
    passing,
    write_jsonl,
    write_parquet,
)

METRICS = ["dot", "cosine"]
ATTRIBUTES = "seller,tags,price,stock,in_stock,market"
N = 3000


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[httpx.Client, Corpus, dict[str, list[Any]], Path]]:
    tmp = tmp_path_factory.mktemp("filters")
    corpus = make_corpus(tmp / "data", n=N)
    attributes = make_attributes(N)
    write_parquet(tmp / "docs.parquet", corpus.ids, corpus.docs, attributes)
    write_jsonl(tmp / "side.jsonl", corpus.ids, attributes, np.random.default_rng(1).permutation(N))
    root = tmp / "root"
    common = ["--root", str(root), "--metrics", "dot,cosine", "--quiet", "--queries", str(corpus.queries_path)]
    parquet = ["--input", str(tmp / "docs.parquet"), "--attributes", ATTRIBUTES]
    side = [
        "--input",
        str(corpus.docs_path),
        "--ids",
        str(corpus.ids_path),
        "--attributes-file",
        str(tmp / "side.jsonl"),
    ]
    for name, extra in (
        ("flat", parquet),
        ("side", side),
        ("sharded", [*parquet, "--shards", "3"]),
        ("hnsw", [*parquet, "--index", "hnsw"]),
        ("ivf", [*parquet, "--index", "ivf", "--nlist", "32"]),
        ("hnsw-sharded", [*parquet, "--index", "hnsw", "--shards", "2"]),
        ("plain", ["--input", str(corpus.docs_path), "--ids", str(corpus.ids_path)]),
    ):
        assert build_main(["build", "--name", name, *common, *extra]) == 0
    with in_process(root, DOTCOS_EXACT_FILTER_THRESHOLD="100") as client:
        yield client, corpus, attributes, root


def search(client: httpx.Client, name: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post(f"/v1/collections/{name}/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def exact_ids(
    corpus: Corpus, attributes: dict[str, list[Any]], metric: str, q: int, tree: Any, k: int, **kw: Any
) -> list[str]:
    rows, _ = expected(
        metric, corpus.queries[q], corpus.docs, passing(tree, attributes, corpus.ids), k, attributes, **kw
    )
    return [corpus.ids[r] for r in rows]


def check_exact(hits: list[dict[str, Any]], corpus: Corpus, metric: str, q: int, want: list[str]) -> None:
    """Same ids as the oracle (up to ties: same scores), scores the true ones."""
    from tests.service.oracle import true_scores

    scores = true_scores(metric, corpus.queries[q], corpus.docs)
    row = {i: r for r, i in enumerate(corpus.ids)}
    assert len(hits) == len(want)
    np.testing.assert_allclose([h["score"] for h in hits], [scores[row[h["id"]]] for h in hits], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose([h["score"] for h in hits], [scores[row[i]] for i in want], rtol=1e-4, atol=1e-4)


FILTERS: list[dict[str, Any]] = [
    {"must": [{"key": "market", "match": "de"}]},
    {"must": [{"key": "seller", "any": ["seller-00", "seller-01", "seller-07"]}]},
    {"must": [{"key": "tags", "match": "eco"}, {"key": "price", "range": {"gte": 10, "lt": 60}}]},
    {"should": [{"key": "in_stock", "match": True}, {"key": "stock", "range": {"gt": 40}}]},
    {"must_not": [{"key": "seller", "match": "seller-00"}, {"key": "tags", "any": ["sale", "bulk"]}]},
    {"must": [{"key": "price", "is_null": True}]},
    {"must": [{"key": "market", "is_null": False}, {"must_not": [{"key": "market", "any": ["de", "fr"]}]}]},
    {"must": [{"key": "stock", "match": 7}]},
    {"must": [{"key": "seller", "match": "seller-39"}, {"key": "market", "match": "jp"}]},
    {"must": [{"has_id": ["doc-00001", "doc-00002", "doc-02999"]}]},
    {"must": [{"key": "seller", "match": "nobody"}]},
    {},
]


@pytest.mark.parametrize("name", ["flat", "side", "sharded"])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("at", range(len(FILTERS)))
def test_exact_collections_equal_the_oracle(setup, name: str, metric: str, at: int) -> None:
    client, corpus, attributes, _ = setup
    tree = FILTERS[at]
    for q in (0, 1):
        hits = search(client, name, {"vector": corpus.queries[q].tolist(), "k": 10, "metric": metric, "filter": tree})
        check_exact(hits, corpus, metric, q, exact_ids(corpus, attributes, metric, q, tree, 10))


@pytest.mark.parametrize("name", ["hnsw", "ivf", "hnsw-sharded"])
@pytest.mark.parametrize("metric", METRICS)
def test_ann_collections_keep_recall_and_always_return_k(setup, name: str, metric: str) -> None:
    client, corpus, attributes, _ = setup
    found = total = 0
    for tree in FILTERS:
        allowed = passing(tree, attributes, corpus.ids)
        for q in range(8):
            hits = search(
                client, name, {"vector": corpus.queries[q].tolist(), "k": 10, "metric": metric, "filter": tree}
            )
            want = exact_ids(corpus, attributes, metric, q, tree, 10)
            assert len(hits) == len(want) == min(10, len(_scored(allowed, corpus, metric)))
            assert {h["id"] for h in hits} <= {corpus.ids[r] for r in allowed}
            found += len({h["id"] for h in hits} & set(want))
            total += len(want)
    assert found / total >= 0.95


def _scored(allowed: np.ndarray, corpus: Corpus, metric: str) -> np.ndarray:
    """The passing documents a metric can rank (cosine leaves zero vectors out)."""
    if metric == "dot":
        return allowed
    return allowed[np.linalg.norm(corpus.docs[allowed], axis=1) > 0]


def test_include_and_exclude_combine_with_the_filter(setup) -> None:
    client, corpus, attributes, _ = setup
    tree = {"must": [{"key": "market", "match": "us"}]}
    us = passing(tree, attributes, corpus.ids)
    include = [corpus.ids[r] for r in us[:40]] + ["doc-00000"]
    exclude = [corpus.ids[r] for r in us[:5]]
    body = {"vector": corpus.queries[2].tolist(), "k": 10, "filter": tree, "include": include, "exclude": exclude}
    combined = {"must": [tree, {"has_id": include}], "must_not": [{"has_id": exclude}]}
    for name in ("flat", "hnsw", "sharded"):
        check_exact(search(client, name, body), corpus, "dot", 2, exact_ids(corpus, attributes, "dot", 2, combined, 10))


@pytest.mark.parametrize("name", ["flat", "sharded", "hnsw"])
@pytest.mark.parametrize("per_group", [1, 2])
def test_group_by_returns_k_with_at_most_n_per_value(setup, name: str, per_group: int) -> None:
    client, corpus, attributes, _ = setup
    group = {"key": "seller", "max_per_group": per_group}
    for q in range(4):
        body = {"vector": corpus.queries[q].tolist(), "k": 10, "group_by": group, "with_attributes": True}
        hits = search(client, name, body)
        want = exact_ids(corpus, attributes, "dot", q, None, 10, group=group)
        sellers = [h["attributes"]["seller"] for h in hits if h["attributes"]["seller"] is not None]
        assert len(hits) == 10 and max(sellers.count(s) for s in sellers) <= per_group
        if name != "hnsw":
            check_exact(hits, corpus, "dot", q, want)


def test_group_by_with_a_filter_and_nulls_not_grouped(setup) -> None:
    client, corpus, attributes, _ = setup
    tree = {"must": [{"key": "seller", "any": ["seller-00", "seller-01"]}]}
    body = {"vector": corpus.queries[0].tolist(), "k": 10, "filter": tree, "group_by": {"key": "seller"}}
    hits = search(client, "flat", body)
    assert len(hits) == 2
    nulls = {"must": [{"key": "seller", "is_null": True}]}
    body = {"vector": corpus.queries[0].tolist(), "k": 10, "filter": nulls, "group_by": {"key": "seller"}}
    assert len(search(client, "flat", body)) == 10


@pytest.mark.parametrize("metric", METRICS)
def test_score_threshold_drops_results_below_it(setup, metric: str) -> None:
    client, corpus, attributes, _ = setup
    first = search(client, "flat", {"vector": corpus.queries[3].tolist(), "k": 10, "metric": metric})
    threshold = first[4]["score"]
    body = {"vector": corpus.queries[3].tolist(), "k": 10, "metric": metric, "score_threshold": threshold}
    hits = search(client, "flat", body)
    assert [h["id"] for h in hits] == [h["id"] for h in first[:5]]
    assert all(h["score"] >= threshold for h in hits)


def test_attributes_come_back_as_stored(setup) -> None:
    client, corpus, attributes, _ = setup
    for name in ("flat", "side", "sharded"):
        hits = search(client, name, {"vector": corpus.queries[5].tolist(), "k": 20, "with_attributes": True})
        row = {i: r for r, i in enumerate(corpus.ids)}
        for hit in hits:
            stored = {key: values[row[hit["id"]]] for key, values in attributes.items()}
            assert hit["attributes"] == stored
    plain = search(client, "flat", {"vector": corpus.queries[5].tolist(), "k": 3})
    assert all("attributes" not in h for h in plain)


def test_similar_and_batch_take_the_filter(setup) -> None:
    client, corpus, attributes, _ = setup
    tree = {"must": [{"key": "in_stock", "match": True}, {"key": "market", "match": "fr"}]}
    batch = client.post(
        "/v1/collections/sharded/search/batch", json={"vectors": corpus.queries[:3].tolist(), "k": 5, "filter": tree}
    ).json()["results"]
    for q, hits in enumerate(batch):
        check_exact(hits, corpus, "dot", q, exact_ids(corpus, attributes, "dot", q, tree, 5))
    reply = client.post("/v1/collections/flat/similar", json={"id": "doc-00010", "k": 5, "filter": tree}).json()
    allowed = {corpus.ids[r] for r in passing(tree, attributes, corpus.ids)}
    assert len(reply["results"]) == 5 and all(h["id"] in allowed and h["id"] != "doc-00010" for h in reply["results"])


def test_score_drops_candidates_the_filter_leaves_out(setup) -> None:
    client, corpus, attributes, _ = setup
    tree = {"must": [{"key": "market", "match": "de"}]}
    candidates = corpus.ids[:30]
    reply = client.post(
        "/v1/collections/sharded/score", json={"vector": corpus.queries[0].tolist(), "ids": candidates, "filter": tree}
    ).json()
    assert [h["id"] for h in reply["results"]] == [
        i for r, i in enumerate(candidates) if attributes["market"][r] == "de"
    ]


def test_a_filter_no_document_passes_is_an_empty_200(setup) -> None:
    client, corpus, _, _ = setup
    tree = {"must": [{"key": "market", "match": "de"}, {"key": "market", "match": "fr"}]}
    for name in ("flat", "hnsw", "ivf", "sharded"):
        assert search(client, name, {"vector": corpus.queries[0].tolist(), "filter": tree}) == []


def test_manifest_and_collection_info_list_every_attribute(setup) -> None:
    client, _, attributes, root = setup
    info = client.get("/v1/collections/sharded").json()["attributes"]
    assert info["seller"] == {"type": "keyword", "null_count": attributes["seller"].count(None), "distinct": 40}
    assert info["price"]["distinct"] is None and client.get("/v1/collections/plain").json()["attributes"] == {}
    _, manifest = active_manifest(root, "flat")
    assert set(manifest.attributes) == set(attributes)
    seller = manifest.attributes["seller"]
    assert seller.type == "keyword" and seller.distinct == len({s for s in attributes["seller"] if s})
    assert seller.null_count == attributes["seller"].count(None)
    assert manifest.attributes["tags"].type == "keyword_list"
    assert {manifest.attributes[k].type for k in ("price", "stock", "in_stock")} == {"float", "integer", "boolean"}


BAD = [
    (
        {"filter": {"must": [{"key": "colour", "match": "red"}]}},
        "filter.must[0].key: unknown attribute 'colour'; collection 'flat' (version ",
    ),
    (
        {"filter": {"must": [{"key": "stock", "match": "3"}]}},
        "filter.must[0].match: 'stock' is integer, so the value must be an integer",
    ),
    ({"filter": {"must": [{"key": "in_stock", "any": [1]}]}}, "filter.must[0].any[0]: 'in_stock' is boolean"),
    (
        {"filter": {"must": [{"key": "seller", "range": {"gt": 1}}]}},
        "range needs an integer or float attribute; 'seller' is keyword",
    ),
    ({"filter": {"must": [{"key": "seller", "any": []}]}}, "filter.must[0].any: expected a non-empty list"),
    (
        {"filter": {"must": [{"key": "price", "range": {"above": 1}}]}},
        "filter.must[0].range: expected an object of gt, gte, lt, lte",
    ),
    ({"filter": {"must": [{"key": "price", "range": {"gt": 1, "gte": 2}}]}}, "at most one lower"),
    ({"filter": {"must": [{"key": "price", "match": 1, "any": [2]}]}}, "exactly one of match, any, range or is_null"),
    ({"filter": {"must": {"key": "price"}}}, "filter.must: expected a list of conditions"),
    ({"filter": {"maybe": []}}, "filter: unknown field 'maybe'"),
    ({"filter": [1]}, "filter: Input should be an object"),
    (
        {
            "filter": {
                "must": [{"must": [{"must": [{"must": [{"must": [{"must": [{"key": "price", "is_null": True}]}]}]}]}]}]
            }
        },
        "nest at most 5 levels",
    ),
    ({"filter": {"should": [{"key": "stock", "match": i} for i in range(65)]}}, "at most 64 conditions"),
    ({"filter": {"must": [{"has_id": "doc-1"}]}}, "has_id: expected a non-empty list of id strings"),
    ({"group_by": {"key": "tags"}}, "group_by.key: 'tags' is a keyword list"),
    ({"group_by": {"key": "colour"}}, "group_by.key: unknown attribute 'colour'"),
    ({"group_by": {"key": "seller", "max_per_group": 0}}, "group_by.max_per_group"),
]


@pytest.mark.parametrize(("body", "message"), BAD)
def test_bad_filters_are_400s_naming_the_field(setup, body: dict[str, Any], message: str) -> None:
    client, corpus, _, _ = setup
    response = client.post("/v1/collections/flat/search", json={"vector": corpus.queries[0].tolist(), **body})
    assert response.status_code in (400, 422), response.text
    assert message in response.json()["error"]["message"], response.text


def test_filters_on_a_collection_without_attributes_say_so(setup) -> None:
    client, corpus, _, _ = setup
    body = {"vector": corpus.queries[0].tolist(), "filter": {"must": [{"key": "seller", "match": "x"}]}}
    response = client.post("/v1/collections/plain/search", json=body)
    assert response.status_code == 400 and "has: none (built without --attributes)" in response.text
    has_id = {
        "vector": corpus.queries[0].tolist(),
        "k": 3,
        "filter": {"must": [{"has_id": ["doc-00001", "doc-00002"]}]},
    }
    assert [h["id"] for h in search(client, "plain", has_id)] != []


CONDITIONS = st.one_of(
    st.builds(lambda v: {"key": "seller", "match": v}, st.sampled_from(SELLERS[:12])),
    st.builds(lambda v: {"key": "tags", "any": v}, st.lists(st.sampled_from(TAGS), min_size=1, max_size=3)),
    st.builds(lambda v: {"key": "market", "match": v}, st.sampled_from(MARKETS)),
    st.builds(lambda v: {"key": "in_stock", "match": v}, st.booleans()),
    st.builds(lambda v: {"key": "stock", "any": v}, st.lists(st.integers(0, 49), min_size=1, max_size=8)),
    st.builds(
        lambda op, v: {"key": "price", "range": {op: v}},
        st.sampled_from(["gt", "gte", "lt", "lte"]),
        st.floats(0, 150, allow_nan=False),
    ),
    st.builds(
        lambda key, null: {"key": key, "is_null": null}, st.sampled_from(["seller", "tags", "price"]), st.booleans()
    ),
)
TREES = st.recursive(
    CONDITIONS,
    lambda children: st.fixed_dictionaries(
        {},
        optional={
            "must": st.lists(children, max_size=3),
            "should": st.lists(children, max_size=3),
            "must_not": st.lists(children, max_size=2),
        },
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=TREES.map(lambda t: t if "key" not in t else {"must": [t]}), q=st.integers(0, 63), k=st.integers(1, 30))
def test_random_filter_trees_equal_the_oracle(setup, tree: dict[str, Any], q: int, k: int) -> None:
    client, corpus, attributes, _ = setup
    for name in ("flat", "sharded"):
        hits = search(client, name, {"vector": corpus.queries[q].tolist(), "k": k, "filter": tree})
        check_exact(hits, corpus, "dot", q, exact_ids(corpus, attributes, "dot", q, tree, k))


def test_a_real_server_answers_as_the_routes_do(setup) -> None:
    """The same filtered, grouped and attribute-returning requests through a real uvicorn process."""
    client, corpus, _, root = setup
    bodies = [
        {"vector": corpus.queries[q].tolist(), "k": 7, "metric": metric, "filter": tree, "with_attributes": True}
        for q, tree in enumerate(FILTERS)
        for metric in METRICS
    ]
    bodies.append({"vector": corpus.queries[0].tolist(), "group_by": {"key": "seller", "max_per_group": 2}})
    server = start_server(root, root.parent / "real.log", DOTCOS_EXACT_FILTER_THRESHOLD="100")
    try:
        with server.client() as real:
            for name in ("flat", "hnsw", "sharded"):
                for body in bodies:
                    assert search(real, name, body) == search(client, name, body)
    finally:
        stop_server(server)


def test_bad_attribute_input_exits_2_with_one_line(setup, tmp_path: Path, capsys) -> None:
    _, corpus, attributes, root = setup
    parquet = next(root.parent.glob("docs.parquet"))
    common = ["build", "--name", "bad", "--root", str(tmp_path / "root"), "--quiet"]
    cases = [
        (["--input", str(parquet), "--attributes", "seller,colour"], "no column 'colour' for --attributes"),
        (["--input", str(parquet), "--attributes", "vector"], "'vector' is the input's id or vector column"),
        (["--input", str(corpus.docs_path), "--attributes", "seller"], "--attributes reads columns of parquet input"),
    ]
    side = tmp_path / "short.jsonl"
    write_jsonl(side, corpus.ids, attributes, np.arange(N - 7))
    cases.append(
        (
            ["--input", str(corpus.docs_path), "--ids", str(corpus.ids_path), "--attributes-file", str(side)],
            "7 of its 3000 ids missing (first missing: 'doc-02993'), 0 ids not in it",
        )
    )
    extra = tmp_path / "extra.jsonl"
    write_jsonl(extra, corpus.ids, attributes, np.arange(N))
    with open(extra, "a") as out:
        out.write(json.dumps({"id": "stranger", "seller": "x"}) + "\n")
    side_input = ["--input", str(corpus.docs_path), "--ids", str(corpus.ids_path)]
    cases.append(([*side_input, "--attributes-file", str(extra)], "0 of its 3000 ids missing, 1 ids not in it"))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "".join(json.dumps({"id": i, "tags": ["a", 1] if r == 3 else ["a"]}) + "\n" for r, i in enumerate(corpus.ids))
    )
    cases.append(
        (
            ["--input", str(corpus.docs_path), "--ids", str(corpus.ids_path), "--attributes-file", str(mixed)],
            "attribute 'tags' mixes string and number",
        )
    )
    nested = tmp_path / "nested.jsonl"
    nested.write_text("".join(json.dumps({"id": i, "dims": {"w": 1}}) + "\n" for i in corpus.ids))
    cases.append(
        (
            ["--input", str(corpus.docs_path), "--ids", str(corpus.ids_path), "--attributes-file", str(nested)],
            "attribute 'dims' has type struct",
        )
    )
    ints = tmp_path / "ints.jsonl"
    ints.write_text("".join(json.dumps({"id": i, "sizes": [1, 2]}) + "\n" for i in corpus.ids))
    cases.append(
        (
            ["--input", str(corpus.docs_path), "--ids", str(corpus.ids_path), "--attributes-file", str(ints)],
            "only lists of strings",
        )
    )
    for extra, message in cases:
        assert build_main([*common, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "root" / "bad" / "CURRENT").exists()
    assert list((tmp_path / "root" / "bad" / "versions").iterdir()) == []


def test_build_and_inspect_print_the_attributes(setup, tmp_path: Path, capsys) -> None:
    _, _, attributes, root = setup
    parquet = next(root.parent.glob("docs.parquet"))
    argv = ["--name", "shown", "--root", str(tmp_path), "--quiet"]
    assert build_main(["build", "--input", str(parquet), "--attributes", "seller,price", *argv]) == 0
    nulls = attributes["seller"].count(None)
    line = f"attributes: seller keyword (40 values), {nulls} null; price float, {attributes['price'].count(None)} null"
    assert line in capsys.readouterr().out
    assert build_main(["inspect", "--name", "shown", "--root", str(tmp_path)]) == 0
    assert line in capsys.readouterr().out
