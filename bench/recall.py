"""Recall on real shifted traffic: the default knob a build picks without user queries, live
recall adapting it, and what the live monitor costs.

Run: python -m bench.recall  (writes bench/results/shifted.md, .json and .png)

Data: bench/data/shifted.npz (bench.text_embeddings: Debian package descriptions as documents,
Python module docstrings as queries, MiniLM). Rows:
1. the default efSearch each way of tuning picks, and the recall@10 the real queries get at it:
   documents as queries (what a build did before), the Gaussian proxies a build now uses without
   --queries, and the real queries themselves (the reference);
2. live adaptation: the documents-tuned version served with live recall at 100 % sampling, the
   real queries sent in rounds, its default knob and live figure after each round, then the
   recall the real queries get at the final default (numpy brute force);
3. the monitor's cost: service QPS at 16 and 64 clients with live recall at its default
   sampling against off, alternating rounds, same server build.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from dotcos_client import Client

from bench.scaleout import build_collection
from bench.service_load import start_dotcos, write_bodies, wrk

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

K = 10
EXTRA: dict[str, str] = {}


def true_top(metric: str, docs: np.ndarray, queries: np.ndarray) -> np.ndarray:
    scores = queries @ docs.T
    if metric == "cosine":
        scores = scores / np.linalg.norm(docs, axis=1)[None, :] / np.linalg.norm(queries, axis=1)[:, None]
    return np.sort(scores, axis=1)[:, ::-1][:, K - 1]


def served_recall(url: str, name: str, metric: str, queries: np.ndarray, kth: np.ndarray, ef: int | None) -> float:
    hits = 0
    with Client(url, timeout=30) as client:
        for q, bound in zip(queries, kth, strict=True):
            result = client.search(name, q, K, metric=metric, ef_search=ef)
            hits += sum(h.score >= bound - 1e-5 * max(abs(bound), 1) for h in result)
    return hits / (K * len(queries))


def defaults(work: Path, docs: np.ndarray, queries: np.ndarray) -> list[dict[str, Any]]:
    """Builds tuned on documents, on proxies (no --queries) and on real queries; recall of real queries at each."""
    root = work / "root"
    np.save(work / "docs.npy", docs)
    np.save(work / "doc-queries.npy", docs[np.random.default_rng(0).choice(len(docs), 1000, replace=False)])
    np.save(work / "real-queries.npy", queries[:500])
    extra = ("--version", "v1")
    build_collection(
        root,
        work / "docs.npy",
        "documents",
        "hnsw",
        "--queries",
        str(work / "doc-queries.npy"),
        *extra,
        metrics="dot,cosine",
    )
    build_collection(root, work / "docs.npy", "proxies", "hnsw", *extra, metrics="dot,cosine")
    build_collection(
        root,
        work / "docs.npy",
        "real",
        "hnsw",
        "--queries",
        str(work / "real-queries.npy"),
        *extra,
        metrics="dot,cosine",
    )
    held_out = queries[500:]
    server = start_dotcos(
        root, work / "server-defaults.log", {"DOTCOS_LIVE_RECALL_SAMPLE": "0", "DOTCOS_QUERY_LOG": "false"}
    )
    rows = []
    try:
        with Client(server.url) as client:
            for name in ("documents", "proxies", "real"):
                info = client.info(name)["metrics"]
                for metric in ("dot", "cosine"):
                    ef = info[metric]["search_params"]["efSearch"]
                    kth = true_top(metric, docs, held_out)
                    rows.append(
                        {
                            "tuned on": name,
                            "metric": metric,
                            "efSearch": ef,
                            "self_check_recall": info[metric]["recall_at_10"],
                            "real_recall": round(served_recall(server.url, name, metric, held_out, kth, ef), 4),
                        }
                    )
    finally:
        server.stop()
    return rows


def adaptation(work: Path, docs: np.ndarray, queries: np.ndarray, rounds: int) -> list[dict[str, Any]]:
    """The documents-tuned version under real traffic with live recall adapting its knob."""
    env = {"DOTCOS_LIVE_RECALL_SAMPLE": "1", "DOTCOS_LIVE_RECALL_CPU_SHARE": "0.5", "DOTCOS_QUERY_LOG": "false"}
    server = start_dotcos(work / "root", work / "server-adapt.log", env)
    rng = np.random.default_rng(4)
    trace = []
    try:
        with Client(server.url, timeout=30) as client:
            for step in range(rounds):
                for q in queries[rng.choice(len(queries), 100, replace=False)]:
                    client.search("documents", q, metric="cosine")
                time.sleep(1.0)
                info = client.info("documents")["metrics"]["cosine"]
                trace.append({"round": step + 1, "efSearch": info["search_params"]["efSearch"], **info["live_recall"]})
            final = trace[-1]["efSearch"]
            kth = true_top("cosine", docs, queries[:300])
            trace[-1]["real_recall_at_final_default"] = round(
                served_recall(server.url, "documents", "cosine", queries[:300], kth, None), 4
            )
            trace[-1]["final_default"] = final
    finally:
        server.stop()
    return trace


def monitor_cost(work: Path, queries: np.ndarray, seconds: float, rounds: int) -> list[dict[str, Any]]:
    """QPS and server CPU per request with live recall off and at its default sampling: two
    servers side by side, runs alternating between them `rounds` times."""
    bodies = write_bodies(work / "bodies.jsonl", queries, {"k": K, "metric": "dot"})
    servers = {
        label: start_dotcos(
            work / "root",
            work / f"server-{label}.log",
            {"DOTCOS_LIVE_RECALL_SAMPLE": share, "DOTCOS_QUERY_LOG": "false", **EXTRA},
        )
        for label, share in (("off", "0"), ("default", "0.01"))
    }
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    try:
        for _ in range(rounds):
            for clients in (16, 64):
                for label, server in servers.items():
                    run = wrk(server, "/v1/collections/proxies/search", bodies, clients, seconds)
                    runs.setdefault((label, clients), []).append(run)
    finally:
        for server in servers.values():
            server.stop()
    rows = []
    for clients in (16, 64):
        off, on = runs[("off", clients)], runs[("default", clients)]
        ratios = [round(b["qps"] / a["qps"], 3) for a, b in zip(off, on, strict=True)]
        rows.append(
            {
                "clients": clients,
                "qps_off": round(statistics.median(r["qps"] for r in off)),
                "qps_default": round(statistics.median(r["qps"] for r in on)),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratios": ratios,
                "cpu_us_off": round(statistics.median(r["server_cpu_us"] for r in off), 1),
                "cpu_us_default": round(statistics.median(r["server_cpu_us"] for r in on), 1),
            }
        )
    return rows


def report(result: dict[str, Any]) -> str:
    lines = [
        "# Recall on real shifted traffic",
        "",
        f"{result['docs']:,} Debian package descriptions as documents, {result['queries']:,} Python module "
        "docstrings as queries (all-MiniLM-L6-v2, mean pooling, not normalized; `bench/data/shifted.npz`); "
        "`--index hnsw`. Command: `python -m bench.recall`.",
        "",
        "## The default knob a build picks, and what real queries get at it (held-out queries)",
        "",
        "| tuned on | metric | default efSearch | self-check recall@10 | real queries' recall@10 |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['tuned on']} | {r['metric']} | {r['efSearch']} | {r['self_check_recall']} | {r['real_recall']} |"
        for r in result["defaults"]
    ]
    lines += [
        "",
        "## Live adaptation (the documents-tuned version, cosine, 100 real queries per round)",
        "",
        "| round | default efSearch after | live recall@10 (at that value) | samples | interval |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {t['round']} | {t['efSearch']} | {t['recall_at_10']} | {t['samples']} | [{t['lower']}, {t['upper']}] |"
        for t in result["adaptation"]
    ]
    last = result["adaptation"][-1]
    lines += [
        "",
        f"Recall@10 of real queries at the final default (efSearch {last['final_default']}): "
        f"{last['real_recall_at_final_default']}.",
        "",
        "## Cost of the live monitor (default 1 % sampling against off; wrk, dot)",
        "",
        "| clients | QPS off | QPS at default sampling | ratio (median; each round) "
        "| server CPU µs/request off | at default |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['clients']} | {r['qps_off']} | {r['qps_default']} | {r['ratio_median']} "
        f"({', '.join(map(str, r['ratios']))}) | {r['cpu_us_off']} | {r['cpu_us_default']} |"
        for r in result["monitor_cost"]
    ]
    return "\n".join(lines) + "\n"


def plot(path: Path, result: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    trace = result["adaptation"]
    ax.plot([t["round"] for t in trace], [t["efSearch"] for t in trace], marker="o")
    ax.set(
        xlabel="round of 100 real queries", ylabel="default efSearch (cosine)", title="Live recall holding the target"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("bench/data/shifted.npz"))
    parser.add_argument("--workdir", type=Path, default=Path("bench/.work/recall"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--cost-rounds", type=int, default=8)
    args = parser.parse_args()
    import shutil

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    data = np.load(args.data)
    docs, queries = data["docs"].astype(np.float32), data["queries"].astype(np.float32)
    result = {
        "docs": len(docs),
        "queries": len(queries),
        "defaults": defaults(args.workdir, docs, queries),
        "adaptation": adaptation(args.workdir, docs, queries, args.rounds),
        "monitor_cost": monitor_cost(args.workdir, queries, args.seconds, args.cost_rounds),
    }
    (args.out / "shifted.json").write_text(json.dumps(result, indent=1))
    (args.out / "shifted.md").write_text(report(result))
    plot(args.out / "shifted.png", result)
    print(f"wrote {args.out}/shifted.md, .json, .png")


if __name__ == "__main__":
    main()
