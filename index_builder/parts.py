"""The build: a version of N parts (one when unsharded), made the same way for any N.

Global statistics first, then one task per part, then a merged self-check; the tasks run in this
process or on Ray (index_builder.scaleout.tasks). An unsharded version is one part whose files
keep the unsharded names (vectors.npy, ids.txt, <metric>.faiss) and manifest schema 1.

1. Scan: one task per input file computes document norms (and returns the self-check sample
   and parquet ids). The driver holds ids and norms (a few bytes per document), never vectors.
2. The driver fits every metric's global statistics (norm range, whitening, the MIPS
   augmentation's maximum norm) and assigns each id to a shard by a stable hash.
3. Part: one task per part (shard) reads the input files, keeps its own rows, writes its vectors,
   ids and one index per metric and layout into the shared staging directory, and returns its
   exact top-10 for the self-check queries.
4. The driver measures recall@10 on the merged answers of all shards (the same merge the
   service does), picks the layout, writes the manifest, checks that every shard's files load
   with the promised shapes, and publishes. Any failure before that removes the staging
   directory: nothing is published.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index_builder.artifact import attributes as stored
from index_builder.artifact.errors import InputError
from index_builder.artifact.faults import arm, armed, crash_point
from index_builder.artifact.integrity import verify_shapes
from index_builder.artifact.lifecycle import write_carried
from index_builder.artifact.manifest import (
    SCHEMA_VERSION,
    SHARDED_SCHEMA_VERSION,
    FilterIndexEntry,
    IndexEntry,
    Manifest,
    MetricEntry,
    ShardEntry,
    ValueIndexEntry,
    filter_file,
    value_file,
)
from index_builder.attributes import Attributes, part_columns, read_attributes
from index_builder.evaluate import RECALL_K, Checked, filter_plan, norm_bias, served_check
from index_builder.indexes import IndexOptions
from index_builder.pending import fold_for_export
from index_builder.pipeline import (
    BuildRequest,
    MetricInputs,
    QuerySet,
    buildable,
    check_request,
    checked_entry,
    choose_layout,
    document_query_rows,
    file_stem,
    keep_chosen,
    layouts_for,
    metric_entry,
    new_manifest,
    query_sets,
    range_bounds,
    recorded_queries,
    whitening_for,
    write_index,
    write_one,
)
from index_builder.progress import Progress
from index_builder.publish import new_staging_dir, new_version_name, publish
from index_builder.readers import ParquetColumns, open_input
from index_builder.retrieval.ann import ServedIndex, ann_topk
from index_builder.retrieval.faiss_params import read_index
from index_builder.retrieval.scoring import Prepared, doc_scales, exact_topk, indexed_rows
from index_builder.retrieval.spaces import Layout, Metric, MetricKind, MetricSpace, fit_metric_space, row_norms
from index_builder.scaleout.sharding import SHARD_KEY, merge_parts, shard_name, shard_of
from index_builder.scaleout.tasks import TaskRunner, runner
from index_builder.staging import (
    InputSpec,
    StagedCorpus,
    VectorWriter,
    check_finite,
    check_ids,
    choose_ids,
    explicit_ids,
    open_inputs,
)
from index_builder.value_indexes import ValueChoice, frequent_values, value_rows

log = logging.getLogger(__name__)

SHARD_CRASH_POINT = "shard.build"
SHARD_CRASH_ONCE = "shard.build.once"


@dataclass(frozen=True)
class ScanJob:
    path: Path
    fmt: str
    columns: ParquetColumns
    block_rows: int


@dataclass(frozen=True)
class ScanResult:
    norms: np.ndarray
    ids: list[str] | None


def scan_file(job: ScanJob) -> ScanResult:
    """Validate one input file and return its norms and parquet ids."""
    reader = open_input(job.path, job.fmt, job.columns)
    norms = np.empty(reader.count, dtype=np.float32)
    ids: list[str] = []
    start = 0
    for vectors, block_ids in reader.blocks(job.block_rows):
        check_finite(vectors, start, job.path)
        norms[start : start + len(vectors)] = row_norms(vectors)
        ids.extend(block_ids or [])
        start += len(vectors)
    return ScanResult(norms, ids or None)


def selected_rows(spec: InputSpec, file_rows: list[np.ndarray], block_rows: int) -> Iterator[np.ndarray]:
    """Blocks of the input's vectors at sorted `file_rows` (row numbers within each input file),
    read from the files that hold some of them, in file and row order."""
    for path, rows in zip(spec.paths, file_rows, strict=True):
        if not len(rows):
            continue
        start = 0
        for vectors, _ in open_input(path, spec.fmt, spec.columns).blocks(block_rows):
            yield np.asarray(vectors[rows[(rows >= start) & (rows < start + len(vectors))] - start], np.float32)
            start += len(vectors)


def per_file(rows: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Sorted global row numbers split into row numbers within each input file."""
    offsets = np.cumsum([0, *counts])
    return [rows[(rows >= lo) & (rows < hi)] - lo for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)]


@dataclass(frozen=True)
class ShardJob:
    """Everything one part's task needs; the statistics in `spaces` and `max_norm` are global."""

    shard: int
    sharded: bool
    staging: Path
    inputs: InputSpec
    part_rows: list[np.ndarray]
    ids: list[str]
    dim: int
    spaces: list[MetricSpace]
    layouts: dict[str, list[Layout]]
    queries: dict[str, np.ndarray]
    max_norm: float
    range_bounds: list[float]
    index: IndexOptions
    block_bytes: int
    progress: Progress
    attributes: dict[str, tuple[stored.AttributeType, dict[str, np.ndarray]]]
    values: list[ValueChoice]
    crash_at: str | None = None


@dataclass(frozen=True)
class ShardResult:
    shard: int
    count: int
    trials: dict[str, list[IndexEntry]]
    scales: dict[str, np.ndarray]
    truth: dict[str, tuple[np.ndarray, np.ndarray]]
    filters: dict[str, IndexEntry]
    values: dict[str, list[ValueIndexEntry]]


def _crash_if_armed(job: ShardJob) -> None:
    """Chaos hooks: kill this worker always, or only on a shard's first attempt (to see a retry)."""
    arm(job.crash_at)
    crash_point(SHARD_CRASH_POINT)
    marker = Path(tempfile.gettempdir()) / f"dotcos-crash-{job.staging.name}-{job.shard}"
    if job.crash_at == SHARD_CRASH_ONCE and not marker.exists():
        marker.touch()
        crash_point(SHARD_CRASH_ONCE)


def suffix(shard: int, sharded: bool) -> str:
    """What a part's files carry before their extension: ".s000" ... when sharded, nothing otherwise."""
    return f".{shard_name(shard)}" if sharded else ""


def _write_shard_corpus(job: ShardJob, name: str) -> StagedCorpus:
    """This part's rows of every input file, written as its float32 vectors file and ids file."""
    vectors_path = job.staging / f"vectors{name}.npy"
    block_rows = max(1, job.block_bytes // (4 * job.dim))
    norms = np.empty(len(job.ids), dtype=np.float32)
    with VectorWriter(vectors_path, len(job.ids), job.dim) as out:
        for block in selected_rows(job.inputs, job.part_rows, block_rows):
            norms[out.written : out.written + len(block)] = row_norms(block)
            out.write(block)
    (job.staging / f"ids{name}.txt").write_text("".join(f"{i}\n" for i in job.ids), encoding="utf-8")
    return StagedCorpus(vectors=np.load(vectors_path, mmap_mode="r"), ids=job.ids, norms=norms)


def build_shard(job: ShardJob) -> ShardResult:
    """One shard task: its corpus, an index per metric and layout, and its exact top-10 answers."""
    _crash_if_armed(job)
    name = suffix(job.shard, job.sharded)
    corpus = _write_shard_corpus(job, name)
    for attribute, (kind, column) in job.attributes.items():
        stored.write_part(job.staging, name.lstrip("."), kind, attribute, column)
    block_rows = max(1, job.block_bytes // (4 * job.dim))
    trials: dict[str, list[IndexEntry]] = {}
    scales: dict[str, np.ndarray] = {}
    truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    filters: dict[str, IndexEntry] = {}
    values: dict[str, list[ValueIndexEntry]] = {}
    for space in job.spaces:
        scales[space.name] = doc_scales(space, corpus.vectors, block_rows)
        rows = indexed_rows(space, scales[space.name])
        if not len(rows):
            raise InputError(
                f"shard {shard_name(job.shard)} has no document {space.name} can index; use fewer --shards"
            )
        inputs = MetricInputs(space.metric, space, scales[space.name], rows, block_rows, job.max_norm, job.range_bounds)
        truth[space.name] = exact_topk(space, job.queries[space.name], corpus.vectors, scales[space.name], RECALL_K)
        stem = file_stem(space.metric)
        trials[space.name] = [
            write_index(inputs, layout, corpus, job.index, job.staging / f"{stem}.{layout}{name}.tmp", job.progress)
            for layout in job.layouts[space.name]
        ]
        if job.index.wants_filter_index(len(rows)):
            path = job.staging / filter_file(index_file(space.metric, job.shard, job.sharded))
            options = job.index.for_filters(len(rows))
            filters[space.name] = write_index(inputs, filter_layout(space), corpus, options, path, job.progress)
        values[space.name] = _write_values(job, inputs, corpus)
    return ShardResult(job.shard, corpus.count, trials, scales, truth, filters, values)


def _write_values(job: ShardJob, inputs: MetricInputs, corpus: StagedCorpus) -> list[ValueIndexEntry]:
    """The part's index of each chosen keyword value's documents, built as its index is."""
    entries = []
    main = index_file(inputs.metric, job.shard, job.sharded)
    for at, choice in enumerate(job.values):
        kind, column = job.attributes[choice.attribute]
        rows = np.intersect1d(inputs.rows, value_rows(kind, column, choice.code), assume_unique=True)
        path = job.staging / value_file(main, at)
        plan = write_one(inputs, Layout.IP, rows, None, corpus, job.index, path, job.progress)
        entries.append(
            ValueIndexEntry(
                attribute=choice.attribute,
                value=choice.value,
                factory=plan.factory,
                layout=Layout.IP,
                refine_factor=plan.refine_factor,
            )
        )
    return entries


def index_file(metric: Metric, shard: int, sharded: bool) -> str:
    """The file of a part's index of a metric: dot.faiss, or dot.s000.faiss when sharded."""
    return f"{file_stem(metric)}{suffix(shard, sharded)}.faiss"


def filter_layout(space: MetricSpace) -> Layout:
    """The filter index ranks dot products through the MIPS augmentation (an IVF's lists, probed by
    inner product with their centroids, miss the large-norm documents dot ranks first); the
    normalized metrics rank by inner product directly."""
    return Layout.L2_AUGMENTED if space.metric.kind is MetricKind.DOT else Layout.IP


@dataclass(frozen=True)
class Scanned:
    """The driver's view of the corpus after the scan: ids, norms, per-file offsets, the sample."""

    ids: list[str]
    norms: np.ndarray
    counts: list[int]
    dim: int
    documents: QuerySet


def _scan(request: BuildRequest, run: TaskRunner, progress: Progress) -> Scanned:
    spec = request.inputs
    _, counts, dim = open_inputs(spec)
    total = sum(counts)
    block_rows = max(1, request.block_bytes // (4 * dim))
    jobs = [ScanJob(path, spec.fmt, spec.columns, block_rows) for path in spec.paths]
    results = run.map(scan_file, jobs, "scan", progress)
    norms = np.concatenate([r.norms for r in results])
    parquet_ids = [i for r in results for i in (r.ids or [])]
    ids, source = choose_ids(explicit_ids(spec, counts), parquet_ids, total, spec)
    check_ids(ids, total, source)
    chosen = document_query_rows(norms, request.selfcheck_queries, request.index.seed)
    sample = np.concatenate(
        [np.empty((0, dim), np.float32), *selected_rows(spec, per_file(chosen, counts), block_rows)]
    )
    return Scanned(ids, norms, counts, dim, QuerySet(sample, "documents"))


def _shard_jobs(
    request: BuildRequest,
    scanned: Scanned,
    spaces: list[MetricSpace],
    staging: Path,
    queries: dict[str, np.ndarray],
    attributes: Attributes | None,
    progress: Progress,
) -> tuple[list[ShardJob], np.ndarray]:
    """One job per part, and the input rows of every part in part order (row order of the version).

    In this process the parts report their index stages to the build's own progress; on Ray they
    report nothing (the driver shows one line per finished task)."""
    shards = request.shards or 1
    assignment = shard_of(scanned.ids, shards) if request.shards else np.zeros(len(scanned.ids), np.int64)
    layouts = {sp.name: layouts_for(sp.metric, request) for sp in spaces}
    bounds = range_bounds(scanned.norms, [lay for tried in layouts.values() for lay in tried], request)
    max_norm = float(scanned.norms.max())
    values = _chosen_values(request, attributes, int(np.bincount(assignment, minlength=shards).min()))
    jobs, order = [], []
    for s in range(shards):
        mine = np.flatnonzero(assignment == s)
        if not len(mine):
            raise InputError(
                f"shard {shard_name(s)} would be empty: {len(scanned.ids)} documents "
                f"over --shards {shards}; use fewer shards"
            )
        order.append(mine)
        jobs.append(
            ShardJob(
                shard=s,
                sharded=request.shards is not None,
                staging=staging,
                inputs=request.inputs,
                part_rows=per_file(mine, scanned.counts),
                ids=[scanned.ids[i] for i in mine],
                dim=scanned.dim,
                spaces=spaces,
                layouts=layouts,
                queries=queries,
                max_norm=max_norm,
                range_bounds=bounds,
                index=request.index,
                block_bytes=request.block_bytes,
                progress=progress if request.ray is None else Progress(quiet=True),
                attributes=_part_attributes(attributes, mine),
                values=values,
                crash_at=armed(),
            )
        )
    return jobs, np.concatenate(order)


def _chosen_values(request: BuildRequest, attributes: Attributes | None, smallest: int) -> list[ValueChoice]:
    """The keyword values every part indexes on their own, where every part (the `smallest` rows)
    gets a filter index."""
    if attributes is None or not request.index.wants_filter_index(smallest):
        return []
    return frequent_values(attributes)


def _part_attributes(
    attributes: Attributes | None, rows: np.ndarray
) -> dict[str, tuple[stored.AttributeType, dict[str, np.ndarray]]]:
    if attributes is None:
        return {}
    columns = part_columns(attributes, rows)
    return {name: (kind, columns[name]) for name, kind in attributes.types.items()}


def _attributes(request: BuildRequest, ids: list[str], staging: Path) -> Attributes | None:
    """The corpus's attributes when the request stores any (their dictionaries written now)."""
    if request.attributes is None:
        return None
    columns = request.inputs.columns
    reserved = {columns.id_column, columns.vector_column} if request.inputs.fmt == "parquet" else set()
    attributes = read_attributes(request.attributes, request.inputs, ids, reserved)
    stored.write_dictionaries(staging, attributes.dictionaries)
    return attributes


def _offsets(results: list[ShardResult]) -> list[int]:
    """Where each shard's rows start in the version's row order (shards one after another)."""
    return [int(x) for x in np.cumsum([0, *[r.count for r in results]])[:-1]]


def _served_parts(
    space: MetricSpace, layout_at: int, results: list[ShardResult], staging: Path, sharded: bool
) -> list[ServedIndex]:
    """Every part's index of one layout, loaded as the service loads it."""
    served = []
    for result in results:
        entry = result.trials[space.name][layout_at]
        vectors = np.load(staging / f"vectors{suffix(result.shard, sharded)}.npy", mmap_mode="r")
        indexes = [read_index(staging / name) for name in entry.files_for(str(entry.file))]
        served.append(
            ServedIndex.of(
                indexes, space, entry.layout, entry.refine_factor, np.asarray(vectors), result.scales[space.name]
            )
        )
    return served


def _served_filters(
    space: MetricSpace, results: list[ShardResult], staging: Path, sharded: bool
) -> list[ServedIndex] | None:
    """Every part's filter index of a metric, loaded as the service loads it (None when not built)."""
    if space.name not in results[0].filters:
        return None
    served = []
    for result in results:
        entry = result.filters[space.name]
        vectors = np.load(staging / f"vectors{suffix(result.shard, sharded)}.npy", mmap_mode="r")
        index = read_index(staging / str(entry.file))
        served.append(
            ServedIndex.of(
                [index], space, entry.layout, entry.refine_factor, np.asarray(vectors), result.scales[space.name]
            )
        )
    return served


def _merged_check(space: MetricSpace, served: list[ServedIndex], offsets: list[int]) -> Checked:
    """The self-check of one layout over all parts: each part searched as served, answers merged."""
    one = served_check(served[0])

    def search(queries: Prepared, k: int, value: int | None) -> tuple[np.ndarray, np.ndarray]:
        return merge_parts([ann_topk(s, queries, k, value) for s in served], offsets, k)

    return Checked(space, search, one.param, one.nlist)


def _finish_metric(
    space: MetricSpace,
    request: BuildRequest,
    results: list[ShardResult],
    staging: Path,
    queries: QuerySet,
    progress: Progress,
) -> tuple[MetricEntry, np.ndarray]:
    """Merged truth and self-check per layout, the chosen layout's files renamed, the others deleted."""
    offsets = _offsets(results)
    sharded = request.shards is not None
    truth, truth_rows = merge_parts([r.truth[space.name] for r in results], offsets, RECALL_K)
    trials, served = [], []
    for at, first in enumerate(results[0].trials[space.name]):
        total = sum(r.trials[space.name][at].count for r in results)
        entry = first.model_copy(update={"count": total, "file": None})
        served.append(_served_parts(space, at, results, staging, sharded))
        checked = _merged_check(space, served[at], offsets)
        trials.append(checked_entry(entry, checked, queries, truth, request.target_recall, progress))
    chosen = choose_layout(space.metric, trials, request)
    at = trials.index(chosen)
    default = next(iter(chosen.search_params.values()), None)
    filters = _served_filters(space, results, staging, sharded)
    with progress.stage(f"filtered self-check {space.name}"):
        plan = filter_plan(
            served[at], filters, offsets, queries.vectors, default, request.target_recall, request.index.seed
        )
    update: dict[str, Any] = {"filter_plan": plan.routes, "exact_micros": plan.exact_micros}
    if filters is not None:
        built = results[0].filters[space.name]
        nlist = faiss.extract_index_ivf(filters[0].index).nlist
        update["filter_index"] = FilterIndexEntry(
            factory=built.factory,
            layout=built.layout,
            refine_factor=built.refine_factor,
            nlist=nlist,
            max_norm=built.max_norm,
        )
    update["value_indexes"] = results[0].values.get(space.name, [])
    chosen = chosen.model_copy(update=update)
    served.clear()
    for result in results:
        shard_trials = result.trials[space.name]
        final = index_file(space.metric, result.shard, sharded)
        keep_chosen(staging, shard_trials, shard_trials[at], final)
    return metric_entry(space, chosen, trials, None if sharded else final), truth_rows


def _shard_entries(request: BuildRequest, results: list[ShardResult]) -> list[ShardEntry]:
    entries = []
    for result in results:
        name = shard_name(result.shard)
        entries.append(
            ShardEntry(
                name=name,
                count=result.count,
                vectors_file=f"vectors.{name}.npy",
                ids_file=f"ids.{name}.txt",
                index_files={m.name: index_file(m, result.shard, True) for m in request.metrics},
                index_counts={m.name: result.trials[m.name][0].count for m in request.metrics},
            )
        )
    return entries


def _layout_fields(request: BuildRequest, results: list[ShardResult]) -> dict[str, Any]:
    """The manifest fields that say where the parts' files are: schema 2 with a shard list, or the
    unsharded schema 1 top-level files."""
    if request.shards is None:
        return {"schema_version": SCHEMA_VERSION, "vectors_file": "vectors.npy", "ids_file": "ids.txt"}
    return {
        "schema_version": SHARDED_SCHEMA_VERSION,
        "shards": _shard_entries(request, results),
        "shard_key": SHARD_KEY,
    }


def build(request: BuildRequest, progress: Progress) -> Manifest:
    """Build a version of request.shards parts (one when None), in this process or on Ray with
    request.ray; checks everything it wrote, then publishes all parts or nothing."""
    if request.shards is not None and request.shards < 1:
        raise InputError(f"--shards must be at least 1, got {request.shards}")
    version = request.version or new_version_name()
    fold = request.fold or fold_for_export(
        request.root, request.collection, request.changes_through, request.discard_changes
    )
    staging = new_staging_dir(request.root, request.collection, version)
    run = runner(request.ray, request.task_retries)
    try:
        metrics, skipped = buildable(request)
        request = replace(request, metrics=metrics)
        scanned = _scan(request, run, progress)
        fold.check_dim(scanned.dim)
        check_request(request, scanned.norms)
        whitening = whitening_for(request, scanned.dim, staging, progress)
        user_queries, doc_queries = query_sets(request, scanned.documents, scanned.dim)
        norms64 = scanned.norms.astype(np.float64)
        spaces = [fit_metric_space(m, norms64, whitening) for m in request.metrics]
        recorded = recorded_queries(request, scanned.dim)
        queries = {
            m.name: doc_queries if m.rule.whitened else recorded.get(m.name, user_queries) for m in request.metrics
        }
        part_queries = {k: q.vectors for k, q in queries.items()}
        attributes = _attributes(request, scanned.ids, staging)
        jobs, order = _shard_jobs(request, scanned, spaces, staging, part_queries, attributes, progress)
        results = run.map(build_shard, jobs, "shards" if request.shards else "parts", progress)
        entries, bias = {}, None
        for space in spaces:
            entries[space.name], truth_rows = _finish_metric(
                space, request, results, staging, queries[space.name], progress
            )
            if space.metric.kind is MetricKind.DOT:
                bias = round(norm_bias(truth_rows, scanned.norms[order]), 4)
        carried = write_carried(staging, fold.carried)
        manifest = new_manifest(
            request,
            version,
            scanned.dim,
            scanned.norms,
            entries,
            bias,
            staging,
            not_built=skipped,
            attributes=attributes.entries() if attributes else {},
            journal_position=fold.position,
            carried=carried,
            changes=fold.changes,
            set_aside=fold.set_aside,
            **_layout_fields(request, results),
        )
        verify_shapes(manifest, staging)
        publish(staging, manifest, request.root)
        return manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        run.close()
