"""dotcos against the servers a recommender team would pick instead, side by side in one run.

Run: bash bench/peers_setup.sh && python -m bench.peers  (writes bench/results/peers.md, .json, .png)

Data: bench/data/peers.npz (bench.peer_data: 50k MiniLM embeddings of Debian package descriptions,
not normalized; 500 queries from Python module docstrings, a related but different source).
Every engine is loaded with the same documents and HNSW M 32 / efConstruction 128 where it allows
(pgvector at its defaults m 16, ef_construction 64), then per metric:
- its query knob swept upwards from one client; the smallest reaching recall@10 >= 0.95 (tie-aware,
  against numpy) is the one measured; p50/p99 latency at 1 client come from that pass;
- QPS and server CPU per query at 8 and 64 client threads (CPU of the server's process tree from
  /proc; in-process engines count the whole bench process, clients included, and say so);
- load (build) time and memory (PSS of the server's process tree after loading).
Beside them, `floor` serves dotcos's own SQ8 index from bench.search_floor_app behind each of its
two fronts (ASGI on uvicorn, and asyncio + httptools alone): HTTP plus one FAISS call and nothing
else, the least any Python service on that index can spend per query.
A peer that could not be set up or started is listed with the reason, never dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from bench.peer_data import PEER_DATA, K, PeerData, load_peer_data
from bench.peer_engines import (
    FLOOR_FRONTS,
    Engine,
    Unavailable,
    chroma_engine,
    dotcos_collection,
    dotcos_engines,
    floor_engines,
    pgvector_engines,
    qdrant_engine,
    redis_engines,
)
from bench.service_load import Server

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TARGET = 0.95
CLIENTS = (8, 64)
CORES = os.cpu_count() or 1
DOTCOS_BUILDS = {"float32": (), "sq8": ("--hnsw-codes", "sq8")}
DOTCOS_VARIANTS = {
    # key: label, collection (codes), server environment, binary body
    "previous": ("dotcos, JSON, executor hop (the previous path)", "float32", {"DOTCOS_INLINE_MAX_COST": "0"}, False),
    "json": ("dotcos, JSON", "float32", {}, False),
    "json-sq8": ("dotcos, JSON, --hnsw-codes sq8", "sq8", {}, False),
    "binary-sq8": ("dotcos, binary body, --hnsw-codes sq8", "sq8", {}, True),
}


def sweep(engine: Engine, data: PeerData) -> dict[str, Any]:
    """The smallest knob reaching the target, with its recall and 1-client latencies."""
    search = engine.client()
    tried = []
    for knob in engine.knobs:
        found = np.full((len(data.queries), K), -1, dtype=np.int64)
        latencies = []
        for i, vector in enumerate(data.queries):
            started = time.perf_counter()
            ids = search(vector, knob)
            latencies.append(time.perf_counter() - started)
            found[i, : len(ids)] = ids[:K]
        recall = data.recall(engine.metric, found)
        tried.append({"knob": knob, "recall": round(recall, 4)})
        if recall >= TARGET or knob == engine.knobs[-1]:
            lat = np.array(latencies) * 1000
            return {
                "knob": knob,
                "recall": round(recall, 4),
                "p50_ms": round(float(np.percentile(lat, 50)), 3),
                "p99_ms": round(float(np.percentile(lat, 99)), 3),
                "reached": recall >= TARGET,
                "tried": tried,
            }
    raise AssertionError("no knobs")


def load(engine: Engine, data: PeerData, knob: int, clients: int, seconds: float) -> dict[str, Any]:
    """QPS and server CPU per query with `clients` threads, each with its own connection."""
    searches = [engine.client() for _ in range(clients)]
    counts = [0] * clients
    stop = threading.Event()
    failures: list[BaseException] = []

    def worker(slot: int) -> None:
        search, i = searches[slot], slot
        try:
            while not stop.is_set():
                search(data.queries[i % len(data.queries)], knob)
                counts[slot] += 1
                i += clients
        except BaseException as exc:  # reported, never silently dropped
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(min(1.0, seconds / 5))
    first, cpu0, t0 = sum(counts), engine.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    done, cpu1, t1 = sum(counts) - first, engine.cpu_seconds(), time.perf_counter()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    if failures:
        raise RuntimeError(f"{engine.name}: {failures[0]!r}")
    return {
        "clients": clients,
        "qps": round(done / (t1 - t0), 1),
        "cpu_us": round((cpu1 - cpu0) / max(done, 1) * 1e6, 1),
    }


def measure(engine: Engine, data: PeerData, seconds: float) -> dict[str, Any]:
    found = sweep(engine, data)
    row: dict[str, Any] = {
        "engine": engine.name,
        "metric": engine.metric,
        "knob_name": engine.knob,
        "in_process": engine.in_process,
        "load_s": round(engine.load_seconds, 1),
        "memory_mib": round(engine.memory_bytes() / 2**20, 1),
        **found,
    }
    for clients in CLIENTS:
        row[f"c{clients}"] = load(engine, data, found["knob"], clients, seconds)
    print(json.dumps(row), flush=True)
    return row


def stopped(server: Server, engines: list[Engine], data: PeerData, seconds: float) -> list[dict[str, Any]]:
    try:
        return [measure(engine, data, seconds) for engine in engines]
    finally:
        server.stop()


Rows = list[dict[str, Any]]


Floors = list[dict[str, Any]]


def run_all(
    data: PeerData, work: Path, seconds: float, only: set[str] | None, variants: list[str]
) -> tuple[Rows, list[dict[str, str]], Floors]:
    rows: list[dict[str, Any]] = []
    missing: list[dict[str, str]] = []
    floors: Floors = []
    docs = work / "docs.npy"
    np.save(docs, data.docs)
    for metric in ("dot", "cosine"):
        data.kth(metric)  # the exact answers first: at 1M they take long enough to idle a client out

    def attempt(name: str, step: Any) -> None:
        if only is not None and name not in only:
            return
        try:
            rows.extend(step())
        except (Unavailable, RuntimeError, OSError) as exc:
            print(f"{name}: not measured: {exc}", flush=True)
            missing.append({"engine": name, "reason": str(exc)})

    built: dict[str, float] = {}

    def collection(name: str) -> Path:
        """The dotcos collection of these codes, built once for every server that needs it."""
        root = work / "dotcos" / name
        if name not in built:
            built[name] = dotcos_collection(data, root, docs, name, DOTCOS_BUILDS[name])
        return root

    def dotcos() -> Rows:
        chosen = [DOTCOS_VARIANTS[key] for key in variants]
        codes = dict.fromkeys(name for _, name, _, _ in chosen)
        roots = {name: collection(name) for name in codes}  # one collection per server
        out = []
        for label, name, env, binary in chosen:
            server, engines = dotcos_engines(roots[name], name, label, built[name], env, binary)
            out += stopped(server, engines, data, seconds)
        for name in codes:
            knobs = {r["metric"]: r["knob"] for r in out if codes_of(r["engine"]) == name}
            floors.append(in_process_floor(roots[name], name, data, knobs))
        return out

    attempt("dotcos", dotcos)

    def floor() -> Rows:
        root = collection("sq8")
        return [
            row
            for front in FLOOR_FRONTS
            for row in stopped(*floor_engines(root, "sq8", built["sq8"], front), data, seconds)
        ]

    attempt("floor", floor)
    attempt("redis", lambda: stopped(*redis_engines(data), data, seconds))
    attempt("qdrant", lambda: [measure(qdrant_engine(data, m), data, seconds) for m in ("dot", "cosine")])
    attempt("pgvector", lambda: stopped(*pgvector_engines(data), data, seconds))

    def chroma() -> list[dict[str, Any]]:
        out = []
        for metric in ("dot", "cosine"):
            for ef in (64, 128, 256):
                server, engine = chroma_engine(data, metric, ef, docs)
                row = stopped(server, [engine], data, seconds)[0]
                if row["reached"] or ef == 256:
                    out.append(row)
                    break
        return out

    attempt("chroma", chroma)
    return rows, missing, floors


def in_process_floor(root: Path, name: str, data: PeerData, knobs: dict[str, int]) -> dict[str, Any]:
    """FAISS alone on a collection's own index, in this process, at the knobs the service rows chose:
    the queries in one batched call on every core (what no server can beat), and one query per call
    on one thread."""
    from bench import inprocess

    timing = inprocess.Timing(len(data.queries), 3.0)
    found = inprocess.faiss_reference(root, name, data.queries, timing, knobs)
    return {"codes": name, "metrics": found, "cores": CORES}


def report(rows: Rows, missing: list[dict[str, str]], floors: Floors, run: argparse.Namespace, data: PeerData) -> str:
    lines = [
        "# Peers: dotcos against Redis Stack, pgvector, Chroma and the Qdrant engine",
        "",
        f"`bash bench/peers_setup.sh && python -m bench.peers {' '.join(run.argv)}` (load {run.seconds:g} s per "
        f"point): {len(data.docs):,} x {data.dim} documents from {run.data} (not normalized), "
        f"{len(data.queries)} shifted queries, recall@10 tie-aware against numpy, each engine at "
        "the smallest knob reaching 0.95, HNSW M 32 / efConstruction 128 (pgvector: m 16, ef_construction 64). "
        "CPU is the server's process tree per query (in-process engines: the whole bench process, clients "
        "included). All rows from one run on this 2-core machine, clients and server sharing the cores.",
        "",
        "| engine | metric | knob | recall | p50 ms (1 client) | p99 ms | QPS 8 cl. | CPU us/q 8 cl. | QPS 64 cl. "
        "| CPU us/q 64 cl. | load s | memory MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        knob = f"{r['knob_name']} {r['knob']}" + ("" if r["reached"] else " (target not reached)")
        lines.append(
            f"| {r['engine']} | {r['metric']} | {knob} | {r['recall']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['c8']['qps']:,.0f} | {r['c8']['cpu_us']:,.0f} | {r['c64']['qps']:,.0f} | {r['c64']['cpu_us']:,.0f} "
            f"| {r['load_s']:.0f} | {r['memory_mib']:,.0f} |"
        )
    for m in missing:
        lines.append(f"| {m['engine']} | - | not measured: {m['reason']} | | | | | | | | | |")
    return "\n".join(lines + floor_report(rows, floors)) + "\n"


def floor_report(rows: Rows, floors: Floors) -> list[str]:
    """The service against FAISS alone on the same index: its best QPS over batched FAISS's."""
    if not floors:
        return []
    lines = [
        "",
        "## The service against in-process FAISS on the same index",
        "",
        "FAISS called directly on the collection's own index at the knob of the service rows: all queries in one call "
        "on every core (no server can beat it), and one query per call on one thread. The service figure is "
        "its best QPS over the client counts above, from the rows using that index.",
        "",
        "| index | metric | knob | FAISS batched QPS | FAISS CPU us/q batched | FAISS 1 thread, 1 query per call QPS "
        "| service best QPS (variant) | service / batched FAISS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for floor in floors:
        for metric, faiss in floor["metrics"].items():
            served = [
                (max(r[f"c{c}"]["qps"] for c in CLIENTS), r["engine"])
                for r in rows
                if r["metric"] == metric and r["engine"].startswith("dotcos")
                if codes_of(r["engine"]) == floor["codes"]
            ]
            best, engine = max(served, default=(0.0, "-"))
            cpu_us = floor["cores"] / faiss["qps_batch"] * 1e6
            lines.append(
                f"| HNSW32 {floor['codes']} | {metric} | efSearch {faiss['value']} | {faiss['qps_batch']:,.0f} "
                f"| {cpu_us:,.0f} | {faiss['qps_single']:,.0f} | {best:,.0f} ({engine}) "
                f"| {best / faiss['qps_batch']:.2f} |"
            )
    return lines


def codes_of(engine: str) -> str:
    return next((name for name in DOTCOS_BUILDS if name != "float32" and name in engine), "float32")


def plot(path: Path, rows: Rows) -> None:
    """Recall against server CPU per query at 8 clients, one marker per engine at its chosen knob."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    colors = plt.get_cmap("tab10")
    for ax, metric in zip(axes, ("dot", "cosine"), strict=True):
        for at, engine in enumerate(engines):
            for r in (r for r in rows if r["metric"] == metric and r["engine"] == engine):
                label = f"{engine} ({r['knob_name']} {r['knob']})"
                style = {"color": colors(at % 10), "marker": "os^Dv<>"[at % 7]}
                ax.scatter(r["c8"]["cpu_us"], r["recall"], s=50, label=label, **style)
        ax.axhline(TARGET, color="grey", lw=0.5)
        ax.set(title=metric, xlabel="server CPU us per query (8 clients, log)", ylabel="recall@10", xscale="log")
        ax.legend(fontsize=6.5, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--only", help="comma-separated engines: dotcos,floor,redis,qdrant,pgvector,chroma")
    parser.add_argument("--data", type=Path, default=PEER_DATA, help="an .npz of docs and queries")
    parser.add_argument("--dotcos-variants", default=",".join(DOTCOS_VARIANTS), help=", ".join(DOTCOS_VARIANTS))
    parser.add_argument("--name", help="results file name (default: peers, or peers-<only>)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    data = load_peer_data(args.data)
    variants = args.dotcos_variants.split(",")
    if unknown := set(variants) - set(DOTCOS_VARIANTS):
        parser.error(f"--dotcos-variants: unknown {', '.join(sorted(unknown))}; known: {', '.join(DOTCOS_VARIANTS)}")
    only = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory(dir=args.data.parent) as tmp:
        rows, missing, floors = run_all(data, Path(tmp), args.seconds, only, variants)
    name = args.name or ("peers" if args.only is None else "peers-" + args.only.replace(",", "-"))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "missing": missing, "floors": floors, "argv": args.argv}
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    (args.out / f"{name}.md").write_text(report(rows, missing, floors, args, data))
    plot(args.out / f"{name}.png", rows)
    print(report(rows, missing, floors, args, data))


if __name__ == "__main__":
    main()
