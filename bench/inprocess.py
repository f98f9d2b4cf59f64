"""In-process section: every index kind built by dotcos-build, its knob swept; peers on the same data.

Recall@10 is tie-aware against exact search; QPS is measured single-query on one thread and
batched on all threads, through dotcos's own search path (FAISS + exact rescoring). Each QPS
figure repeats its pass over the queries for a minimum duration, so fast indexes are not timed
over a few milliseconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from bench.datasets import Dataset
from index_builder.artifact.layout import read_current, version_dir
from index_builder.artifact.manifest import Manifest, read_manifest
from index_builder.retrieval.ann import ServedIndex, ann_topk
from index_builder.retrieval.faiss_params import search_parameters
from index_builder.retrieval.scoring import Prepared, doc_scales, exact_topk, recall_at_k, score_rows
from index_builder.retrieval.spaces import Metric, fit_metric_space, row_norms
from service.core.part import Part, load_parts

K = 10
CONFIGS: dict[str, tuple[list[str], list[str]]] = {
    "flat": (["--index", "flat"], ["dot", "cosine"]),
    "hnsw-ip": (["--index", "hnsw"], ["dot", "cosine"]),
    "hnsw-mips": (["--index", "hnsw", "--mips", "l2"], ["dot"]),
    "hnsw-ranged": (["--index", "hnsw", "--mips", "ranged"], ["dot"]),
    "ivf-ip": (["--index", "ivf"], ["dot", "cosine"]),
    "ivf-mips": (["--index", "ivf", "--mips", "l2"], ["dot"]),
    "ivf-ranged": (["--index", "ivf", "--mips", "ranged"], ["dot"]),
    "ivfpq-rerank": (["--index", "ivfpq"], ["dot", "cosine"]),
}
EF_VALUES = (16, 32, 64, 128, 256, 512, 1024)
NPROBE_VALUES = (1, 4, 16, 64, 256)
THREADS = os.cpu_count() or 1


@dataclass(frozen=True)
class Timing:
    """How QPS is timed: the first `single_queries` one per call, every pass repeated for `min_seconds`."""

    single_queries: int
    min_seconds: float


@dataclass
class Truth:
    """Exact top-10 scores per metric, and what is needed to score any returned row."""

    scores: dict[str, np.ndarray]
    scales: dict[str, np.ndarray]


def ground_truth(data: Dataset, queries: np.ndarray) -> Truth:
    norms = row_norms(np.asarray(data.docs))
    scores, scales = {}, {}
    for name in ("dot", "cosine"):
        space = fit_metric_space(Metric.parse(name), norms, None)
        scales[name] = doc_scales(space, np.asarray(data.docs), 65536)
        scores[name] = exact_topk(space, queries, np.asarray(data.docs), scales[name], K)[0]
    return Truth(scores, scales)


def build(config: str, data: Dataset, root: Path) -> dict[str, object]:
    """Run dotcos-build as a child process; wall time and the child's peak resident memory."""
    flags, metrics = CONFIGS[config]
    argv = [
        sys.executable,
        "-m",
        "index_builder",
        "build",
        "--input",
        str(data.docs_path),
        "--name",
        config,
        "--root",
        str(root),
        "--metrics",
        ",".join(metrics),
        "--queries",
        str(data.queries_path),
        "--selfcheck-queries",
        "300",
        "--quiet",
        *flags,
    ]
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise RuntimeError(f"build {config} failed with status {status}")
    return {"build_s": round(time.perf_counter() - start, 2), "build_peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def _qps(run: Callable[[], object], queries: int, min_seconds: float) -> float:
    """Queries per second of `run` (which answers `queries` queries), repeated until `min_seconds` passed."""
    passes, start = 0, time.perf_counter()
    while True:
        run()
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return passes * queries / elapsed


def _time_ours(
    served: ServedIndex, queries: np.ndarray, value: int | None, timing: Timing
) -> tuple[np.ndarray, np.ndarray, float, float]:
    faiss.omp_set_num_threads(1)
    n = timing.single_queries
    single = _qps(lambda: [ann_topk(served, queries[i : i + 1], K, value) for i in range(n)], n, timing.min_seconds)
    faiss.omp_set_num_threads(THREADS)
    found: list[tuple[np.ndarray, np.ndarray]] = []
    batch = _qps(lambda: found.append(ann_topk(served, queries, K, value)), len(queries), timing.min_seconds)
    return found[0][0], found[0][1], single, batch


def _served(root: Path, config: str) -> tuple[Manifest, Path, Part]:
    """The active version of an unsharded collection, loaded as the service loads its one part."""
    path = version_dir(root, config, read_current(root, config))
    manifest = read_manifest(path)
    return manifest, path, load_parts(manifest, path, mmap=True)[0]


def sweep_ours(
    config: str, root: Path, queries: np.ndarray, truth: Truth, built: dict[str, object], timing: Timing
) -> list[dict]:
    """Recall (all queries, batched) and QPS (the first `single_queries` one per call; all batched) per knob;
    `single_queries` is at most len(queries), here and in the other timing functions."""
    manifest, path, part = _served(root, config)
    rows = []
    for metric, served in part.indexes.items():
        entry = manifest.metrics[metric].index
        sweeps: dict[str, tuple[int | None, ...]] = {"efSearch": EF_VALUES, "nprobe": NPROBE_VALUES}
        values = sweeps.get(served.param or "", (None,))
        files = [*entry.files_for(str(entry.file)), "vectors.npy"]
        size = sum((path / f).stat().st_size for f in files)
        for value in values:
            scores, found, single, batch = _time_ours(served, queries, value, timing)
            rows.append(
                {
                    "impl": "dotcos",
                    "config": config,
                    "metric": metric,
                    "param": served.param,
                    "value": value,
                    "recall": round(recall_at_k(truth.scores[metric], scores, found), 4),
                    "qps_single": round(single, 1),
                    "qps_batch": round(batch, 1),
                    "bytes_per_vector": round(size / manifest.count, 1),
                    "default": value == entry.search_params.get(served.param or "", None),
                    **built,
                }
            )
    return rows


def faiss_reference(
    root: Path, config: str, queries: np.ndarray, timing: Timing, knobs: Mapping[str, int] | None = None
) -> dict[str, dict[str, float]]:
    """Raw FAISS on the same index at its default knob, or the one `knobs` gives for a metric (to
    compare with a service measured there): one query per call, one thread; batched, all."""
    manifest, _, part = _served(root, config)
    out = {}
    for metric, served in part.indexes.items():
        value = (knobs or {}).get(metric, manifest.metrics[metric].index.search_params.get(served.param or ""))
        out[metric] = _raw_faiss(served, queries, value, timing)
    return out


def _raw_faiss(
    served: ServedIndex, queries: np.ndarray, value: int | None, timing: Timing
) -> dict[str, float | int | None]:
    prepared = served.faiss_queries(Prepared.of(served.space, queries))
    params = search_parameters(served.param, value)
    faiss.omp_set_num_threads(1)
    n = timing.single_queries
    single = _qps(
        lambda: [index.search(prepared[i : i + 1], K, params=params) for i in range(n) for index in served.searched],
        n,
        timing.min_seconds,
    )
    faiss.omp_set_num_threads(THREADS)
    batch = _qps(
        lambda: [index.search(prepared, K, params=params) for index in served.searched],
        len(prepared),
        timing.min_seconds,
    )
    return {"qps_single": round(single, 1), "qps_batch": round(batch, 1), "value": value}


def sweep_peers(data: Dataset, queries: np.ndarray, truth: Truth, timing: Timing) -> list[dict]:
    """hnswlib (ip, cosine) and usearch (ip, cos) with M=32, efConstruction=128 like dotcos's default."""
    docs = np.ascontiguousarray(data.docs, dtype=np.float32)
    rows: list[dict] = []
    for metric in ("dot", "cosine"):
        space = fit_metric_space(Metric.parse(metric), row_norms(docs), None)
        for impl, (index, build_s, size) in _peer_indexes(docs, metric).items():
            for ef in EF_VALUES:
                single, batch, labels = _peer_run(impl, index, queries, ef, timing)
                labels = labels.astype(np.int64)
                scores = score_rows(space, queries, docs, truth.scales[metric], labels)
                rows.append(
                    {
                        "impl": impl,
                        "config": "hnsw",
                        "metric": metric,
                        "param": "ef",
                        "value": ef,
                        "recall": round(recall_at_k(truth.scores[metric], scores, labels), 4),
                        "qps_single": round(single, 1),
                        "qps_batch": round(batch, 1),
                        "build_s": round(build_s, 2),
                        "bytes_per_vector": round(size / len(docs), 1),
                    }
                )
    return rows


def _peer_indexes(docs: np.ndarray, metric: str) -> dict[str, tuple[object, float, int]]:
    import hnswlib
    from usearch.index import Index

    out: dict[str, tuple[object, float, int]] = {}
    start = time.perf_counter()
    hnsw = hnswlib.Index(space="ip" if metric == "dot" else "cosine", dim=docs.shape[1])
    hnsw.init_index(max_elements=len(docs), ef_construction=128, M=32, random_seed=1)
    hnsw.add_items(docs, np.arange(len(docs)), num_threads=THREADS)
    out["hnswlib"] = (hnsw, time.perf_counter() - start, len(docs) * (docs.shape[1] * 4 + 32 * 2 * 4 + 16))
    start = time.perf_counter()
    us = Index(ndim=docs.shape[1], metric="ip" if metric == "dot" else "cos", connectivity=32, expansion_add=128)
    us.add(np.arange(len(docs)), docs, threads=THREADS)
    out["usearch"] = (us, time.perf_counter() - start, int(us.memory_usage))
    return out


def _peer_run(
    impl: str, index: object, queries: np.ndarray, ef: int, timing: Timing
) -> tuple[float, float, np.ndarray]:
    found: list[np.ndarray] = []
    n, seconds = timing.single_queries, timing.min_seconds
    if impl == "hnswlib":
        index.set_ef(max(ef, K))  # type: ignore[attr-defined]
        single = _qps(
            lambda: [
                index.knn_query(queries[i : i + 1], K, num_threads=1)  # type: ignore[attr-defined]
                for i in range(n)
            ],
            n,
            seconds,
        )
        batch = _qps(
            lambda: found.append(index.knn_query(queries, K, num_threads=THREADS)[0]),  # type: ignore[attr-defined]
            len(queries),
            seconds,
        )
        return single, batch, found[0]
    index.expansion_search = max(ef, K)  # type: ignore[attr-defined]
    single = _qps(lambda: [index.search(queries[i], K, threads=1) for i in range(n)], n, seconds)  # type: ignore[attr-defined]
    batch = _qps(lambda: found.append(index.search(queries, K, threads=THREADS).keys), len(queries), seconds)  # type: ignore[attr-defined]
    return single, batch, found[0]
