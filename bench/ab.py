"""Service before/after a change, side by side in one run: the same collections served by two source trees.

    git worktree add /tmp/before <commit>
    python -m bench.ab --before /tmp/before --name onepath

Both servers are this repository's `dotcos-serve` console script; the "before" one imports its
packages from the other tree (PYTHONPATH), so everything else (Python, FAISS, the artifacts, the
machine) is the same. Runs alternate before/after for every row, `--rounds` times, and each
row reports the median QPS and p50 of its rounds with the after/before ratio. Rows: a tiny
collection (1k x 32, flat, k=1, 1 client: the per-request floor), an HNSW collection at 16 and 64
clients, and the same corpus sharded in 2 and 4 parts served in one process at 16 clients (with
its ratio to the unsharded collection served by the same tree). Server CPU per request (the
server's process tree, from /proc) is the figure least moved by a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from bench.scaleout import build_collection
from bench.service_load import start_dotcos, write_bodies, wrk
from index_builder.synthetic import TwoTowerSpec, two_tower

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROWS = [
    ("tiny", "tiny", 1, 1),
    ("hnsw", "hnsw", 16, 10),
    ("hnsw", "hnsw", 64, 10),
    ("sharded", "sharded2", 16, 10),
    ("sharded", "sharded4", 16, 10),
]


METRICS = "dot,cosine"
VERSION = ("--version", "v1")


def _collections(work: Path, docs: int, dim: int) -> tuple[Path, dict[str, Path]]:
    root = work / "root"
    tiny, tiny_q = two_tower(TwoTowerSpec(docs=1000, queries=200, dim=32, seed=1))
    big, big_q = two_tower(TwoTowerSpec(docs=docs, queries=500, dim=dim, seed=2))
    np.save(work / "tiny.npy", tiny)
    np.save(work / "big.npy", big)
    if not (root / "tiny").exists():
        build_collection(root, work / "tiny.npy", "tiny", "flat", *VERSION, metrics=METRICS)
        build_collection(root, work / "big.npy", "hnsw", "hnsw", *VERSION, metrics=METRICS)
        for shards in (2, 4):
            build_collection(
                root, work / "big.npy", f"sharded{shards}", "hnsw", "--shards", str(shards), *VERSION, metrics=METRICS
            )
    bodies = {
        k: write_bodies(work / f"bodies-{name}-k{k}.jsonl", q, {"k": k, "metric": "dot"})
        for name, q, k in (("tiny", tiny_q, 1), ("big", big_q, 10))
    }
    return root, {"tiny": bodies[1], "hnsw": bodies[10], "sharded": bodies[10]}


def _measure(
    tree: str,
    before: Path | None,
    root: Path,
    work: Path,
    bodies: dict[str, Path],
    seconds: float,
) -> list[dict[str, Any]]:
    env = {"PYTHONPATH": str(before)} if before is not None else {}
    server = start_dotcos(root, work / f"server-{tree}.log", env)
    try:
        rows = []
        for kind, collection, clients, _ in ROWS:
            wrk(server, f"/v1/collections/{collection}/search", bodies[kind], clients, 1)
            run = wrk(server, f"/v1/collections/{collection}/search", bodies[kind], clients, seconds)
            rows.append({"tree": tree, "row": f"{collection} @{clients}", **run})
        unsharded = wrk(server, "/v1/collections/hnsw/search", bodies["hnsw"], 16, seconds)
        rows.append({"tree": tree, "row": "hnsw @16 (beside sharded)", **unsharded})
        return rows
    finally:
        server.stop()


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for row in dict.fromkeys(r["row"] for r in runs):
        before = [r for r in runs if r["row"] == row and r["tree"] == "before"]
        after = [r for r in runs if r["row"] == row and r["tree"] == "after"]
        entry: dict[str, Any] = {"row": row, "errors": sum(r["errors"] for r in before + after)}
        for key in ("qps", "p50_ms", "server_cpu_us"):
            entry[f"before_{key}"], entry[f"after_{key}"] = _median(before, key), _median(after, key)
            entry[f"{key}_after_over_before"] = round(entry[f"after_{key}"] / max(entry[f"before_{key}"], 1e-9), 3)
        entry["qps_ratio_per_round"] = [
            round(a["qps"] / max(b["qps"], 1e-9), 2) for a, b in zip(after, before, strict=True)
        ]
        table.append(entry)
    by_row = {e["row"]: e for e in table}
    plain = by_row["hnsw @16 (beside sharded)"]
    for shards in (2, 4):
        sharded = by_row[f"sharded{shards} @16"]
        for tree in ("before", "after"):
            sharded[f"{tree}_sharded_over_unsharded"] = round(
                sharded[f"{tree}_qps"] / max(plain[f"{tree}_qps"], 1e-9), 3
            )
    return table


def write(out: Path, name: str, meta: dict[str, Any], runs: list[dict[str, Any]], table: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "runs": runs, "table": table}, indent=1) + "\n")
    lines = [
        f"# dotcos before/after: {name}",
        "",
        f"{meta['docs']} x {meta['dim']} two-tower-like documents (HNSW32, dot), tiny = 1k x 32 flat (k=1); "
        f"before = `{meta['before']}`, after = `{meta['after']}`; {meta['rounds']} alternating rounds of "
        f"{meta['seconds']} s per row, medians; wrk on the same 2 cores as the server; {meta['started']}.",
        "",
        "| row | QPS before | QPS after | after/before (each round) | p50 ms before | p50 ms after "
        "| server CPU µs/request before | after | after/before |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        rounds = ", ".join(f"{x:.2f}" for x in e["qps_ratio_per_round"])
        lines.append(
            f"| {e['row']} | {e['before_qps']:.0f} | {e['after_qps']:.0f} "
            f"| {e['qps_after_over_before']:.2f} ({rounds}) "
            f"| {e['before_p50_ms']:.2f} | {e['after_p50_ms']:.2f} | {e['before_server_cpu_us']:.0f} "
            f"| {e['after_server_cpu_us']:.0f} | {e['server_cpu_us_after_over_before']:.2f} |"
        )
    lines.append("")
    for e in table:
        if "before_sharded_over_unsharded" in e:
            lines.append(
                f"{e['row']}: sharded over unsharded (same tree, 16 clients): before "
                f"{e['before_sharded_over_unsharded']:.2f}x, after {e['after_sharded_over_unsharded']:.2f}x."
            )
    lines.append("")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [e["row"] for e in table]
    x = np.arange(len(labels))
    ax.bar(x - 0.2, [e["before_qps"] for e in table], 0.4, label="before")
    ax.bar(x + 0.2, [e["after_qps"] for e in table], 0.4, label="after")
    ax.set_xticks(x, labels, rotation=15, fontsize=8)
    ax.set(ylabel="QPS (median of rounds)", title=f"{name}: service QPS before and after")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the tree to compare against")
    parser.add_argument("--name", default="ab")
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workdir", type=Path, default=Path("bench/.work/ab"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    root, bodies = _collections(args.workdir, args.docs, args.dim)
    runs: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        runs += _measure("before", args.before.resolve(), root, args.workdir, bodies, args.seconds)
        runs += _measure("after", None, root, args.workdir, bodies, args.seconds)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    base = subprocess.run(
        ["git", "-C", str(args.before), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    meta = {
        "docs": args.docs,
        "dim": args.dim,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "before": base,
        "after": head,
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    table = summarize(runs)
    write(args.out, args.name, meta, runs, table)
    print((args.out / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
