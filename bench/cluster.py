"""The three-node Ray cluster of docker-compose.cluster.yml against one process, on one machine.

Run: python -m bench.cluster  (needs a Docker engine; writes bench/results/cluster.md, .json, .png)

- Build: the same input built in 4 shards as Ray tasks with both worker nodes up, then with one
  (ray-worker-2 stopped), wall time of the `dotcos-build` container and its shard stage.
- Serving: one 4-part version searched through the cluster's front (parts on the two worker
  nodes, 2 replicas each) and through one `dotcos-serve` process in a container of its own
  holding every part, both limited to 2 cores in all; wrk at fixed concurrency. Server CPU per
  query is the CPU time of every container of that side (cgroup cpuacct) over the requests.
  This machine has 2 cores, so the ratio is the cost of distribution, not a speed-up.
- Writes: an upsert through the front, then searches until it is seen (every search reaches
  every part, one replica each); the write's latency and the time until it is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.service_load import free_port, write_bodies, wrk
from index_builder.synthetic import TwoTowerSpec, two_tower

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.cluster.yml"
PROJECT = "dotcos-bench-cluster"
TOKEN = "bench"
CGROUP = Path("/sys/fs/cgroup/cpuacct/docker")


class Containers:
    """A served side: the URL it answers on and the containers whose CPU it spends."""

    def __init__(self, url: str, ids: list[str]) -> None:
        self.url, self.ids = url, ids

    def cpu_seconds(self) -> float:
        return sum(int((CGROUP / cid / "cpuacct.usage").read_text()) for cid in self.ids) / 1e9


def compose(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`docker compose` on the bench's project (behind a TLS-intercepting proxy, export EXTRA_CA_CERTS)."""
    done = subprocess.run(
        ["docker", "compose", "-p", PROJECT, "-f", str(COMPOSE), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"docker compose {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done


def container(env: dict[str, str], service: str) -> str:
    return compose(env, "ps", "-q", "--no-trunc", service).stdout.strip()


def timed_build(env: dict[str, str], name: str) -> dict[str, float]:
    """Wall seconds of a 4-shard build on the cluster (container start and cluster join included),
    and of its shard stage alone."""
    start = time.perf_counter()
    done = compose(
        env, "run", "--rm", "-T", "builder", "build", "--input", "/data/docs.npy", "--name", name,
        "--metrics", "dot", "--index", "hnsw", "--shards", "4", "--ray", "auto", "--quiet",
    )  # fmt: skip
    wall = time.perf_counter() - start
    stage = re.search(r"shards ([\d.]+)s", done.stdout)
    return {"wall_s": round(wall, 2), "shards_s": float(stage.group(1)) if stage else float("nan")}


def wait_placed(url: str, name: str, replicas: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = httpx.get(f"{url}/v1/collections/{name}", timeout=30)
        if reply.status_code == 200:
            parts = reply.json()["parts"] or []
            if parts and all(sum(r["state"] == "RUNNING" for r in p["replicas"]) == replicas for p in parts):
                return
        time.sleep(1)
    raise RuntimeError(f"{name} not placed with {replicas} running replicas per part")


def wait_ready(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not ready")


def visibility(url: str, dim: int, writes: int) -> dict[str, float]:
    """Upserts through the front; the write's latency, and how long until a search returns it."""
    rng = np.random.default_rng(3)
    write_ms, visible_ms = [], []
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        for i in range(writes):
            vector = (rng.standard_normal(dim) * 50).tolist()
            start = time.perf_counter()
            reply = http.post("/v1/collections/items/upsert", json={"ids": [f"fresh-{i}"], "vectors": [vector]})
            reply.raise_for_status()
            written = time.perf_counter()
            while True:
                hits = http.post("/v1/collections/items/search", json={"vector": vector, "k": 1}).json()["results"]
                if hits and hits[0]["id"] == f"fresh-{i}":
                    break
            write_ms.append((written - start) * 1000)
            visible_ms.append((time.perf_counter() - written) * 1000)
    return {
        "writes": writes,
        "write_p50_ms": round(float(np.percentile(write_ms, 50)), 2),
        "visible_p50_ms": round(float(np.percentile(visible_ms, 50)), 2),
        "visible_max_ms": round(float(np.max(visible_ms)), 2),
    }


def single_process(env: dict[str, str], port: int) -> str:
    """One dotcos-serve (no Ray) in a container of its own over the cluster's index volume, 2 cores."""
    return subprocess.run(
        [
            "docker", "run", "-d", "--rm", "--cpus", "2", "--name", f"{PROJECT}-single",
            "-v", f"{PROJECT}_indexes:/indexes", "-p", f"127.0.0.1:{port}:8000",
            "-e", "DOTCOS_RELOAD_INTERVAL=0", "-e", "DOTCOS_QUERY_LOG=false",
            env["IMAGE"], "dotcos-serve",
        ],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def report(out: Path, payload: dict[str, Any]) -> None:
    builds, serving, writes = payload["builds"], payload["serving"], payload["writes"]
    lines = [
        "# A three-node Ray cluster against one process",
        "",
        f"{payload['docs']:,} × {payload['dim']} two-tower-like vectors, HNSW, dot, 4 shards; "
        f"{payload['machine']}. Nodes are containers on this one machine (head 0.25 core, two workers "
        "0.625 core each, front 0.5 core: 2 cores in all). Command: `python -m bench.cluster`.",
        "",
        "## Build (4 shards as Ray tasks)",
        "",
        "| worker nodes | wall s | shard stage s | shard stage × 2 nodes |",
        "|---|---|---|---|",
        *[f"| {r['workers']} | {r['wall_s']} | {r['shards_s']} | {r['shards_vs_two']} |" for r in builds],
        "",
        "## Serving (k=10, dot, wrk)",
        "",
        "| server | clients | QPS | p50 ms | p99 ms | errors | server CPU µs/query | QPS × one process "
        "| CPU × one process |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['server']} | {r['connections']} | {r['qps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['errors']} | {r['server_cpu_us']:.0f} | {r['qps_vs_single']} | {r['cpu_vs_single']} |"
            for r in serving
        ],
        "",
        "## Writes through the front",
        "",
        f"{writes['writes']} upserts: write p50 {writes['write_p50_ms']} ms; visible in a search "
        f"{writes['visible_p50_ms']} ms after the write returned (p50), {writes['visible_max_ms']} ms at most. "
        "Every search carries the front's view of the changes to one replica of every part, so a "
        "write is seen by the next search whichever replicas answer it.",
    ]
    (out / "cluster.md").write_text("\n".join(lines) + "\n")


def plot(out: Path, payload: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    builds = payload["builds"]
    left.bar([str(r["workers"]) for r in builds], [r["shards_s"] for r in builds])
    left.set(xlabel="worker nodes", ylabel="shard stage seconds", title="4-shard build on the cluster")
    serving = payload["serving"]
    labels = [f"{r['server']}\nc={r['connections']}" for r in serving]
    right.bar(range(len(serving)), [r["server_cpu_us"] for r in serving])
    right.set_xticks(range(len(serving)), labels, fontsize=7)
    right.set(ylabel="server CPU µs per query", title="Cost of distribution")
    fig.tight_layout()
    fig.savefig(out / "cluster.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=48)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--workdir", type=Path, default=Path("bench/.work/cluster"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    data = (args.workdir / "data").resolve()
    data.mkdir(parents=True)
    docs, queries = two_tower(TwoTowerSpec(docs=args.docs, queries=500, dim=args.dim, seed=11))
    np.save(data / "docs.npy", docs)
    bodies = write_bodies(args.workdir / "bodies.jsonl", queries, {"k": 10, "metric": "dot"})
    port, single_port = free_port(), free_port()
    env = {
        **os.environ,
        "DOTCOS_TAG": "bench-cluster",
        "IMAGE": "dotcos:bench-cluster",
        "DOTCOS_DATA": str(data),
        "DOTCOS_PUBLISH_PORT": str(port),
        "DOTCOS_ADMIN_TOKEN": TOKEN,
        "DOCKER_BUILDKIT": "0",
        "COMPOSE_DOCKER_CLI_BUILD": "0",
    }
    url = f"http://127.0.0.1:{port}"
    single = ""
    try:
        compose(env, "build")
        compose(env, "up", "-d")
        wait_ready(url)
        builds = [{"workers": 2, **timed_build(env, "items")}]
        compose(env, "stop", "ray-worker-2")
        builds.append({"workers": 1, **timed_build(env, "items-one-worker")})
        compose(env, "start", "ray-worker-2")
        for row in builds:
            row["shards_vs_two"] = round(row["shards_s"] / builds[0]["shards_s"], 2)
        wait_placed(url, "items", 2)
        nodes = ["ray-head", "ray-worker-1", "ray-worker-2", "service"]
        sides = {"cluster (3 nodes + front)": Containers(url, [container(env, s) for s in nodes])}
        single = single_process(env, single_port)
        sides["one process"] = Containers(f"http://127.0.0.1:{single_port}", [single])
        wait_ready(sides["one process"].url)
        serving = []
        for label, side in sides.items():
            for connections in args.clients:
                run = wrk(side, "/v1/collections/items/search", bodies, connections, args.seconds)  # type: ignore[arg-type]
                serving.append({"server": label, **run})
        base = {r["connections"]: r for r in serving if r["server"] == "one process"}
        for row in serving:
            row["qps_vs_single"] = round(row["qps"] / base[row["connections"]]["qps"], 2)
            row["cpu_vs_single"] = round(row["server_cpu_us"] / base[row["connections"]]["server_cpu_us"], 2)
        writes = visibility(url, args.dim, args.writes)
    finally:
        if single:
            subprocess.run(["docker", "rm", "-f", single], capture_output=True)
        subprocess.run(
            ["docker", "compose", "-p", PROJECT, "-f", str(COMPOSE), "down", "-v"], env=env, capture_output=True
        )
    payload = {
        "docs": args.docs,
        "dim": args.dim,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}",
        "builds": builds,
        "serving": serving,
        "writes": writes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps(payload, indent=1) + "\n")
    report(args.out, payload)
    plot(args.out, payload)
    print((args.out / "cluster.md").read_text())


if __name__ == "__main__":
    main()
