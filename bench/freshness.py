"""Changes between rebuilds on a large collection: write throughput, time until a change is
visible in another worker, search QPS and recall@10 with overlays of 0, 1,000 and 100,000
upserts and then 100,000 deletes, and the memory an overlay entry costs.

Run: python -m bench.freshness [--docs 1000000 --dim 48]  (writes bench/results/freshness.md, .json, .png)

The corpus: --docs two-tower-like vectors (HNSW32, dot and cosine, built with --queries); the
upserts are half replacements of stored documents and half new documents, all drawn from the
same generator. Writes go through the overlay's journaled write (what the admin routes call
after their checks), one call per batch. QPS drives the service core (Searcher, as the routes
do) with 16 concurrent searches, so coalescing applies; recall@10 is against numpy brute force
over the documents as they stand. Visibility: a second overlay of the same version tails the
journal as another worker does (DOTCOS_OVERLAY_REFRESH_S, default 0.5 s), and the time from a
write's return to that overlay's applying it is taken per write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from bench.service_load import BIN
from index_builder.artifact.journal import DELETE, UPSERT, Change, Journal
from index_builder.artifact.layout import read_current
from index_builder.synthetic import TwoTowerSpec, two_tower
from service.core.loader import LocalLoader
from service.core.overlay import Overlay, Tailer
from service.core.query import SearchOptions
from service.core.searcher import Searcher
from service.core.version import Version
from service.settings import ServiceSettings

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

K = 10
CLIENTS = 16
NAME = "fresh"


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Core:
    """The service core over the collection's active version, with its overlay."""

    def __init__(self, root: Path) -> None:
        self.settings = ServiceSettings(index_root=root, live_recall_sample=0)
        self.searcher = Searcher(self.settings.limits, self.settings.execution)
        loader = LocalLoader(root, self.searcher.coalescer, True, self.settings.overlay)
        self.version: Version = loader(NAME, read_current(root, NAME), lambda why: None)
        self.loop = asyncio.new_event_loop()

    @property
    def overlay(self) -> Overlay:
        assert self.version.overlay is not None
        return self.version.overlay

    def ids(self, queries: np.ndarray, metric: str) -> list[list[str]]:
        async def run() -> list[list[str]]:
            options = SearchOptions(k=K, metric=metric)
            result = await self.searcher.search(self.version, queries, options, "vectors")
            return [[h.id for h in hits] for hits in result.hits]

        return self.loop.run_until_complete(run())

    def qps(self, queries: np.ndarray, metric: str, seconds: float) -> float:
        options = SearchOptions(k=K, metric=metric)

        async def client(slot: int, stop: float) -> int:
            done = 0
            while time.perf_counter() < stop:
                query = queries[(slot + done * CLIENTS) % len(queries)][None, :]
                await self.searcher.search(self.version, query, options, "vector")
                done += 1
            return done

        async def run() -> float:
            start = time.perf_counter()
            counts = await asyncio.gather(*(client(i, start + seconds) for i in range(CLIENTS)))
            return sum(counts) / (time.perf_counter() - start)

        return self.loop.run_until_complete(run())

    def close(self) -> None:
        self.searcher.close()
        self.loop.close()


class Standing:
    """The documents as they stand (numpy truth): stored rows alive, plus the upserted ones."""

    def __init__(self, docs: np.ndarray) -> None:
        self.docs, self.alive = docs, np.ones(len(docs), bool)
        self.new_ids: list[str] = []
        self.new_vectors: list[np.ndarray] = []

    def truth(self, metric: str, queries: np.ndarray) -> list[set[str]]:
        ids = np.array([f"d{i}" for i in np.flatnonzero(self.alive)] + self.new_ids, dtype=object)
        docs = np.concatenate([self.docs[self.alive], *([np.stack(self.new_vectors)] if self.new_ids else [])])
        q = queries.astype(np.float32)
        if metric == "cosine":
            norms = np.linalg.norm(docs, axis=1)
            docs = docs / np.where(norms > 0, norms, 1)[:, None]
        scores = q @ docs.T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        return [set(ids[row].tolist()) for row in top]


def recall(found: list[list[str]], truth: list[set[str]]) -> float:
    return float(np.mean([len(set(f) & t) / K for f, t in zip(found, truth, strict=True)]))


def visibility(core: Core, standing: Standing, pool: np.ndarray, rng: np.random.Generator) -> list[float]:
    """Seconds from each write's return until a second worker's overlay has applied it."""
    other = Overlay(
        Journal(core.settings.index_root, NAME),
        core.version.manifest,
        core.version.path,
        core.version.spaces,
        core.overlay.parts,
        core.settings.overlay,
    )
    tailer = Tailer(lambda: [other], core.settings.overlay_refresh_s)
    tailer.start()
    delays = []
    try:
        for vector in pool:
            doc_id = f"probe-{len(standing.new_ids)}"
            position = core.overlay.write(Change(0, UPSERT, (doc_id,), vector[None, :])).position
            standing.new_ids.append(doc_id)
            standing.new_vectors.append(vector)
            start = time.perf_counter()
            while other.snapshot.position < position:
                time.sleep(0.001)
            delays.append(time.perf_counter() - start)
            time.sleep(float(rng.uniform(0, 0.3)))
    finally:
        tailer.stop()
    return delays


def upsert_batches(
    core: Core, standing: Standing, pool: np.ndarray, start: int, count: int, batch: int, rng: np.random.Generator
) -> float:
    """Upserts per second writing `count` upserts (half replacing stored documents) in `batch`es."""
    began = time.perf_counter()
    for first in range(0, count, batch):
        size = min(batch, count - first)
        vectors = pool[start + first : start + first + size]
        stored = rng.choice(np.flatnonzero(standing.alive), size // 2, replace=False)
        ids = [f"d{r}" for r in stored] + [f"n{start + first + j}" for j in range(size - len(stored))]
        core.overlay.write(Change(0, UPSERT, tuple(ids), vectors))
        standing.alive[stored] = False
        standing.new_ids.extend(ids)
        standing.new_vectors.extend(vectors)
    return count / (time.perf_counter() - began)


def delete_batches(core: Core, standing: Standing, count: int, batch: int, rng: np.random.Generator) -> float:
    began = time.perf_counter()
    doomed = rng.choice(np.flatnonzero(standing.alive), count, replace=False)
    for first in range(0, count, batch):
        rows = doomed[first : first + batch]
        core.overlay.write(Change(0, DELETE, tuple(f"d{r}" for r in rows)))
        standing.alive[rows] = False
    return count / (time.perf_counter() - began)


def measure(core: Core, standing: Standing, queries: np.ndarray, label: str, seconds: float) -> dict[str, Any]:
    row: dict[str, Any] = {"overlay": label, **core.overlay.snapshot.describe(0)}
    for metric in ("dot", "cosine"):
        row[f"{metric}_qps"] = round(core.qps(queries, metric, seconds), 1)
        row[f"{metric}_recall"] = round(recall(core.ids(queries, metric), standing.truth(metric, queries)), 4)
    row["rss_mb"] = round(rss_bytes() / 2**20, 1)
    print(row, flush=True)
    return row


def build(work: Path, docs: np.ndarray, queries: np.ndarray) -> float:
    np.save(work / "docs.npy", docs)
    np.save(work / "queries.npy", queries)
    (work / "ids.txt").write_text("".join(f"d{i}\n" for i in range(len(docs))))
    argv = [str(BIN / "dotcos-build"), "build", "--input", str(work / "docs.npy"), "--ids", str(work / "ids.txt")]
    argv += ["--queries", str(work / "queries.npy"), "--name", NAME, "--root", str(work / "root")]
    argv += ["--index", "hnsw", "--metrics", "dot,cosine", "--quiet"]
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=48)
    parser.add_argument("--upserts", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workdir", type=Path, default=Path("bench/.work/freshness"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    total = args.docs + args.upserts + 80
    everything, queries = two_tower(TwoTowerSpec(docs=total, queries=300, dim=args.dim, seed=9))
    docs, pool, probes = everything[: args.docs], everything[args.docs : -80], everything[-80:]
    build_s = build(args.workdir, docs, queries)
    rng = np.random.default_rng(1)
    core = Core(args.workdir / "root")
    standing = Standing(docs)
    test = queries[:200]
    rows = [measure(core, standing, test, "none", args.seconds)]
    first = 1000
    single = upsert_batches(core, standing, pool, 0, first, 1, rng)
    rows.append(measure(core, standing, test, f"{first:,} upserts", args.seconds))
    small = visibility(core, standing, probes[:40], rng)
    standing_before = rss_bytes()
    batched = upsert_batches(core, standing, pool, first, args.upserts - first, 1000, rng)
    upsert_rss = (rss_bytes() - standing_before) / (args.upserts - first)
    rows.append(measure(core, standing, test, f"{args.upserts:,} upserts", args.seconds))
    before_deletes = rss_bytes()
    deletes = delete_batches(core, standing, args.upserts, 1000, rng)
    delete_rss = (rss_bytes() - before_deletes) / args.upserts
    rows.append(measure(core, standing, test, f"{args.upserts:,} upserts + {args.upserts:,} deletes", args.seconds))
    large = visibility(core, standing, probes[40:], rng)
    snapshot = core.overlay.snapshot
    core.close()
    result = {
        "docs": args.docs,
        "dim": args.dim,
        "build_s": build_s,
        "cores": os.cpu_count(),
        "refresh_s": ServiceSettings().overlay_refresh_s,
        "rows": rows,
        "writes": {
            "upserts_per_s_batch_1": round(single, 1),
            "upserts_per_s_batch_1000": round(batched, 1),
            "deletes_per_s_batch_1000": round(deletes, 1),
        },
        "visibility_s": {
            "small_overlay": {"p50": float(np.percentile(small, 50)), "p99": float(np.percentile(small, 99))},
            "large_overlay": {"p50": float(np.percentile(large, 50)), "p99": float(np.percentile(large, 99))},
        },
        "memory": {
            "accounted_bytes_per_upsert": round(snapshot.memory_bytes / max(snapshot.upserted, 1), 1),
            "rss_bytes_per_upsert": round(upsert_rss, 1),
            "rss_bytes_per_delete": round(delete_rss, 1),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "freshness.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "freshness.md").write_text(report(result))
    plot(args.out / "freshness.png", result)
    print(report(result))


def report(r: dict[str, Any]) -> str:
    base = r["rows"][0]
    lines = [
        "# Changes between rebuilds",
        "",
        f"{r['docs']:,} × {r['dim']} two-tower vectors, HNSW32 (dot, cosine), built in {r['build_s']} s; "
        f"{r['cores']} cores; 16 concurrent searches through the service core; recall@10 of 200 queries "
        "against numpy over the documents as they stand. `python -m bench.freshness`.",
        "",
        "| overlay | pending deletes | pending upserts | dot QPS (× none) | dot recall | cosine QPS (× none) "
        "| cosine recall | overlay bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['overlay']} | {row['pending_deletes']:,} | {row['pending_upserts']:,} "
            f"| {row['dot_qps']:,.0f} ({row['dot_qps'] / base['dot_qps']:.2f}) | {row['dot_recall']:.3f} "
            f"| {row['cosine_qps']:,.0f} ({row['cosine_qps'] / base['cosine_qps']:.2f}) | {row['cosine_recall']:.3f} "
            f"| {row['memory_bytes']:,} |"
        )
    w, v, m = r["writes"], r["visibility_s"], r["memory"]
    lines += [
        "",
        f"Writes (journaled, fsynced, applied in the writing worker): {w['upserts_per_s_batch_1']:,.0f} upserts/s "
        f"one per call; {w['upserts_per_s_batch_1000']:,.0f} upserts/s and {w['deletes_per_s_batch_1000']:,.0f} "
        "deletes/s in calls of 1,000 (each call rebuilds the in-memory part of the upserted documents).",
        "",
        f"Visible in another worker (refresh every {r['refresh_s']} s): p50 {v['small_overlay']['p50'] * 1000:.0f} ms, "
        f"p99 {v['small_overlay']['p99'] * 1000:.0f} ms with a small overlay; p50 "
        f"{v['large_overlay']['p50'] * 1000:.0f} ms, p99 {v['large_overlay']['p99'] * 1000:.0f} ms with the large one.",
        "",
        f"Memory: {m['accounted_bytes_per_upsert']:.0f} bytes accounted per upsert (vector, one prepared copy per "
        f"metric, bookkeeping); resident set grew {m['rss_bytes_per_upsert']:.0f} bytes per upsert and "
        f"{m['rss_bytes_per_delete']:.0f} per delete.",
        "",
    ]
    return "\n".join(lines)


def plot(path: Path, r: dict[str, Any]) -> None:
    labels = [row["overlay"] for row in r["rows"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(labels))
    for offset, metric in ((-0.2, "dot"), (0.2, "cosine")):
        left.bar(x + offset, [row[f"{metric}_qps"] for row in r["rows"]], 0.4, label=metric)
        right.plot(x, [row[f"{metric}_recall"] for row in r["rows"]], marker="o", label=metric)
    for ax, title in ((left, "QPS (16 concurrent, service core)"), (right, "recall@10")):
        ax.set_xticks(x, labels, rotation=15, fontsize=8)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
