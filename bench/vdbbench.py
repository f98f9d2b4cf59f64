"""VectorDBBench's custom-dataset performance case, run over dotcos, Redis Stack and pgvector.

Run: bash bench/peers_setup.sh && python -m bench.vdbbench  (writes bench/results/vectordbbench.md
and .json). The peers' data (bench/data/peers.npz: 50,000 MiniLM documents, 500 shifted queries)
is exported as two VectorDBBench custom datasets (metric IP and COSINE: train.parquet, test.parquet,
neighbors.parquet with numpy's exact top 100); each engine's server is started empty, and
VectorDBBench's own command line (in its own virtualenv, with dotcos registered by
bench/vdbbench_client.py) loads, optimizes and searches it with its own clients: redis-py for
Redis, psycopg for pgvector, HTTP with a raw float32 body for dotcos. Knobs are the ones bench.peers
found reaching recall 0.95 on this data, per engine and metric (read from its results file; the
flags --dotcos-ef, --redis-ef and --pg-ef override them). Its Redis client always builds a COSINE
index, so Redis runs the COSINE case only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.peer_data import PEER_DATA, PeerData, load_peer_data
from bench.peer_engines import HNSW_M, PG_USER, WORK, Unavailable, pg_server, redis_server
from bench.peers import DOTCOS_VARIANTS
from bench.service_load import BIN, Server, start_dotcos

VDB = WORK.parent / "vdb"
VENV = WORK.parent / "vdb-venv"
GROUND_TRUTH = 100
CASE_METRICS = {"dot": "IP", "cosine": "COSINE"}
TOKEN = "vdbbench"
# Each engine's bench.peers row (by the start of its label), its knob's name there and without one.
PEER_ROWS = {
    "dotcos": (DOTCOS_VARIANTS["binary-sq8"][0], "efSearch", 48),
    "redis": ("Redis Stack", "EF_RUNTIME", 64),
    "pgvector": ("pgvector", "ef_search", 96),
}
Knobs = dict[tuple[str, str], int]


def peer_knobs(path: Path, args: argparse.Namespace) -> Knobs:
    """The knob per engine and metric: a flag's, else bench.peers' row's, else the fallback."""
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    flags = {"dotcos": args.dotcos_ef, "redis": args.redis_ef, "pgvector": args.pg_ef}
    knobs = {}
    for engine, (label, _, fallback) in PEER_ROWS.items():
        for metric in CASE_METRICS:
            found = [r["knob"] for r in rows if r["engine"].startswith(label) and r["metric"] == metric]
            flag = flags[engine]
            knobs[engine, metric] = flag if flag is not None else (found or [fallback])[0]
    return knobs


def export(data: PeerData, metric: str, out: Path) -> Path:
    """One custom dataset directory (VectorDBBench's file and column names) for one metric."""
    out.mkdir(parents=True, exist_ok=True)
    docs = data.unit_docs if metric == "cosine" else data.docs
    queries = data.queries / np.linalg.norm(data.queries, axis=1, keepdims=True) if metric == "cosine" else data.queries
    truth = np.argsort(-(queries.astype(np.float64) @ docs.astype(np.float64).T), axis=1)[:, :GROUND_TRUTH]

    def vectors(matrix: np.ndarray) -> pa.Table:
        rows = pa.array(list(matrix.astype(np.float32)), type=pa.list_(pa.float32()))
        return pa.table({"id": pa.array(np.arange(len(matrix)), pa.int64()), "emb": rows})

    pq.write_table(vectors(data.docs), out / "train.parquet")
    pq.write_table(vectors(data.queries), out / "test.parquet")
    neighbors = pa.array(list(truth.astype(np.int64)), type=pa.list_(pa.int64()))
    ids = pa.array(np.arange(len(truth)), pa.int64())
    pq.write_table(pa.table({"id": ids, "neighbors_id": neighbors}), out / "neighbors.parquet")
    return out


def case_flags(data: PeerData, metric: str, directory: Path, args: argparse.Namespace) -> list[str]:
    """VectorDBBench's flags for its custom-dataset performance case on one exported dataset."""
    return [
        "--case-type", "PerformanceCustomDataset", "--custom-case-name", f"peers-{metric}",
        "--custom-dataset-name", f"{args.data.stem}-{metric}", "--custom-dataset-dir", str(directory),
        "--custom-dataset-size", str(len(data.docs)), "--custom-dataset-dim", str(data.dim),
        "--custom-dataset-metric-type", CASE_METRICS[metric], "--custom-dataset-file-count", "1",
        "--skip-custom-dataset-use-shuffled", "--custom-dataset-with-gt", "--k", "10",
        "--num-concurrency", args.concurrency, "--concurrency-duration", str(args.seconds),
        "--db-label", f"{metric}", "--task-label", f"peers-{metric}",
    ]  # fmt: skip


def run_case(command: list[str], results: Path) -> dict[str, Any]:
    """One VectorDBBench run in its own virtualenv; the metrics of the result file it wrote."""
    started = time.time()
    env = {**os.environ, "RESULTS_LOCAL_DIR": str(results), "DATASET_LOCAL_DIR": str(VDB / "datasets")}
    env["LOG_FILE"] = str(VDB / "vectordb_bench.log")
    argv = [str(VENV / "bin" / "python"), "-m", "bench.vdbbench_client", *command]
    print("$", " ".join(argv), flush=True)
    done = subprocess.run(argv, env=env, stderr=subprocess.PIPE, text=True)
    written = sorted((p.stat().st_mtime, p) for p in results.rglob("*.json") if p.stat().st_mtime >= started)
    if done.returncode != 0 or not written:
        said = [line for line in done.stderr.splitlines() if "ERROR" in line or "WARNING" in line or "Error" in line]
        raise RuntimeError(f"VectorDBBench wrote no result (exit {done.returncode}): {(said or ['-'])[-1][-300:]}")
    metrics: dict[str, Any] = json.loads(written[-1][1].read_text())["results"][0]["metrics"]
    return metrics


def engines(knobs: Knobs) -> tuple[list[Server], list[tuple[str, str, list[str]]]]:
    """The servers, started empty, and per engine and metric VectorDBBench's subcommand and flags."""
    servers, cases = [], []
    root = VDB / "indexes"
    root.mkdir(parents=True, exist_ok=True)
    env = {"DOTCOS_ADMIN_TOKEN": TOKEN, "DOTCOS_QUERY_LOG": "false", "DOTCOS_LIVE_RECALL_SAMPLE": "0"}
    dotcos = start_dotcos(root, VDB / "dotcos.log", env)
    servers.append(dotcos)
    flags = ["--url", dotcos.url, "--index-root", str(root), "--admin-token", TOKEN, "--dotcos-build"]
    flags += [str(BIN / "dotcos-build"), "--m", str(HNSW_M), "--ef-construction", "128", "--hnsw-codes", "sq8"]
    for metric in CASE_METRICS:
        cases.append(("dotcos", metric, ["dotcos", *flags, "--ef-runtime", str(knobs["dotcos", metric])]))
    try:
        redis, port = redis_server()
        servers.append(redis)
        flags = ["--host", "127.0.0.1", "--port", str(port), "--no-ssl", "--m", str(HNSW_M), "--ef-construction", "128"]
        cases.append(("redis", "cosine", ["redis", *flags, "--ef-runtime", str(knobs["redis", "cosine"])]))
    except Unavailable as error:
        print(f"Redis Stack: {error}")
    try:
        pg, dsn = pg_server()
        servers.append(pg)
        port = dsn.split("port=")[1].split()[0]
        flags = ["--user-name", "bench", "--password", "bench", "--host", "127.0.0.1", "--port", port]
        flags += ["--db-name", "postgres", "--m", "16", "--ef-construction", "64"]
        for metric in CASE_METRICS:
            cases.append(("pgvector", metric, ["pgvectorhnsw", *flags, "--ef-search", str(knobs["pgvector", metric])]))
    except Unavailable as error:
        print(f"pgvector: {error} (PostgreSQL runs as {PG_USER})")
    return servers, cases


def report(rows: list[dict[str, Any]], args: argparse.Namespace, data: PeerData) -> str:
    data_line = f"{len(data.docs):,} x {data.dim} documents and {len(data.queries)} queries from {args.data}"
    lines = [
        "# VectorDBBench: custom-dataset performance case on the peers' data",
        "",
        f"`python -m bench.vdbbench --seconds {args.seconds} --concurrency {args.concurrency}`, "
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores (client processes and servers share them). "
        f"{data_line}, k 10; VectorDBBench's own metrics "
        "(recall and nDCG against its ground truth file, serial latency of one client, QPS of "
        "its multi-process clients, load = insert + optimize).",
        "",
        "| engine | metric | knob | recall@10 | nDCG@10 | serial p50 ms | serial p99 ms | max QPS "
        "| QPS per concurrency | load s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "missing" in r:
            lines.append(f"| {r['engine']} | {r['metric']} | {r['knob']} | not measured: {r['missing']} |||||||")
            continue
        m = r["metrics"]
        qps = ", ".join(f"{c}: {q:,.0f}" for c, q in zip(m["conc_num_list"], m["conc_qps_list"], strict=True))
        lines.append(
            f"| {r['engine']} | {r['metric']} | {r['knob']} | {m['recall']:.4f} | {m['ndcg']:.4f} "
            f"| {m['serial_latency_p50'] * 1000:.2f} | {m['serial_latency_p99'] * 1000:.2f} | {m['qps']:,.0f} "
            f"| {qps} | {m['load_duration']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=15, help="each concurrency level's duration")
    parser.add_argument("--concurrency", default="1,8", help="VectorDBBench's --num-concurrency")
    parser.add_argument("--knobs-from", type=Path, default=Path("bench/results/peers.json"), help="peers results")
    parser.add_argument("--dotcos-ef", type=int, help="efSearch for both metrics")
    parser.add_argument("--redis-ef", type=int, help="EF_RUNTIME")
    parser.add_argument("--pg-ef", type=int, help="hnsw.ef_search for both metrics")
    parser.add_argument("--data", type=Path, default=PEER_DATA, help="an .npz of docs and queries")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if not (VENV / "bin" / "python").exists():
        raise SystemExit(f"{VENV} is missing: run bash bench/peers_setup.sh")
    data = load_peer_data(args.data)
    datasets = {metric: export(data, metric, VDB / "data" / metric) for metric in CASE_METRICS}
    knobs = peer_knobs(args.knobs_from, args)
    servers, cases = engines(knobs)
    rows = []
    try:
        for engine, metric, command in cases:
            knob = f"{PEER_ROWS[engine][1]} {knobs[engine, metric]}"
            row: dict[str, Any] = {"engine": engine, "metric": metric, "knob": knob}
            try:
                flags = case_flags(data, metric, datasets[metric], args)
                row["metrics"] = run_case([*command, *flags], VDB / "results")
            except RuntimeError as error:
                print(f"{engine} {metric}: not measured: {error}", flush=True)
                row["missing"] = str(error)
            rows.append(row)
    finally:
        for server in servers:
            server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vectordbbench.json").write_text(json.dumps(rows, indent=1))
    (args.out / "vectordbbench.md").write_text(report(rows, args, data))
    print(report(rows, args, data))


if __name__ == "__main__":
    main()
