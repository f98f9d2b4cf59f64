"""Scale-out on one machine: build time against shard count, and what Ray Serve scatter-gather costs.

Run: python -m bench.scaleout  (writes bench/results/scaleout.md, .json and .png)

Build: the same corpus built unsharded, then with --shards S in-process and on a local Ray
cluster (`--ray local`, which includes starting the cluster). Serving: one sharded version
served by a single process (shards searched one after another in its executor) and by Ray Serve
(one deployment per shard), next to the unsharded version, driven by wrk at fixed concurrency.
Ratios are taken within this run. Client, gateway and replicas share the same cores here, so the
Ray numbers are a floor: on a cluster the shards run on other machines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.service_load import BIN, start_dotcos, write_bodies, wrk
from index_builder.synthetic import TwoTowerSpec, two_tower


def build_collection(root: Path, docs: Path, name: str, index: str, *extra: str, metrics: str = "dot") -> float:
    """Wall seconds of one `dotcos-build build` process (cluster start-up included for --ray local)."""
    argv = [
        str(BIN / "dotcos-build"),
        "build",
        "--input",
        str(docs),
        "--name",
        name,
        "--root",
        str(root),
        "--metrics",
        metrics,
        "--index",
        index,
        "--quiet",
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return round(time.perf_counter() - start, 2)


def _builds(root: Path, docs: Path, index: str, shard_counts: list[int]) -> list[dict[str, Any]]:
    rows = [{"mode": "unsharded", "shards": 1, "seconds": build_collection(root, docs, "unsharded", index)}]
    for shards in shard_counts:
        rows.append(
            {
                "mode": "in-process",
                "shards": shards,
                "seconds": build_collection(root, docs, f"local{shards}", index, "--shards", str(shards)),
            }
        )
        rows.append(
            {
                "mode": "ray local",
                "shards": shards,
                "seconds": build_collection(
                    root, docs, f"ray{shards}", index, "--shards", str(shards), "--ray", "local"
                ),
            }
        )
    base = rows[0]["seconds"]
    for row in rows:
        row["vs_unsharded"] = round(row["seconds"] / base, 2)
    return rows


def _serve(
    root: Path,
    workdir: Path,
    bodies: Path,
    collections: list[str],
    env: dict[str, str],
    label: str,
    clients: list[int],
    seconds: float,
) -> list[dict[str, Any]]:
    server = start_dotcos(root, workdir / f"server-{label}.log", env)
    rows = []
    try:
        for name in collections:
            for connections in clients:
                run = wrk(server, f"/v1/collections/{name}/search", bodies, connections, seconds)
                rows.append({"server": label, "collection": name, **run})
    finally:
        server.stop()
    return rows


def _ratios(serving: list[dict[str, Any]], shards: int) -> list[dict[str, Any]]:
    """QPS of each configuration against the single process serving the same sharded version."""
    base = {
        r["connections"]: r["qps"]
        for r in serving
        if r["server"] == "single process" and r["collection"] == f"local{shards}"
    }
    for row in serving:
        row["qps_vs_single_process_sharded"] = round(row["qps"] / base[row["connections"]], 2)
    return serving


def _plot(out: Path, builds: list[dict[str, Any]], serving: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in ("in-process", "ray local"):
        points = [(r["shards"], r["seconds"]) for r in builds if r["mode"] == mode]
        left.plot(*zip(*points, strict=True), marker="o", label=mode)
    left.axhline(builds[0]["seconds"], color="gray", linestyle="--", label="unsharded")
    left.set(xlabel="shards", ylabel="build seconds", title="Build time against shard count")
    left.legend()
    labels = [f"{r['server']}\n{r['collection']}\nc={r['connections']}" for r in serving]
    right.bar(range(len(serving)), [r["qps"] for r in serving])
    right.set_xticks(range(len(serving)), labels, fontsize=6)
    right.set(ylabel="QPS", title="Search QPS (wrk)")
    fig.tight_layout()
    fig.savefig(out / "scaleout.png", dpi=120)


def _report(out: Path, params: dict[str, Any], builds: list[dict[str, Any]], serving: list[dict[str, Any]]) -> str:
    lines = [
        "# Scale-out on one machine",
        "",
        f"{params['docs']:,} × {params['dim']} two-tower-like vectors, `--index {params['index']}`, dot; "
        f"{os.cpu_count()} cores shared by client, gateway and shards. Command: `python -m bench.scaleout`.",
        "",
        "## Build time",
        "",
        "| mode | shards | seconds | × unsharded |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['mode']} | {r['shards']} | {r['seconds']} | {r['vs_unsharded']} |" for r in builds]
    lines += [
        "",
        "## Serving (k=10, dot)",
        "",
        "| server | collection | clients | QPS | p50 ms | p99 ms | errors | QPS × single process (same shards) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['server']} | {r['collection']} | {r['connections']} | {r['qps']:.0f} | {r['p50_ms']:.2f} | "
        f"{r['p99_ms']:.2f} | {r['errors']} | {r['qps_vs_single_process_sharded']} |"
        for r in serving
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--index", default="hnsw")
    parser.add_argument("--shards", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--workdir", type=Path, default=Path("bench/.work/scaleout"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    docs, queries = two_tower(TwoTowerSpec(docs=args.docs, queries=500, dim=args.dim, seed=11))
    np.save(args.workdir / "docs.npy", docs)
    root = args.workdir / "indexes"
    builds = _builds(root, args.workdir / "docs.npy", args.index, args.shards)
    bodies = write_bodies(args.workdir / "bodies.jsonl", queries, {"k": 10, "metric": "dot"})
    served = ["unsharded", f"local{args.shards[0]}"]
    serve_root = args.workdir / "served"
    for name in served:
        shutil.copytree(root / name, serve_root / name)
    serving = _serve(serve_root, args.workdir, bodies, served, {}, "single process", args.clients, args.seconds)
    serving += _serve(
        serve_root,
        args.workdir,
        bodies,
        served,
        {"DOTCOS_RAY_ADDRESS": "local", "DOTCOS_RAY_REPLICA_CPUS": "0"},
        "ray serve",
        args.clients,
        args.seconds,
    )
    serving = _ratios(serving, args.shards[0])
    params = {
        "docs": args.docs,
        "dim": args.dim,
        "index": args.index,
        "shards": args.shards,
        "clients": args.clients,
        "seconds": args.seconds,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaleout.json").write_text(
        json.dumps({"params": params, "builds": builds, "serving": serving}, indent=1) + "\n"
    )
    report = _report(args.out, params, builds, serving)
    (args.out / "scaleout.md").write_text(report)
    _plot(args.out, builds, serving)
    print(report)


if __name__ == "__main__":
    main()
