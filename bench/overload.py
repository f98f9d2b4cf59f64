"""Overload: what happens at 1x, 2x and 5x the load the service admits (DOTCOS_MAX_PENDING).

Run: python -m bench.overload  (writes bench/results/overload.md and .json)
wrk keeps N connections busy; with max_pending = P, N = P is the sustainable load and
N = 2P, 5P push past it. Reported: goodput (200s per second), shed share (503s), p50/p99 of
all responses (sheds included), and errors other than 503.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from bench.service_load import start_dotcos, write_bodies, wrk
from index_builder.cli import main as build_main
from index_builder.synthetic import TwoTowerSpec, two_tower


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pending", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=Path("bench/.work/overload"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--env", nargs="*", default=[], help="extra server environment, NAME=VALUE")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    docs, queries = two_tower(TwoTowerSpec(docs=200_000, queries=200, dim=64, seed=7))
    np.save(args.workdir / "docs.npy", docs)
    root = args.workdir / "indexes"
    assert (
        build_main(
            [
                "build",
                "--input",
                str(args.workdir / "docs.npy"),
                "--name",
                "flat",
                "--root",
                str(root),
                "--metrics",
                "dot",
                "--quiet",
            ]
        )
        == 0
    )
    env = {
        "DOTCOS_MAX_PENDING": str(args.pending),
        "DOTCOS_COALESCE_MAX_BATCH": "8",
        **dict(item.split("=", 1) for item in args.env),
    }
    server = start_dotcos(root, args.workdir / "server.log", env)
    bodies = write_bodies(args.workdir / "bodies.jsonl", queries, {"k": 10, "metric": "dot"})
    rows = []
    try:
        for factor in (1, 2, 5):
            run = wrk(server, "/v1/collections/flat/search", bodies, factor * args.pending, args.seconds)
            rows.append({"load": f"{factor}x", **run})
    finally:
        server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overload.json").write_text(json.dumps({"pending": args.pending, "runs": rows}, indent=1) + "\n")
    lines = [
        "# Overload shedding",
        "",
        f"Flat 200k × 64, DOTCOS_MAX_PENDING={args.pending}; wrk with pending × {{1, 2, 5}} connections, "
        f"{args.seconds} s each. Latencies include the 503 answers; every non-2xx here is a 503.",
        "",
        "| load | connections | answers/s | goodput (200/s) | shed share | p50 ms | p99 ms | other errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['load']} | {r['connections']} | {r['qps']:.0f} | {r['goodput']:.0f} | "
            f"{r['shed_share']:.0%} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['other_errors']} |"
        )
    (args.out / "overload.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
