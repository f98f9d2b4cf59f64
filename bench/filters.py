"""Attribute filters on a large collection: recall against exact filtered search, cost against the
unfiltered search, the exact/ANN crossover, exclusion lists, group-by, and storage.

Run: python -m bench.filters [--index hnsw|ivf --name filters]  (writes bench/results/<name>.md, .json, .png)

The corpus: --docs two-tower-like vectors with three attributes read from a parquet side file: a
keyword `brand` of 1,000 values with Zipf-skewed frequencies, a keyword list `tags` (0-3 of 30),
and a float `price` uniform in [0, 100) (so `price < 100 p` passes a share p of the documents).
In-process figures drive the service core (Searcher, as the routes do) one query at a time; the
HTTP figures are wrk at 16 clients against a real server. Truth is numpy brute force over the
passing documents.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.service_load import BIN, start_dotcos, write_bodies, wrk
from index_builder.artifact.layout import read_current, version_dir
from index_builder.retrieval.ann import ann_topk, filtered_knob
from index_builder.retrieval.rowsets import Mask, selector
from index_builder.retrieval.scoring import Prepared, exact_topk
from index_builder.synthetic import TwoTowerSpec, two_tower
from service.core.loader import LocalLoader
from service.core.query import GroupBy, SearchOptions
from service.core.searcher import Searcher
from service.core.version import Version
from service.settings import ServiceSettings

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SELECTIVITIES = [0.5, 0.1, 0.01, 0.001, 0.0001]
BRANDS = 1000
TAGS = [f"tag-{i:02d}" for i in range(30)]
K = 10
MAX_EF = 4096


def make_corpus(work: Path, docs: int, dim: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    vectors, queries = two_tower(TwoTowerSpec(docs=docs, queries=300, dim=dim, seed=5))
    rng = np.random.default_rng(6)
    weights = 1.0 / np.arange(1, BRANDS + 1) ** 1.1
    brand = rng.choice(BRANDS, size=docs, p=weights / weights.sum())
    counts = rng.integers(0, 4, size=docs)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    flat = rng.integers(0, len(TAGS), size=int(offsets[-1]))
    price = rng.random(docs) * 100
    ids = [f"d{i}" for i in range(docs)]
    np.save(work / "docs.npy", vectors)
    np.save(work / "queries.npy", queries[:100])
    (work / "ids.txt").write_text("\n".join(ids) + "\n")
    names = np.array([f"brand-{b:04d}" for b in range(BRANDS)], dtype=object)
    tags = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(np.array(TAGS, dtype=object)[flat]))
    table = pa.table({"id": ids, "brand": pa.array(names[brand]), "tags": tags, "price": pa.array(price)})
    pq.write_table(table, work / "attributes.parquet")
    return vectors, queries[100:], {"brand": brand, "offsets": offsets, "flat": flat, "price": price}


def filters(attrs: dict[str, Any], docs: int) -> list[tuple[str, float, dict[str, Any], np.ndarray]]:
    """(name, share passing, filter, passing mask): price ranges at each selectivity, then a
    frequent and a rare brand and a tag."""
    out = []
    for share in SELECTIVITIES:
        out.append(
            (
                f"price < {100 * share:g}",
                share,
                {"must": [{"key": "price", "range": {"lt": 100 * share}}]},
                attrs["price"] < 100 * share,
            )
        )
    counts = np.bincount(attrs["brand"], minlength=BRANDS)
    for label, b in (("frequent brand", 0), ("rare brand", int(np.flatnonzero(counts > 0)[-1]))):
        mask = attrs["brand"] == b
        out.append((label, float(mask.mean()), {"must": [{"key": "brand", "match": f"brand-{b:04d}"}]}, mask))
    owners = np.repeat(np.arange(docs), np.diff(attrs["offsets"]))
    tag_mask = np.zeros(docs, bool)
    tag_mask[owners[attrs["flat"] == 3]] = True
    combined = tag_mask & (attrs["price"] < 30)
    tree = {"must": [{"key": "tags", "match": TAGS[3]}, {"key": "price", "range": {"lt": 30}}]}
    out.append(("tag and price < 30", float(combined.mean()), tree, combined))
    return out


def true_topk(metric: str, docs: np.ndarray, norms: np.ndarray, query: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(mask if metric == "dot" else mask & (norms > 0))
    scores = docs[rows] @ query
    if metric == "cosine":
        scores = scores / norms[rows]
    best = np.argsort(-scores, kind="stable")[:K]
    return rows[best]


def grouped_truth(docs: np.ndarray, query: np.ndarray, brand: np.ndarray, per_group: int) -> np.ndarray:
    scores = docs @ query
    taken: list[int] = []
    counts: dict[int, int] = {}
    for row in np.argsort(-scores, kind="stable"):
        b = int(brand[row])
        if counts.get(b, 0) < per_group:
            counts[b] = counts.get(b, 0) + 1
            taken.append(int(row))
            if len(taken) == K:
                break
    return np.array(taken)


class Core:
    """The service core over one loaded version, queried one request at a time."""

    def __init__(self, root: Path, collection: str, **settings: Any) -> None:
        chosen = ServiceSettings(index_root=root, **settings)
        self.searcher = Searcher(chosen.limits, chosen.execution)
        loader = LocalLoader(root, self.searcher.coalescer, True, chosen.overlay)
        self.version: Version = loader(collection, read_current(root, collection), lambda why: None)
        self.loop = asyncio.new_event_loop()

    def search(self, query: np.ndarray, options: SearchOptions) -> list[str]:
        result = self.loop.run_until_complete(self.searcher.search(self.version, query[None, :], options, "vector"))
        return [h.id for h in result.hits[0]]

    def qps(self, queries: np.ndarray, options: SearchOptions, seconds: float) -> float:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.search(queries[done % len(queries)], options)
            done += 1
        return done / (time.perf_counter() - start)

    def close(self) -> None:
        self.searcher.close()
        self.loop.close()


def recall(found: list[list[str]], truth: list[np.ndarray]) -> float:
    hits = sum(len({f"d{r}" for r in t} & set(f)) for f, t in zip(found, truth, strict=True))
    return hits / max(1, sum(len(t) for t in truth))


def _row(
    core: Core,
    metric: str,
    queries: np.ndarray,
    docs: np.ndarray,
    norms: np.ndarray,
    spec: tuple[str, float, dict[str, Any], np.ndarray],
    seconds: float,
    base_qps: float,
) -> dict[str, Any]:
    name, share, tree, mask = spec
    options = SearchOptions(k=K, metric=metric, filter=tree)
    truth = [true_topk(metric, docs, norms, q, mask) for q in queries]
    found = [core.search(q, options) for q in queries]
    short = sum(len(f) < len(t) for f, t in zip(found, truth, strict=True))
    qps = core.qps(queries, options, seconds)
    return {
        "metric": metric,
        "filter": name,
        "passing": round(share, 6),
        "recall": round(recall(found, truth), 4),
        "short_answers": short,
        "qps": round(qps, 1),
        "cost_vs_unfiltered": round(base_qps / qps, 2),
    }


def crossover(
    core: Core, queries: np.ndarray, docs: np.ndarray, norms: np.ndarray, attrs: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per-query time (and recall) of the exact scan over the passing documents and of the filtered
    ANN search at the plain knob rule, called directly (not through the planner), dot."""
    part = core.version.parts.parts[0]  # type: ignore[attr-defined]
    served = part.indexes["dot"]
    default = core.version.manifest.metrics["dot"].index.search_params.get(served.param or "")
    rows = []
    for share in (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
        mask = attrs["price"] < 100 * share
        value = filtered_knob(served.param, default, K, share)
        chain = selector(Mask(mask))
        prepared = [Prepared.of(served.space, q[None, :]) for q in queries]
        truth = [true_topk("dot", docs, norms, q, mask) for q in queries]
        pool = np.flatnonzero(mask)
        knob = min(value or 0, MAX_EF) or None
        timings = {}
        for name in ("exact", "ann"):
            start = time.perf_counter()
            found = [
                (
                    exact_topk(served.space, p, served.vectors, served.scales, K, candidates=pool)
                    if name == "exact"
                    else ann_topk(served, p, K, knob, chain[-1])
                )[1][0]
                for p in prepared
            ]
            timings[name] = (time.perf_counter() - start) / len(prepared) * 1000
            timings[f"{name}_recall"] = recall([[f"d{r}" for r in f if r >= 0] for f in found], truth)
        rows.append(
            {
                "passing": int(mask.sum()),
                "knob": min(value or 0, MAX_EF),
                "exact_ms": round(timings["exact"], 3),
                "ann_ms": round(timings["ann"], 3),
                "ann_recall": round(timings["ann_recall"], 4),
            }
        )
    return rows


def build(work: Path, index: str, extra: list[str]) -> float:
    argv = [
        str(BIN / "dotcos-build"),
        "build",
        "--input",
        str(work / "docs.npy"),
        "--ids",
        str(work / "ids.txt"),
        "--attributes-file",
        str(work / "attributes.parquet"),
        "--queries",
        str(work / "queries.npy"),
        "--name",
        index,
        "--root",
        str(work / "root"),
        "--index",
        index,
        "--metrics",
        "dot,cosine",
        "--quiet",
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return round(time.perf_counter() - start, 1)


def http_rows(
    work: Path,
    collection: str,
    queries: np.ndarray,
    specs: list[tuple[str, float, dict[str, Any], np.ndarray]],
    seconds: float,
) -> list[dict[str, Any]]:
    server = start_dotcos(work / "root", work / "server.log")
    rows = []
    try:
        cases = [("unfiltered", 1.0, None), *((name, share, tree) for name, share, tree, _ in specs)]
        for name, share, tree in cases:
            extra: dict[str, Any] = {"k": K, "metric": "dot"}
            if tree is not None:
                extra["filter"] = tree
            bodies = write_bodies(work / "bodies.jsonl", queries, extra)
            run = wrk(server, f"/v1/collections/{collection}/search", bodies, 16, seconds)
            rows.append(
                {
                    "filter": name,
                    "passing": round(share, 6),
                    "qps": run["qps"],
                    "p50_ms": run["p50_ms"],
                    "errors": run["errors"],
                }
            )
    finally:
        server.stop()
    base = rows[0]["qps"]
    for row in rows:
        row["vs_unfiltered"] = round(row["qps"] / base, 2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=48)
    parser.add_argument("--index", default="hnsw")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--queries", type=int, default=100, help="queries per recall figure")
    parser.add_argument("--workdir", type=Path, default=Path("bench/.work/filters"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="filters", help="result file names")
    parser.add_argument("--reuse", action="store_true", help="keep the workdir's corpus and build if present")
    args = parser.parse_args()
    work = args.workdir
    built = args.reuse and (work / "root" / args.index / "CURRENT").exists()
    if not built:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    docs, queries, attrs = make_corpus(work, args.docs, args.dim)
    queries = queries[: args.queries]
    norms = np.linalg.norm(docs, axis=1)
    build_s = build(work, args.index, []) if not built else "(reused)"
    specs = filters(attrs, args.docs)
    core = Core(work / "root", args.index)
    inprocess = []
    try:
        for metric in ("dot", "cosine"):
            base = core.qps(queries, SearchOptions(k=K, metric=metric), args.seconds)
            inprocess.append(
                {
                    "metric": metric,
                    "filter": "unfiltered",
                    "passing": 1.0,
                    "recall": None,
                    "short_answers": 0,
                    "qps": round(base, 1),
                    "cost_vs_unfiltered": 1.0,
                }
            )
            inprocess += [_row(core, metric, queries, docs, norms, spec, args.seconds, base) for spec in specs]
        excluded = [f"d{i}" for i in np.random.default_rng(7).choice(args.docs, 10_000, replace=False)]
        plain = SearchOptions(k=K, metric="dot")
        exclusion = {
            "ids": len(excluded),
            "ms_without": round(1000 / core.qps(queries, plain, args.seconds), 3),
            "ms_with": round(1000 / core.qps(queries, replace(plain, exclude=excluded), args.seconds), 3),
        }
        exclusion["added_ms"] = round(exclusion["ms_with"] - exclusion["ms_without"], 3)
        groups = []
        for per_group in (1, 2):
            options = replace(plain, group_by=GroupBy("brand", per_group))
            found = [core.search(q, options) for q in queries]
            truth = [grouped_truth(docs, q, attrs["brand"], per_group) for q in queries]
            groups.append(
                {
                    "max_per_group": per_group,
                    "recall": round(recall(found, truth), 4),
                    "qps": round(core.qps(queries, options, args.seconds), 1),
                }
            )
        cross = crossover(core, queries, docs, norms, attrs)
    finally:
        core.close()
    http = http_rows(work, args.index, queries, specs[:5], args.seconds * 2)
    path = version_dir(work / "root", args.index, read_current(work / "root", args.index))
    storage = sum(f.stat().st_size for f in path.glob("attr.*")) + (path / "attributes.json").stat().st_size
    result = {
        "params": {
            "docs": args.docs,
            "dim": args.dim,
            "index": args.index,
            "queries": len(queries),
            "build_s": build_s,
            "cpus": os.cpu_count(),
        },
        "inprocess": inprocess,
        "exclusion": exclusion,
        "group_by": groups,
        "crossover": cross,
        "http": http,
        "attribute_bytes_per_doc": round(storage / args.docs, 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{args.name}.md").write_text(report(result))
    plot(args.out / f"{args.name}.png", result)
    print(f"wrote {args.out}/{args.name}.md, .json, .png")


def report(r: dict[str, Any]) -> str:
    p = r["params"]
    lines = [
        "# Attribute filters",
        "",
        f"{p['docs']:,} documents × {p['dim']} dims, `--index {p['index']}` (built with three attributes in "
        f"{p['build_s']} s), {p['queries']} queries per figure, {p['cpus']} cores shared by everything. "
        "Command: `python -m bench.filters`. Recall@10 is against numpy brute force over the passing "
        "documents; cost is unfiltered QPS over filtered QPS in the same run (in-process, one query at a time).",
        "",
        "## Recall and cost per filter (in-process)",
        "",
        "| metric | filter | passing | recall@10 | short answers | QPS | cost × unfiltered |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['metric']} | {x['filter']} | {x['passing']:.4%} | {'' if x['recall'] is None else x['recall']} | "
        f"{x['short_answers']} | {x['qps']:.0f} | {x['cost_vs_unfiltered']} |"
        for x in r["inprocess"]
    ]
    lines += [
        "",
        "## Over HTTP (wrk, 16 clients, dot)",
        "",
        "| filter | passing | QPS | p50 ms | errors | × unfiltered |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['filter']} | {x['passing']:.4%} | {x['qps']:.0f} | {x['p50_ms']:.2f} | {x['errors']} | "
        f"{x['vs_unfiltered']} |"
        for x in r["http"]
    ]
    e = r["exclusion"]
    lines += [
        "",
        "## Exclusion list",
        "",
        f"{e['ids']:,} excluded ids: {e['ms_with']} ms per request against {e['ms_without']} ms without "
        f"(+{e['added_ms']} ms).",
        "",
        "## Group-by on the skewed keyword (dot)",
        "",
        "| max per group | recall@10 vs exact grouped answer | QPS |",
        "|---|---|---|",
    ]
    lines += [f"| {g['max_per_group']} | {g['recall']} | {g['qps']:.0f} |" for g in r["group_by"]]
    lines += [
        "",
        "## Exact scan or ANN: where they cross (dot, price ranges)",
        "",
        "| passing documents | exact scan ms | filtered ANN ms (knob) | filtered ANN recall@10 |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {c['passing']:,} | {c['exact_ms']} | {c['ann_ms']} ({c['knob']}) | {c['ann_recall']} |"
        for c in r["crossover"]
    ]
    lines += [
        "",
        f"Attribute storage: {r['attribute_bytes_per_doc']} bytes per document (every attribute file and the "
        "dictionaries).",
    ]
    return "\n".join(lines) + "\n"


def plot(path: Path, r: dict[str, Any]) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for metric in ("dot", "cosine"):
        rows = [x for x in r["inprocess"] if x["metric"] == metric and x["filter"].startswith("price")]
        left.plot([x["passing"] for x in rows], [x["recall"] for x in rows], marker="o", label=metric)
    left.set(xscale="log", xlabel="share of documents passing", ylabel="recall@10", title="Filtered recall")
    left.axhline(0.95, color="gray", linestyle="--")
    left.legend()
    cross = r["crossover"]
    right.plot([c["passing"] for c in cross], [c["exact_ms"] for c in cross], marker="o", label="exact scan")
    right.plot([c["passing"] for c in cross], [c["ann_ms"] for c in cross], marker="o", label="filtered ANN")
    right.set(xscale="log", xlabel="passing documents", ylabel="ms per query", title="Exact or ANN")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
