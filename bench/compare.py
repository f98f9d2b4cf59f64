"""Two `bench.run` results side by side: the service rows before and after a change.

    git worktree add /tmp/before <commit>
    (cd /tmp/before && PYTHONPATH=. python -m bench.run ... --out /tmp/bench-before)
    python -m bench.run ... --out /tmp/bench-after
    python -m bench.compare /tmp/bench-before/quick.json /tmp/bench-after/quick.json --name onepath-service

Both runs should come from one sitting on one machine; the ratio column is after over before per
row (the unchanged minimal FastAPI+FAISS baseline rows show how much is noise).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _rows(result: dict[str, Any]) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    return {(r["server"], r["target"], r["metric"], r["connections"]): r for r in result["service"]}


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    old, new = _rows(before), _rows(after)
    return [
        {
            "server": key[0],
            "target": key[1],
            "metric": key[2],
            "clients": key[3],
            "qps_before": old[key]["qps"],
            "qps_after": new[key]["qps"],
            "ratio": round(new[key]["qps"] / old[key]["qps"], 2),
            "p50_before": old[key]["p50_ms"],
            "p50_after": new[key]["p50_ms"],
        }
        for key in old
        if key in new
    ]


def report(name: str, rows: list[dict[str, Any]], before: dict[str, Any], after: dict[str, Any]) -> str:
    lines = [
        f"# Service before/after: {name}",
        "",
        f"`python -m bench.run` on each tree in one sitting ({before['meta'].get('started', '?')} and "
        f"{after['meta'].get('started', '?')}), then `python -m bench.compare`. One run each: the "
        "minimal FastAPI+FAISS rows (the same code in both) show the noise.",
        "",
        "| server | target | metric | clients | QPS before | QPS after | after/before | p50 ms before | p50 ms after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['server']} | {r['target']} | {r['metric']} | {r['clients']} | {r['qps_before']:.0f} | "
        f"{r['qps_after']:.0f} | {r['ratio']:.2f} | {r['p50_before']:.2f} | {r['p50_after']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.bar(range(len(rows)), [r["ratio"] for r in rows])
    ax.axhline(1.0, color="gray", linestyle="--")
    labels = [f"{r['server']}\n{r['target']} {r['metric']}\nc={r['clients']}" for r in rows]
    ax.set_xticks(range(len(rows)), labels, fontsize=5)
    ax.set(ylabel="QPS after / before", title="Service QPS, after over before")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    before, after = (json.loads(p.read_text()) for p in (args.before, args.after))
    rows = compare(before, after)
    (args.out / f"{args.name}.md").write_text(report(args.name, rows, before, after))
    (args.out / f"{args.name}.json").write_text(json.dumps({"before": before, "after": after, "rows": rows}, indent=1))
    plot(args.out / f"{args.name}.png", rows)
    print(f"wrote {args.out / args.name}.md, .json, .png")


if __name__ == "__main__":
    main()
