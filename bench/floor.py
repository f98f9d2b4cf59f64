"""How close the service is to what Python HTTP allows here: dotcos next to a parse-only floor app.

Run after `python -m bench.run --dataset quick` (it reuses that run's indexes and queries):
`python -m bench.floor` writes bench/results/floor.md and .json. At 64 clients it measures the
floor app (bench/floor_app.py), dotcos on the 100k HNSW collection, each with 1 and 2 workers, the
CPU seconds every request costs the server and wrk, and in-process batched FAISS on the same index.
The bound is the QPS the two cores would reach if each request cost only the floor's CPU plus
batched FAISS's CPU per query.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench import inprocess
from bench.service_load import BIN, Server, free_port, start, start_dotcos, write_bodies, wrk

CORES = os.cpu_count() or 1


def _start_floor(workers: int, log: Path) -> Server:
    port = free_port()
    argv = [
        str(BIN / "uvicorn"),
        "bench.floor_app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--workers",
        str(workers),
        "--no-access-log",
    ]
    return start("floor", argv, {}, port, "/", log)


def _measured(server: Server, path: str, bodies: Path, seconds: float) -> dict[str, Any]:
    """One wrk run at 64 clients, with the server's CPU seconds per request."""
    before = server.cpu_seconds()
    run = wrk(server, path, bodies, 64, seconds)
    cpu = server.cpu_seconds() - before
    return {**run, "server_cpu_us": round(cpu / (run["qps"] * seconds) * 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("bench/.work"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    root = args.workdir / "indexes-quick"
    queries = np.load(args.workdir / "data" / "quick-queries.npy")[:200]
    bodies = write_bodies(args.workdir / "bodies" / "floor-dot.jsonl", queries, {"k": 10, "metric": "dot"})
    timing = inprocess.Timing(len(queries), 1.0)
    faiss_batch = inprocess.faiss_reference(root, "hnsw-ip", queries, timing)["dot"]["qps_batch"]
    rows = []
    for workers in (1, 2):
        floor = _start_floor(workers, args.workdir / "floor.log")
        try:
            rows.append({"server": f"floor ({workers} workers)", **_measured(floor, "/", bodies, args.seconds)})
        finally:
            floor.stop()
        dotcos = start_dotcos(root, args.workdir / "dotcos-floor.log", {"DOTCOS_WORKERS": str(workers)})
        try:
            rows.append(
                {
                    "server": f"dotcos ({workers} workers)",
                    **_measured(dotcos, "/v1/collections/hnsw-ip/search", bodies, args.seconds),
                }
            )
        finally:
            dotcos.stop()
    floor_cpu = min(r["server_cpu_us"] for r in rows if r["server"].startswith("floor"))
    faiss_cpu = CORES / faiss_batch * 1e6
    bound = CORES / ((floor_cpu + faiss_cpu) / 1e6)
    result = {
        "faiss_batched_qps": faiss_batch,
        "faiss_cpu_us_per_query": round(faiss_cpu, 1),
        "floor_cpu_us_per_request": floor_cpu,
        "bound_qps": round(bound),
        "rows": rows,
    }
    (args.out / "floor.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# dotcos next to the Python HTTP floor (100k × 384 HNSW, dot, 64 clients)",
        "",
        f"In-process FAISS batched: {faiss_batch:,.0f} QPS ({faiss_cpu:.0f} µs of CPU per query on {CORES} "
        f"cores). Floor app: {floor_cpu:.0f} µs of server CPU per request. Bound if a request cost only "
        f"both: **{bound:,.0f} QPS = {bound / faiss_batch:.2f}× batched FAISS**.",
        "",
        "| server | QPS | × batched FAISS | × bound | p50 ms | p99 ms | server CPU µs/request | client CPU share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['server']} | {r['qps']:,.0f} | {r['qps'] / faiss_batch:.2f} | {r['qps'] / bound:.2f} | "
        f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['server_cpu_us']:.0f} | {r['client_cpu_share']:.0%} |"
        for r in rows
    ]
    (args.out / "floor.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
