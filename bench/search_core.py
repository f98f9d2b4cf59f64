"""The search core alone: CPU per query of FAISS HNSW storage choices at recall@10 >= 0.95.

Run: python -m bench.search_core  (writes bench/results/search_core.md, .json and .png)

What one query costs below the service, on the peers' data (bench/data/peers.npz: 50k MiniLM
embeddings of Debian package descriptions, 500 Python docstring queries): per metric and graph
storage (float32 `HNSW32`, `HNSW32_SQ8`, `HNSW32_SQfp16`; M 32, efConstruction 128), each swept
over efSearch, one thread, one query per call, the candidates rescored exactly the way the service
does it (`ann_topk`), recall@10 tie-aware against numpy. hnswlib is measured beside them as the
reference single-query speed. CPU seconds come from the process clock, all in one run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import faiss
import matplotlib
import numpy as np

from bench.peer_data import K, PeerData, load_peer_data
from index_builder.retrieval.ann import ServedIndex, ann_topk
from index_builder.retrieval.spaces import Layout, Metric, MetricSpace, fit_metric_space

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

EFS = (16, 24, 32, 48, 64, 96, 128)
STORAGES = ("HNSW32", "HNSW32_SQ8", "HNSW32_SQfp16")
TARGET = 0.95


def served(data: PeerData, metric: str, factory: str, refine: int) -> ServedIndex:
    """An index built the way the builder builds it, wrapped as the service serves it."""
    space = space_of(data, metric)
    prepared = space.prepare_documents(data.docs)
    index = faiss.index_factory(data.dim, factory, faiss.METRIC_INNER_PRODUCT)
    inner = faiss.downcast_index(index)
    inner.hnsw.efConstruction = 128
    index.train(prepared)
    index.add(prepared)
    scales = space.doc_scale(data.docs).astype(np.float32)
    return ServedIndex.of([index], space, Layout.IP, refine, data.docs, scales)


def space_of(data: PeerData, metric: str) -> MetricSpace:
    return fit_metric_space(Metric.parse(metric), np.linalg.norm(data.docs, axis=1), None)


def sweep(data: PeerData, metric: str, index: ServedIndex, label: str) -> list[dict[str, Any]]:
    rows = []
    for ef in EFS:
        found = np.empty((len(data.queries), K), dtype=np.int64)
        start = time.process_time()
        for i, q in enumerate(data.queries):
            found[i] = ann_topk(index, q[None, :], K, ef)[1][0]
        cpu = time.process_time() - start
        rows.append(
            {
                "metric": metric,
                "storage": label,
                "ef": ef,
                "recall": round(data.recall(metric, found), 4),
                "cpu_us": round(cpu / len(data.queries) * 1e6, 1),
            }
        )
        print(rows[-1], flush=True)
    return rows


def hnswlib_sweep(data: PeerData, metric: str) -> list[dict[str, Any]]:
    import hnswlib

    space = space_of(data, metric)
    index = hnswlib.Index(space="ip", dim=data.dim)
    index.init_index(max_elements=len(data.docs), M=32, ef_construction=128, random_seed=0)
    index.add_items(space.prepare_documents(data.docs), np.arange(len(data.docs)))
    index.set_num_threads(1)
    queries = space.prepare_queries(data.queries)
    rows = []
    for ef in EFS:
        index.set_ef(max(ef, K))
        start = time.process_time()
        found = np.stack([index.knn_query(q[None, :], k=K)[0][0] for q in queries]).astype(np.int64)
        cpu = time.process_time() - start
        rows.append(
            {
                "metric": metric,
                "storage": "hnswlib (reference)",
                "ef": ef,
                "recall": round(data.recall(metric, found), 4),
                "cpu_us": round(cpu / len(queries) * 1e6, 1),
            }
        )
        print(rows[-1], flush=True)
    return rows


def at_target(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The cheapest row reaching the target per (metric, storage)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["metric"], row["storage"])
        if row["recall"] >= TARGET and (key not in best or row["cpu_us"] < best[key]["cpu_us"]):
            best[key] = row
    return best


def report(rows: list[dict[str, Any]]) -> str:
    best = at_target(rows)
    lines = [
        "# Search core: FAISS HNSW storage at recall@10 >= 0.95",
        "",
        "`python -m bench.search_core`: 50k x 384 MiniLM documents, 500 shifted queries, one thread, one query "
        "per call, candidates rescored exactly (`ann_topk`). CPU per query from the process clock, one run.",
        "",
        "| metric | storage | efSearch at >= 0.95 | recall | CPU us/query | vs HNSW32 |",
        "|---|---|---|---|---|---|",
    ]
    for (metric, storage), row in sorted(best.items()):
        base = best.get((metric, "HNSW32 (rescore 1k)"))
        ratio = f"{row['cpu_us'] / base['cpu_us']:.2f}x" if base else "-"
        lines.append(f"| {metric} | {storage} | {row['ef']} | {row['recall']:.3f} | {row['cpu_us']:.0f} | {ratio} |")
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, metric in zip(axes, ("dot", "cosine"), strict=True):
        for storage in sorted({r["storage"] for r in rows}):
            mine = [r for r in rows if r["metric"] == metric and r["storage"] == storage]
            ax.plot([r["cpu_us"] for r in mine], [r["recall"] for r in mine], marker="o", label=storage)
        ax.axhline(TARGET, color="grey", lw=0.5)
        ax.set(title=metric, xlabel="CPU us per query (1 thread)", ylabel="recall@10")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    data = load_peer_data()
    rows: list[dict[str, Any]] = []
    for metric in ("dot", "cosine"):
        for factory in STORAGES:
            refine = 1 if factory == "HNSW32" else 2
            rows += sweep(data, metric, served(data, metric, factory, refine), f"{factory} (rescore {refine}k)")
        rows += hnswlib_sweep(data, metric)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_core.json").write_text(json.dumps({"rows": rows}, indent=1))
    (args.out / "search_core.md").write_text(report(rows))
    plot(args.out / "search_core.png", rows)
    print(report(rows))


if __name__ == "__main__":
    main()
