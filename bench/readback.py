"""The read-back API and the Python client, measured on a real `dotcos-serve`.

- The client's cost per call over raw httpx, for the JSON and the raw float32 body (the same
  requests, the same server, blocks of the two interleaved, per-call time compared block by block).
- Scroll throughput at 1M documents (documents per second, limit 1000), with and without a filter.
- Count with a filter at 1M documents (latency).
- MMR at candidates 100 against the plain search of k = 10 it diversifies (server CPU per query).

    python -m bench.readback [--docs 1000000] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dotcos_client import Client
from dotcos_client.calls import search as search_call

from bench.scaleout import build_collection
from bench.service_load import Server, start_dotcos
from index_builder.synthetic import TwoTowerSpec, two_tower

DIM = 48
BRANDS = 1000


def write_corpus(path: Path, docs: int, seed: int = 0) -> np.ndarray:
    """Two-tower-like vectors with a Zipf-distributed keyword (brand) and a uniform price; the queries."""
    vectors, queries = two_tower(TwoTowerSpec(docs=docs, queries=500, dim=DIM, clusters=64, seed=seed))
    rng = np.random.default_rng(seed)
    brand = np.minimum(rng.zipf(1.3, docs), BRANDS) - 1
    table = pa.table(
        {
            "id": [f"d{i}" for i in range(docs)],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
            "brand": [f"b{b}" for b in brand],
            "price": rng.uniform(0, 100, docs),
        }
    )
    pq.write_table(table, path)
    return queries


def per_call(fn: Callable[[int], Any], calls: int) -> float:
    """Seconds per call of `fn(i)` over `calls` calls."""
    return timed(fn, calls)[0]


def timed(fn: Callable[[int], Any], calls: int) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds per call of `fn(i)` over `calls` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def client_overhead(server: Server, queries: np.ndarray, rounds: int, calls: int) -> list[dict[str, Any]]:
    """Per-call time of the client against raw httpx sending the same bodies, interleaved by block."""
    path = "/v1/collections/small/search"
    vectors = [q.astype(np.float32) for q in queries]
    json_fields = {"k": 10, "metric": "dot", "score_threshold": -1e30}
    with httpx.Client(base_url=server.url) as raw, Client(server.url) as client:
        modes = {
            "raw httpx, JSON": lambda i: raw.post(
                path, json={"vector": vectors[i % len(vectors)].tolist(), **json_fields}
            ).json(),
            "client, JSON": lambda i: client.send(search_call("small", vectors[i % len(vectors)], False, json_fields)),
            "raw httpx, binary": lambda i: raw.post(
                path,
                content=vectors[i % len(vectors)].tobytes(),
                headers={"Content-Type": "application/octet-stream"},
                params={"k": "10", "metric": "dot"},
            ).json(),
            "client, binary": lambda i: client.search("small", vectors[i % len(vectors)], k=10, metric="dot"),
        }
        for fn in modes.values():
            per_call(fn, 50)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in modes}
        for _ in range(rounds):
            for name, fn in modes.items():
                times[name].append(timed(fn, calls))
    rows = []
    for body in ("JSON", "binary"):
        client_t, raw_t = times[f"client, {body}"], times[f"raw httpx, {body}"]
        ratios = [c[0] / r[0] for c, r in zip(client_t, raw_t, strict=True)]
        rows.append(
            {
                "body": body,
                "raw_us": round(statistics.median(t[0] for t in raw_t) * 1e6, 1),
                "client_us": round(statistics.median(t[0] for t in client_t) * 1e6, 1),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratio_min": round(min(ratios), 3),
                "ratio_max": round(max(ratios), 3),
                "raw_cpu_us": round(statistics.median(t[1] for t in raw_t) * 1e6, 1),
                "client_cpu_us": round(statistics.median(t[1] for t in client_t) * 1e6, 1),
            }
        )
    return rows


def scroll_rate(server: Server, flt: dict[str, Any] | None, with_vectors: bool) -> dict[str, Any]:
    with Client(server.url, timeout=120) as client:
        start = time.perf_counter()
        count = sum(1 for _ in client.scroll("big", filter=flt, limit=1000, with_vectors=with_vectors))
        seconds = time.perf_counter() - start
    return {
        "filter": json.dumps(flt),
        "with_vectors": with_vectors,
        "documents": count,
        "seconds": round(seconds, 2),
        "docs_per_s": round(count / seconds),
    }


def count_latency(server: Server, flt: dict[str, Any] | None, repeats: int = 20) -> dict[str, Any]:
    with Client(server.url, timeout=120) as client:
        found = client.count("big", filter=flt)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            client.count("big", filter=flt)
            times.append(time.perf_counter() - start)
    return {
        "filter": json.dumps(flt),
        "count": found,
        "p50_ms": round(statistics.median(times) * 1e3, 2),
        "max_ms": round(max(times) * 1e3, 2),
    }


def mmr_cost(server: Server, queries: np.ndarray, rounds: int, calls: int) -> list[dict[str, Any]]:
    """Server CPU per query of a plain k = 10 search, of k = 100, and of MMR among 100 candidates."""
    modes = {
        "plain k=10": {},
        "plain k=100": {"k": 100},
        "mmr k=10, candidates 100": {"mmr": {"diversity": 0.5, "candidates": 100}},
    }
    cpu: dict[str, list[float]] = {name: [] for name in modes}
    with Client(server.url) as client:
        for _ in range(rounds):
            for name, extra in modes.items():
                fields = {"k": 10, "metric": "cosine", **extra}
                before = server.cpu_seconds()
                per_call(lambda i, f=fields: client.search("mid", queries[i % len(queries)], **f), calls)
                cpu[name].append((server.cpu_seconds() - before) / calls)
    base = statistics.median(cpu["plain k=10"])
    return [
        {
            "search": name,
            "server_cpu_us": round(statistics.median(v) * 1e6, 1),
            "x_plain": round(statistics.median(v) / base, 2),
        }
        for name, v in cpu.items()
    ]


def report(out: Path, params: dict[str, Any], results: dict[str, Any]) -> None:
    lines = [
        "# Read-back API and client",
        "",
        f"`python -m bench.readback --docs {params['docs']}` on this machine ({params['cores']} cores), one run; "
        "every ratio is measured in the same run, interleaved.",
        "",
        "## The client over raw httpx (per call, sequential, 10k-document HNSW collection)",
        "",
        "Wall time per call (the server's answer included) and the calling process's own CPU per call "
        "(what the library costs the caller), the same requests through each, blocks interleaved.",
        "",
        "| body | raw httpx µs | client µs | client / raw (median) | min | max | raw CPU µs | client CPU µs |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['body']} | {r['raw_us']} | {r['client_us']} | {r['ratio_median']} | {r['ratio_min']} "
            f"| {r['ratio_max']} | {r['raw_cpu_us']} | {r['client_cpu_us']} |"
            for r in results["client"]
        ],
        "",
        f"## Scroll at {params['docs']:,} documents (limit 1000, through the client)",
        "",
        "| filter | vectors | documents | seconds | documents/s |",
        "|---|---|---|---|---|",
        *[
            f"| `{r['filter']}` | {r['with_vectors']} | {r['documents']} | {r['seconds']} | {r['docs_per_s']:,} |"
            for r in results["scroll"]
        ],
        "",
        f"## Count at {params['docs']:,} documents",
        "",
        "| filter | count | p50 ms | max ms |",
        "|---|---|---|---|",
        *[f"| `{r['filter']}` | {r['count']} | {r['p50_ms']} | {r['max_ms']} |" for r in results["count"]],
        "",
        "## MMR against the plain search (100k-document HNSW collection, cosine)",
        "",
        "| search | server CPU µs per query | × plain k=10 |",
        "|---|---|---|",
        *[f"| {r['search']} | {r['server_cpu_us']} | {r['x_plain']} |" for r in results["mmr"]],
        "",
    ]
    (out / "readback.md").write_text("\n".join(lines))
    (out / "readback.json").write_text(json.dumps({"params": params, **results}, indent=2) + "\n")
    plot(out, results)


def plot(out: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    left.bar([r["body"] for r in results["client"]], [r["ratio_median"] for r in results["client"]])
    left.axhline(1.1, color="red", linestyle="--", label="target 1.10")
    left.set_title("client / raw httpx, per call")
    left.legend()
    middle.barh(
        [f"{r['filter'][:30]}{' +vec' if r['with_vectors'] else ''}" for r in results["scroll"]],
        [r["docs_per_s"] for r in results["scroll"]],
    )
    middle.set_title("scroll, documents per second")
    right.bar([r["search"] for r in results["mmr"]], [r["x_plain"] for r in results["mmr"]])
    right.set_title("server CPU per query, × plain k=10")
    right.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    fig.savefig(out / "readback.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("bench/.work/readback"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    import os

    args.work.mkdir(parents=True, exist_ok=True)
    root = args.work / "root"
    queries = write_corpus(args.work / "big.parquet", args.docs)
    write_corpus(args.work / "small.parquet", 10_000, seed=1)
    write_corpus(args.work / "mid.parquet", 100_000, seed=2)
    attrs = ("--attributes", "brand,price")
    build_collection(root, args.work / "big.parquet", "big", "flat", *attrs, "--selfcheck-queries", "50")
    build_collection(root, args.work / "small.parquet", "small", "hnsw", metrics="dot,cosine")
    build_collection(root, args.work / "mid.parquet", "mid", "hnsw", metrics="dot,cosine")
    server = start_dotcos(
        root, args.work / "server.log", {"DOTCOS_LIVE_RECALL_SAMPLE": "0", "DOTCOS_QUERY_LOG": "false"}
    )
    try:
        frequent = {"must": [{"key": "brand", "match": "b0"}]}
        tenth = {"must": [{"key": "price", "range": {"lt": 10}}]}
        results = {
            "client": client_overhead(server, queries, 3 * args.rounds, 300),
            "scroll": [
                scroll_rate(server, None, False),
                scroll_rate(server, frequent, False),
                scroll_rate(server, tenth, True),
            ],
            "count": [count_latency(server, f) for f in (None, frequent, tenth, {"must": [frequent, tenth]})],
            "mmr": mmr_cost(server, queries, args.rounds, 200),
        }
    finally:
        server.stop()
    report(args.out, {"docs": args.docs, "cores": os.cpu_count()}, results)
    print((args.out / "readback.md").read_text())


if __name__ == "__main__":
    main()
