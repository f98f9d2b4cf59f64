"""Run the benchmark: `python -m bench.run --dataset quick` (or full, or --docs/--queries .npy)."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench import datasets, inprocess, report, service_load
from index_builder.artifact.layout import read_current, version_dir
from index_builder.artifact.manifest import read_manifest
from index_builder.cli import main as build_main
from service.settings import ServiceSettings

CONNECTIONS = (1, 16, 64)


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="quick", choices=sorted(datasets.PRESETS))
    parser.add_argument("--docs", type=Path, help="your own documents .npy (with --queries)")
    parser.add_argument("--queries", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--workdir", type=Path, default=Path("bench/.work"))
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each wrk run")
    parser.add_argument("--sweep-queries", type=int, default=500, help="queries for recall and batched QPS")
    parser.add_argument("--single-queries", type=int, default=100, help="of those, timed one query per call")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=0.25,
        help="each in-process QPS figure repeats its pass over the queries at least this long",
    )
    parser.add_argument("--configs", default=",".join(inprocess.CONFIGS))
    parser.add_argument("--no-peers", action="store_true", help="skip hnswlib and usearch")
    parser.add_argument("--no-chroma", action="store_true", help="skip the Chroma server baseline")
    return parser.parse_args()


def _dotcos_runs(
    root: Path,
    label: str,
    env: dict[str, str],
    targets: list[tuple[str, str]],
    queries: np.ndarray,
    args: argparse.Namespace,
    reference: dict[str, dict[str, dict[str, float]]],
) -> list[dict[str, Any]]:
    """One dotcos-serve process driven on each (collection, metric) at every concurrency, plus the tiny one."""
    rows: list[dict[str, Any]] = []
    bodies_dir = args.workdir / "bodies"
    server = service_load.start_dotcos(root, args.workdir / f"{label}.log", env)
    try:
        for target, metric in targets:
            bodies = service_load.write_bodies(
                bodies_dir / f"{target}-{metric}.jsonl", queries, {"k": 10, "metric": metric}
            )
            ref = reference[target][metric]
            for c in CONNECTIONS:
                run = service_load.wrk(server, f"/v1/collections/{target}/search", bodies, c, args.seconds)
                rows.append(
                    {
                        "server": label,
                        "target": target,
                        "metric": metric,
                        **run,
                        "x_faiss_single": round(run["qps"] / ref["qps_single"], 2),
                        "x_faiss_batch": round(run["qps"] / ref["qps_batch"], 2),
                    }
                )
        tiny = service_load.write_bodies(
            bodies_dir / "tiny.jsonl", datasets.two_tower_queries(32), {"k": 1, "metric": "dot"}
        )
        for c in (1, 16):
            rows.append(
                {
                    "server": label,
                    "target": "tiny (1k, k=1)",
                    "metric": "dot",
                    **service_load.wrk(server, "/v1/collections/tiny/search", tiny, c, args.seconds),
                }
            )
    finally:
        server.stop()
    return rows


def _service_runs(
    root: Path, data: datasets.Dataset, args: argparse.Namespace, reference: dict[str, dict[str, dict[str, float]]]
) -> list[dict[str, Any]]:
    (args.workdir / "bodies").mkdir(parents=True, exist_ok=True)
    bodies_dir = args.workdir / "bodies"
    queries = data.queries[:200]
    hnsw = [("hnsw-ip", "dot"), ("hnsw-ip", "cosine")]
    rows = _dotcos_runs(root, "dotcos", {}, [*hnsw, ("flat", "dot")], queries, args, reference)
    workers = os.cpu_count() or 1
    if workers > 1:
        rows += _dotcos_runs(
            root, f"dotcos ({workers} workers)", {"DOTCOS_WORKERS": str(workers)}, hnsw, queries, args, reference
        )
    version = version_dir(root, "hnsw-ip", read_current(root, "hnsw-ip"))
    ef = read_manifest(version).metrics["dot"].index.search_params["efSearch"]
    minimal = service_load.start_minimal(version / "dot.faiss", ef, args.workdir / "minimal.log")
    try:
        bodies = service_load.write_bodies(bodies_dir / "minimal.jsonl", queries, {"k": 10})
        for c in CONNECTIONS:
            run = service_load.wrk(minimal, "/search", bodies, c, args.seconds)
            rows.append(
                {
                    "server": "minimal FastAPI+FAISS",
                    "target": "hnsw-ip",
                    "metric": "dot",
                    **run,
                    "x_faiss_single": round(run["qps"] / reference["hnsw-ip"]["dot"]["qps_single"], 2),
                    "x_faiss_batch": round(run["qps"] / reference["hnsw-ip"]["dot"]["qps_batch"], 2),
                }
            )
    finally:
        minimal.stop()
    return rows + _chroma_runs(root, data, args, reference, queries)


def _chroma_runs(
    root: Path,
    data: datasets.Dataset,
    args: argparse.Namespace,
    reference: dict[str, dict[str, dict[str, float]]],
    queries: np.ndarray,
) -> list[dict[str, Any]]:
    """Chroma server, HNSW with dotcos's graph parameters and default efSearch, same data and queries."""
    venv = service_load.chroma_venv(args.workdir)
    if venv is None or args.no_chroma:
        return []
    shutil.rmtree(args.workdir / "chroma-db", ignore_errors=True)
    server = service_load.start_chroma(venv, args.workdir)
    manifest = read_manifest(version_dir(root, "hnsw-ip", read_current(root, "hnsw-ip")))
    rows: list[dict[str, Any]] = []
    try:
        for metric, space in (("dot", "ip"), ("cosine", "cosine")):
            ef = manifest.metrics[metric].index.search_params["efSearch"]
            started = time.perf_counter()
            collection = service_load.load_chroma(venv, server, data.docs_path, f"bench-{metric}", space, ef)
            load_s = round(time.perf_counter() - started, 1)
            bodies = service_load.write_bodies(
                args.workdir / "bodies" / f"chroma-{metric}.jsonl",
                queries,
                {"n_results": 10, "include": ["distances"]},
                key="query_embeddings",
                nest=True,
            )
            path = service_load.CHROMA_QUERY.format(id=collection)
            ref = reference["hnsw-ip"][metric]
            for c in CONNECTIONS:
                run = service_load.wrk(server, path, bodies, c, args.seconds)
                rows.append(
                    {
                        "server": f"chroma (load {load_s}s)",
                        "target": "hnsw",
                        "metric": metric,
                        **run,
                        "x_faiss_single": round(run["qps"] / ref["qps_single"], 2),
                        "x_faiss_batch": round(run["qps"] / ref["qps_batch"], 2),
                    }
                )
    finally:
        server.stop()
    return rows


def main() -> None:
    args = _args()
    # In-process FAISS gets the service's deliberate BLAS threshold: with FAISS's own default
    # (128000 in 1.15) a batch of a few hundred flat queries takes the slow non-BLAS path,
    # which would flatter every ratio against "batched FAISS".
    faiss.cvar.distance_compute_blas_threshold = ServiceSettings().blas_threshold
    name = args.docs.stem if args.docs else args.dataset
    data = datasets.load(name, args.workdir / "data", args.docs, args.queries)
    queries = data.queries[: args.sweep_queries]
    timing = inprocess.Timing(min(args.single_queries, len(queries)), args.min_seconds)
    root = args.workdir / f"indexes-{name}"
    shutil.rmtree(root, ignore_errors=True)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    truth = inprocess.ground_truth(data, queries)
    rows: list[dict[str, Any]] = []
    for config in args.configs.split(","):
        built = inprocess.build(config, data, root)
        rows += inprocess.sweep_ours(config, root, queries, truth, built, timing)
        print(f"{config}: built in {built['build_s']}s", flush=True)
    if not args.no_peers:
        rows += inprocess.sweep_peers(data, queries, truth, timing)
    reference = {c: inprocess.faiss_reference(root, c, queries, timing) for c in ("hnsw-ip", "flat")}
    assert (
        build_main(
            [
                "build",
                "--input",
                str(datasets.tiny(args.workdir / "data")),
                "--name",
                "tiny",
                "--root",
                str(root),
                "--metrics",
                "dot",
                "--quiet",
            ]
        )
        == 0
    )
    service = _service_runs(root, data, args, reference)
    meta = {
        "docs": int(data.docs.shape[0]),
        "dim": int(data.docs.shape[1]),
        "queries": len(queries),
        "single_queries": timing.single_queries,
        "min_seconds_per_qps": timing.min_seconds,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "faiss": faiss.__version__,
        "started": started,
        "seconds_per_load_run": args.seconds,
        "blas_threshold": faiss.cvar.distance_compute_blas_threshold,
    }
    notes = (
        []
        if service_load.chroma_venv(args.workdir)
        else ["Chroma baseline skipped: chromadb did not install (see bench/setup.sh)."]
    )
    if args.no_chroma or args.no_peers:
        notes.append(
            f"Run with --configs {args.configs}{' --no-peers' if args.no_peers else ''}"
            f"{' --no-chroma' if args.no_chroma else ''}: baselines left out to fit the time available."
        )
    notes.append("Chroma runs HNSW with dotcos's graph parameters (M=32, efConstruction=128) and default efSearch.")
    report.write(
        args.out,
        name,
        {"meta": meta, "inprocess": rows, "faiss_reference": reference, "service": service, "notes": notes},
    )
    print(f"wrote {args.out / name}.md, .json, .png")


if __name__ == "__main__":
    main()
