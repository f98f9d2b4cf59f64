"""What a rollout costs the service: routing by route key, shadowing 5 % of requests, and the
memory of a second served version.

One `dotcos-serve` (1 worker) serves a 100k x 48 HNSW collection with a candidate alias; 16 client
threads send raw float32 searches. Four configurations take turns on the same server, in several
rounds (forward and backward in turn, so the machine's drift hits them alike), each measured as
server CPU per request from /proc: no route; every request routed by its key to the one arm of
a split (the routing alone); a 90/10 split over two versions (routing, plus a second index in the
caches and two coalescing lanes); a shadow of 5 %.
Memory: the server's resident set after loading one version, then two.

    python -m bench.rollouts [--docs 100000] [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from dotcos_client import Client, DotcosError

from bench.scaleout import build_collection
from bench.service_load import BIN, Server, start_dotcos
from index_builder.synthetic import TwoTowerSpec, two_tower

TOKEN = "bench-token"
CLIENTS = 16
DIM = 48


def dotcos_build(root: Path, *argv: str) -> None:
    subprocess.run(
        [str(BIN / "dotcos-build"), argv[0], "--name", "items", "--root", str(root), *argv[1:]],
        check=True,
        capture_output=True,
    )


def load(server: Server, queries: np.ndarray, seconds: float, keyed: bool) -> tuple[int, int]:
    """Requests answered and failed by CLIENTS threads in `seconds`."""
    stop = threading.Event()
    done, failed = [0] * CLIENTS, [0] * CLIENTS

    def client(slot: int) -> None:
        with Client(server.url, timeout=30, retries=0) as dotcos:
            i = slot
            while not stop.is_set():
                try:
                    dotcos.search(
                        "items", queries[i % len(queries)], metric="cosine", route_key=f"user-{i}" if keyed else None
                    )
                    done[slot] += 1
                except DotcosError:
                    failed[slot] += 1
                i += CLIENTS

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(done), sum(failed)


def configure(server: Server, root: Path, route: list[str]) -> None:
    dotcos_build(root, "route", *route)
    httpx.post(f"{server.url}/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)


def routing_decision(count: int = 200_000) -> dict[str, float]:
    """µs per request of what routing adds on the request path: the query string parsed for the
    routing fields and the version picked, with and without a route key."""
    from index_builder.artifact.serving import Route
    from service.api.binary import binary_routing
    from service.core.serving import Served

    version: Any = type("V", (), {"collection": "items", "manifest": None})()
    served = Served(
        {"v1": version, "v2": version},
        {"current": "v1", "candidate": "v2"},
        Route(split={"current": 90, "candidate": 10}),
    )
    out = {}
    for name, query in (
        ("no route key", "k=10&metric=cosine"),
        ("route key, two arms", "k=10&metric=cosine&route_key=user-{}"),
    ):
        start = time.perf_counter()
        for i in range(count):
            served.pick(binary_routing(query.format(i)))
        out[name] = round((time.perf_counter() - start) / count * 1e6, 2)
    return out


def rss_mb(server: Server) -> float:
    """Resident memory of the server process, MiB."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("bench/.work/rollouts"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    docs, queries = two_tower(TwoTowerSpec(docs=args.docs, queries=2000, dim=DIM, clusters=64, seed=0))
    np.save(args.work / "docs.npy", docs)
    root = args.work / "root"
    shutil.rmtree(root, ignore_errors=True)
    for version in ("v1", "v2"):
        build_collection(
            root, args.work / "docs.npy", "items", "hnsw", "--version", version, "--model", "m1", metrics="cosine"
        )
    dotcos_build(root, "activate", "--version", "v1")
    dotcos_build(root, "route", "--clear")
    env = {"DOTCOS_ADMIN_TOKEN": TOKEN, "DOTCOS_LIVE_RECALL_SAMPLE": "0", "DOTCOS_QUERY_LOG": "false"}
    memory: dict[str, float] = {}
    server = start_dotcos(root, args.work / "one.log", env)
    load(server, queries, 2, keyed=False)
    memory["one version"] = rss_mb(server)
    server.stop()
    dotcos_build(root, "alias", "--set", "candidate=v2")
    dotcos_build(root, "alias", "--set", "same=v1")
    server = start_dotcos(root, args.work / "two.log", env)
    configs = {
        "no route": (["--clear"], False),
        "routed, one arm (current=100), route_key on every request": (["--split", "current=100"], True),
        "split 90/10 between two labels of one version, route_key on every request": (
            ["--split", "current=90,same=10"],
            True,
        ),
        "split 90/10, route_key on every request": (["--split", "current=90,candidate=10"], True),
        "shadow 5 %": (["--shadow", "candidate", "--sample", "0.05"], False),
    }
    cpu: dict[str, list[float]] = {name: [] for name in configs}
    qps: dict[str, list[float]] = {name: [] for name in configs}
    failures = 0
    shadow: Any = None
    try:
        load(server, queries, 2, keyed=False)
        memory["two versions"] = rss_mb(server)
        for turn in range(args.rounds):
            for name, (route, keyed) in list(configs.items())[:: 1 if turn % 2 == 0 else -1]:
                configure(server, root, ["--clear"])
                configure(server, root, route)
                before = server.cpu_seconds()
                done, failed = load(server, queries, args.seconds, keyed)
                cpu[name].append((server.cpu_seconds() - before) / max(done, 1))
                qps[name].append(done / args.seconds)
                failures += failed
                if name.startswith("shadow"):
                    with Client(server.url) as dotcos:
                        shadow = dotcos.info("items")["shadow"]
    finally:
        server.stop()
    base = statistics.median(cpu["no route"])
    rows = [
        {
            "config": name,
            "server_cpu_us": round(statistics.median(values) * 1e6, 1),
            "x_no_route": round(statistics.median(values) / base, 3),
            "per_round": [round(v / b, 3) for v, b in zip(values, cpu["no route"], strict=True)],
            "qps": round(statistics.median(qps[name])),
        }
        for name, values in cpu.items()
    ]
    decision = routing_decision()
    result = {
        "params": {**vars(args), "work": str(args.work), "out": str(args.out), "cores": os.cpu_count()},
        "rows": rows,
        "memory_mb": memory,
        "failures": failures,
        "shadow": shadow,
        "decision_us": decision,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rollouts.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# What a rollout costs",
        "",
        f"`python -m bench.rollouts --docs {args.docs} --seconds {args.seconds} --rounds {args.rounds}`, "
        f"{os.cpu_count()} cores, {CLIENTS} client threads, raw float32 bodies, cosine, HNSW; the "
        "configurations take turns on one server, forward and backward round after round; server CPU per "
        "request from /proc. Per-round ratios show this machine's noise. The split between two labels of "
        "one version (`same` aliases v1) costs the routing alone; the split to the candidate adds what a "
        "second served version costs: its requests form their own coalescing lanes (smaller batches) and "
        "its graph competes for the caches.",
        "",
        "| configuration | server CPU µs / request | × no route (median) | × no route, per round | QPS |",
        "|---|---|---|---|---|",
        *[
            f"| {r['config']} | {r['server_cpu_us']} | {r['x_no_route']} | {r['per_round']} | {r['qps']} |"
            for r in rows
        ],
        "",
        f"Failed requests: {failures}. The shadow's figures after its last turn: `{json.dumps(shadow)}`.",
        "",
        "The routing decision alone, timed in-process over 200,000 requests (parsing the binary search's "
        "query string and picking the version): "
        + ", ".join(f"{name} {us} µs" for name, us in decision.items())
        + f"; against the {rows[0]['server_cpu_us']} µs of server CPU a request costs, the route key adds "
        f"{(decision['route key, two arms'] - decision['no route key']) / rows[0]['server_cpu_us']:.2%}.",
        "",
        "| served | server resident memory MiB |",
        "|---|---|",
        *[f"| {name} | {mb:.0f} |" for name, mb in memory.items()],
        "",
    ]
    (args.out / "rollouts.md").write_text("\n".join(lines))
    plot(args.out, rows, memory)
    print("\n".join(lines))


def plot(out: Path, rows: list[dict[str, Any]], memory: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.bar([r["config"].split(",")[0] for r in rows], [r["x_no_route"] for r in rows])
    left.tick_params(axis="x", labelrotation=10)
    left.axhline(1.03, color="orange", linestyle="--", label="routing target 1.03")
    left.axhline(1.05, color="red", linestyle="--", label="shadow target 1.05")
    left.set_title("server CPU per request, × no route")
    left.legend()
    right.bar(list(memory), list(memory.values()))
    right.set_title("server resident memory, MiB")
    fig.tight_layout()
    fig.savefig(out / "rollouts.png", dpi=100)


if __name__ == "__main__":
    main()
