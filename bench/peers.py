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
A peer that could not be set up or started is listed with the reason, never dropped.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from bench.peer_data import K, PeerData, load_peer_data
from bench.peer_engines import (
    Engine,
    Unavailable,
    chroma_engine,
    dotcos_collection,
    dotcos_engines,
    pgvector_engines,
    qdrant_engine,
    redis_engines,
)
from bench.service_load import Server

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TARGET = 0.95
CLIENTS = (8, 64)
DOTCOS_BUILDS = {"float32": (), "sq8": ("--hnsw-codes", "sq8")}
DOTCOS_VARIANTS = (
    # label, collection (codes), server environment, binary body
    ("dotcos, JSON, executor hop (the previous path)", "float32", {"DOTCOS_INLINE_MAX_COST": "0"}, False),
    ("dotcos, JSON", "float32", {}, False),
    ("dotcos, JSON, --hnsw-codes sq8", "sq8", {}, False),
    ("dotcos, binary body, --hnsw-codes sq8", "sq8", {}, True),
)


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


def run_all(data: PeerData, work: Path, seconds: float, only: set[str] | None) -> tuple[Rows, list[dict[str, str]]]:
    rows: list[dict[str, Any]] = []
    missing: list[dict[str, str]] = []
    docs = work / "docs.npy"
    np.save(docs, data.docs)

    def attempt(name: str, step: Any) -> None:
        if only is not None and name not in only:
            return
        try:
            rows.extend(step())
        except (Unavailable, RuntimeError, OSError) as exc:
            print(f"{name}: not measured: {exc}", flush=True)
            missing.append({"engine": name, "reason": str(exc)})

    def dotcos() -> Rows:
        roots = {name: work / "dotcos" / name for name in DOTCOS_BUILDS}  # one collection per server
        built = {name: dotcos_collection(data, roots[name], docs, name, extra) for name, extra in DOTCOS_BUILDS.items()}
        out = []
        for label, name, env, binary in DOTCOS_VARIANTS:
            server, engines = dotcos_engines(roots[name], name, label, built[name], env, binary)
            out += stopped(server, engines, data, seconds)
        return out

    attempt("dotcos", dotcos)
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
    return rows, missing


def report(rows: list[dict[str, Any]], missing: list[dict[str, str]], seconds: float) -> str:
    lines = [
        "# Peers: dotcos against Redis Stack, pgvector, Chroma and the Qdrant engine",
        "",
        f"`bash bench/peers_setup.sh && python -m bench.peers` (load {seconds:g} s per point): 50k x 384 MiniLM "
        "documents (not normalized), 500 shifted queries, recall@10 tie-aware against numpy, each engine at "
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
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--only", help="comma-separated engines: dotcos,redis,qdrant,pgvector,chroma")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    data = load_peer_data()
    with tempfile.TemporaryDirectory() as tmp:
        rows, missing = run_all(data, Path(tmp), args.seconds, set(args.only.split(",")) if args.only else None)
    name = "peers" if args.only is None else "peers-" + args.only.replace(",", "-")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps({"rows": rows, "missing": missing}, indent=1))
    (args.out / f"{name}.md").write_text(report(rows, missing, args.seconds))
    plot(args.out / f"{name}.png", rows)
    print(report(rows, missing, args.seconds))


if __name__ == "__main__":
    main()
