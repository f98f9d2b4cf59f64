"""The pieces of a build every part and every metric share: the request, which metrics and layouts
to build, one index written and measured, the layout chosen, the manifest (index_builder.parts
runs them)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

import index_builder
from index_builder.artifact.errors import InputError
from index_builder.artifact.manifest import SCHEMA_VERSION, IndexEntry, Manifest, MetricEntry, range_file
from index_builder.artifact.querylog import log_path, read_sample
from index_builder.attributes import AttributeSpec
from index_builder.covariance import user_covariance, whitening_matrix
from index_builder.evaluate import Checked, norm_profile, self_check
from index_builder.indexes import IndexOptions, IndexPlan, new_index, plan_index, sample_rows, train_and_add
from index_builder.pending import Fold
from index_builder.progress import Progress
from index_builder.publish import file_entries
from index_builder.retrieval.spaces import (
    Layout,
    Metric,
    MetricKind,
    MetricSpace,
    augment_documents,
    faiss_metric,
    norm_range_bounds,
    norm_range_of,
)
from index_builder.staging import InputSpec, StagedCorpus, stream_vectors

log = logging.getLogger(__name__)

WHITENING_FILE = "covariance.npy"
MIPS_MODES = ("none", "l2", "ranged", "auto")
FORCED_MIPS = ("l2", "ranged")


@dataclass(frozen=True)
class Sharding:
    """How a build is split: into `shards` parts, built as Ray tasks on the cluster at `ray`
    (None: in this process)."""

    shards: int | None = None
    ray: str | None = None


UNSHARDED = Sharding()


@dataclass(frozen=True)
class BuildRequest:
    """One build, fully resolved from CLI flags and settings."""

    inputs: InputSpec
    collection: str
    root: Path
    metrics: list[Metric]
    index: IndexOptions = IndexOptions()
    mips: str = "none"
    mips_ranges: int = 8
    queries: InputSpec | None = None
    users: InputSpec | None = None
    target_recall: float = 0.95
    selfcheck_queries: int = 1000
    version: str | None = None
    block_bytes: int = 32 << 20
    shards: int | None = None
    ray: str | None = None
    task_retries: int = 3
    extra_params: dict[str, object] = field(default_factory=dict)
    attributes: AttributeSpec | None = None
    fold: Fold | None = None
    """The new version's fold point when the caller chose it (--from-current); otherwise the
    build plans it from `changes_through` and `discard_changes` (index_builder.pending)."""
    changes_through: int | None = None
    discard_changes: bool = False
    model: str | None = None
    """The embedding model the documents come from, recorded in the manifest."""


@dataclass(frozen=True)
class QuerySet:
    vectors: np.ndarray
    source: str


def _read_queries(spec: InputSpec, dim: int, limit: int, seed: int) -> np.ndarray:
    parts = list(stream_vectors(spec, dim, "--queries", 65536))
    return _sampled(np.concatenate(parts) if parts else np.empty((0, dim), np.float32), limit, seed)


def _sampled(vectors: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most `limit` of the vectors, a seeded sample in their order."""
    return np.asarray(vectors[sample_rows(np.arange(len(vectors)), limit, seed)])


def document_query_rows(norms: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Rows of the documents used as self-check queries: a seeded sample of the non-zero ones."""
    return sample_rows(np.flatnonzero(norms > 0), limit, seed)


NEEDS_USERS = "needs --users FILE (a sample of user vectors)"


def buildable(request: BuildRequest) -> tuple[list[Metric], dict[str, str]]:
    """The metrics this request can build, and why the others cannot (reported, not fatal)."""
    skipped = {m.name: NEEDS_USERS for m in request.metrics if m.rule.whitened and request.users is None}
    metrics = [m for m in request.metrics if m.name not in skipped]
    if not metrics:
        name, reason = next(iter(skipped.items()))
        raise InputError(f"metric {name!r} {reason}; nothing else to build")
    return metrics, skipped


def check_request(request: BuildRequest, norms: np.ndarray) -> None:
    """Requests that cannot be built from this corpus, found before any index work."""
    kinds = {m.kind for m in request.metrics}
    if request.mips != "none" and MetricKind.DOT not in kinds:
        raise InputError(f"--mips {request.mips} serves dot, but --metrics does not include dot")
    if any(m.rule.normalizes for m in request.metrics) and not (norms > 0).any():
        names = ", ".join(m.name for m in request.metrics if m.rule.normalizes)
        raise InputError(f"all {len(norms)} documents have zero norm; {names} is undefined for them")


@dataclass(frozen=True)
class MetricInputs:
    """What every index of one metric is built from: the fitted space and its indexed rows."""

    metric: Metric
    space: MetricSpace
    scales: np.ndarray
    rows: np.ndarray
    block_rows: int
    max_norm: float
    range_bounds: list[float] = field(default_factory=list)


def write_one(
    inputs: MetricInputs,
    layout: Layout,
    rows: np.ndarray,
    bound: float | None,
    corpus: StagedCorpus,
    options: IndexOptions,
    path: Path,
    progress: Progress,
) -> IndexPlan:
    """One FAISS index over `rows` written to `path`, augmented with `bound` as the maximum norm when given."""
    space = inputs.space

    def prepare(chunk: np.ndarray) -> np.ndarray:
        prepared = space.prepare_documents(corpus.rows(chunk))
        return augment_documents(prepared, bound) if bound is not None else prepared

    augmented = layout.augmented
    plan = plan_index(options, corpus.dim + augmented, max(len(rows), 1), augmented)
    if len(rows):
        index = new_index(plan, layout)
        log.info("%s: %s index (%s, %s) over %d documents", space.name, plan.kind, plan.factory, layout, len(rows))
        train_and_add(index, rows, prepare, options, inputs.block_rows, progress)
    else:
        index = faiss.IndexIDMap(faiss.IndexFlat(corpus.dim + augmented, faiss_metric(layout)))
    with progress.stage(f"write {path.name}"):
        faiss.write_index(index, str(path))
    return plan


def write_index(
    inputs: MetricInputs,
    layout: Layout,
    corpus: StagedCorpus,
    options: IndexOptions,
    path: Path,
    progress: Progress,
) -> IndexEntry:
    """Build one metric's index in one layout (one per norm range when ranged), written next to `path`."""
    rows = inputs.rows
    bounds = inputs.range_bounds if layout is Layout.L2_RANGED else []
    max_norm = inputs.max_norm if layout.augmented else None
    groups: list[tuple[np.ndarray, float | None, Path]]
    if bounds:
        which = norm_range_of(corpus.norms[rows], bounds)
        groups = [(rows[which == r], bound, path.with_name(range_file(path.name, r))) for r, bound in enumerate(bounds)]
    else:
        groups = [(rows, max_norm, path)]
    plans = [
        write_one(inputs, layout, group, bound, corpus, options, group_path, progress)
        for group, bound, group_path in groups
    ]
    plan = plans[max(range(len(groups)), key=lambda i: len(groups[i][0]))]
    return IndexEntry(
        kind=plan.kind,
        factory=plan.factory,
        layout=layout,
        file=path.name,
        count=len(rows),
        exact=plan.exact and not bounds,
        max_norm=max_norm,
        range_bounds=bounds,
        refine_factor=plan.refine_factor,
    )


def checked_entry(
    entry: IndexEntry, checked: Checked, queries: QuerySet, truth: np.ndarray, target: float, progress: Progress
) -> IndexEntry:
    """An index entry with its recall self-check and tuned default knob filled in."""
    with progress.stage(f"self-check {checked.name} ({entry.layout})", len(queries.vectors), unit="query"):
        check, params = self_check(checked, queries.vectors, truth, queries.source, target)
    return entry.model_copy(update={"search_params": params, "self_check": check})


def _cost(entry: IndexEntry, target: float) -> tuple[int, float]:
    """Lower is better: reaching the target first, then the cheapest knob; else the higher recall."""
    recall = entry.self_check.recall_at_10 if entry.self_check else 0.0
    if recall >= target:
        searches = max(1, len(entry.range_bounds))
        return 0, float(next(iter(entry.search_params.values()), 0) * entry.refine_factor * searches)
    return 1, -recall


def _layouts(metric: Metric, request: BuildRequest) -> list[Layout]:
    """Layouts to try, the requested one first: dot may be served through the MIPS augmentation."""
    if metric.kind is not MetricKind.DOT or request.mips == "none":
        return [Layout.IP]
    if request.mips == "l2":
        return [Layout.L2_AUGMENTED, Layout.IP]
    if request.mips == "ranged":
        return [Layout.L2_RANGED, Layout.IP]
    return [Layout.IP, Layout.L2_AUGMENTED, Layout.L2_RANGED]


def _describe(entry: IndexEntry) -> str:
    knob = ", ".join(f"{k}={v}" for k, v in entry.search_params.items()) or "exact"
    recall = entry.self_check.recall_at_10 if entry.self_check else float("nan")
    return f"{entry.layout}: recall@10 {recall:.3f} at {knob}"


def layouts_for(metric: Metric, request: BuildRequest) -> list[Layout]:
    """The layouts a build of this metric tries (one for exact flat indexes)."""
    layouts = _layouts(metric, request)
    return layouts[:1] if request.index.kind == "flat" else layouts


def choose_layout(metric: Metric, trials: list[IndexEntry], request: BuildRequest) -> IndexEntry:
    """The trial to serve: the requested layout with --mips l2, else the cheapest reaching the target."""
    target = request.target_recall
    chosen = trials[0] if request.mips in FORCED_MIPS else min(trials, key=lambda e: _cost(e, target))
    for trial in trials:
        if trial is not chosen and _cost(trial, target) < _cost(chosen, target):
            log.warning(
                "%s: --mips %s measures worse than %s (%s vs %s); consider --mips auto",
                metric.name,
                request.mips,
                trial.layout,
                _describe(chosen),
                _describe(trial),
            )
    if len(trials) > 1:
        log.info("%s: serving %s (compared %s)", metric.name, chosen.layout, "; ".join(map(_describe, trials)))
    return chosen


def metric_entry(space: MetricSpace, chosen: IndexEntry, trials: list[IndexEntry], file: str | None) -> MetricEntry:
    """The manifest entry of a built metric: its fitted statistics and the chosen index."""
    update = {"file": file, "layout_trials": {str(t.layout): _describe(t) for t in trials}}
    return MetricEntry(
        name=space.name,
        norm_min=space.stats.norm_min,
        norm_max=space.stats.norm_max,
        whitening_file=WHITENING_FILE if space.metric.rule.whitened else None,
        index=chosen.model_copy(update=update),
    )


def file_stem(metric: Metric) -> str:
    """How a metric's name appears in file names (no ':')."""
    return metric.name.replace(":", "-")


def range_bounds(norms: np.ndarray, layouts: list[Layout], request: BuildRequest) -> list[float]:
    """Global norm-range bounds when a norm-ranged layout is tried (empty otherwise)."""
    return norm_range_bounds(norms, request.mips_ranges) if Layout.L2_RANGED in layouts else []


def keep_chosen(staging: Path, trials: list[IndexEntry], chosen: IndexEntry, file: str) -> None:
    """Rename the chosen trial's file(s) to `file` (and its range files), delete the other trials'."""
    for trial in trials:
        names = trial.files_for(str(trial.file))
        if trial is chosen:
            for name, final in zip(names, trial.files_for(file), strict=True):
                (staging / name).rename(staging / final)
        else:
            for name in names:
                (staging / name).unlink()


def whitening_for(request: BuildRequest, dim: int, staging: Path, progress: Progress) -> np.ndarray | None:
    """The covariance metric's transform from --users, saved into the version (None when not built)."""
    if request.users is None or not any(m.rule.whitened for m in request.metrics):
        return None
    cov = user_covariance(request.users, dim, request.block_bytes, progress)
    whitening = whitening_matrix(cov)
    np.save(staging / WHITENING_FILE, whitening, allow_pickle=False)
    return whitening


MIN_RECORDED = 100
RECORDED = "recorded traffic"


def recorded_queries(request: BuildRequest, dim: int) -> dict[str, QuerySet]:
    """Self-check queries from the collection's query log, per user-facing metric, when no
    --queries were given and the log holds enough of them (a corrupt log is skipped, saying so)."""
    out: dict[str, QuerySet] = {}
    if request.queries is not None:
        return out
    for metric in request.metrics:
        if metric.rule.whitened:
            continue
        try:
            sample = read_sample(log_path(request.root, request.collection, metric.name))
        except ValueError as exc:
            log.warning("%s; the self-check of %s uses documents", exc, metric.name)
            continue
        if sample is None or sample.dim != dim or len(sample.vectors) < MIN_RECORDED:
            continue
        vectors = _sampled(sample.vectors, request.selfcheck_queries, request.index.seed)
        log.info(
            "%s: self-check on %d recorded queries (a sample of %d served)", metric.name, len(vectors), sample.seen
        )
        out[metric.name] = QuerySet(vectors, RECORDED)
    return out


def proxy_queries(documents: QuerySet, seed: int) -> QuerySet:
    """Stand-ins for user queries when none were given: draws from a Gaussian with the document
    sample's mean and covariance. They lie off the documents' own neighbourhoods, as the other
    tower's vectors do, so a knob tuned on them is conservative: on real shifted text they are
    harder than the real queries at every knob (bench/results/shifted.md), where documents
    themselves flatter. Live recall then lowers a knob that turns out higher than traffic needs."""
    sample = documents.vectors.astype(np.float64)
    if len(sample) < 2:
        return documents
    rng = np.random.default_rng(seed)
    drawn = rng.multivariate_normal(sample.mean(axis=0), np.cov(sample, rowvar=False), size=len(sample))
    return QuerySet(drawn.astype(np.float32), documents.source)


def query_sets(request: BuildRequest, documents: QuerySet, dim: int) -> tuple[QuerySet, QuerySet]:
    """Queries for user-facing metrics (--queries, else proxies drawn from the documents) and for
    item-to-item metrics (documents)."""
    if request.queries is None:
        return proxy_queries(documents, request.index.seed), documents
    users = _read_queries(request.queries, dim, request.selfcheck_queries, request.index.seed)
    if not len(users):
        raise InputError("--queries holds no vectors")
    return QuerySet(users, "queries"), documents


def new_manifest(
    request: BuildRequest,
    version: str,
    dim: int,
    norms: np.ndarray,
    entries: dict[str, MetricEntry],
    bias: float | None,
    staging: Path,
    schema_version: int = SCHEMA_VERSION,
    **fields: Any,
) -> Manifest:
    """The manifest of a fully written staging directory (its files checksummed now)."""
    return Manifest(
        schema_version=schema_version,
        collection=request.collection,
        version=version,
        created_at=datetime.now(UTC),
        dim=dim,
        count=len(norms),
        metrics=entries,
        norm_profile=norm_profile(norms),
        norm_bias_top5pct=bias,
        faiss_version=faiss.__version__,
        dotcos_version=index_builder.__version__,
        build_params=_build_params(request),
        files=file_entries(staging),
        model=request.model,
        **fields,
    )


def _build_params(request: BuildRequest) -> dict[str, object]:
    options = request.index
    return {
        "input": [str(p) for p in request.inputs.paths][:20],
        "format": request.inputs.fmt,
        "metrics": [m.name for m in request.metrics],
        "index": options.kind,
        "mips": request.mips,
        "mips_ranges": request.mips_ranges,
        "hnsw_m": options.hnsw_m,
        "hnsw_codes": options.hnsw_codes,
        "filter_index": options.filter_index,
        "ef_construction": options.ef_construction,
        "nlist": options.nlist,
        "pq_m": options.pq_m,
        "pq_bits": options.pq_bits,
        "train_size": options.train_size,
        "seed": options.seed,
        "target_recall": request.target_recall,
        "selfcheck_queries": request.selfcheck_queries,
        "shards": request.shards,
        **_attribute_params(request.attributes),
        **request.extra_params,
    }


def _attribute_params(spec: AttributeSpec | None) -> dict[str, object]:
    """Where the attributes came from (nothing for a build without attributes)."""
    if spec is None:
        return {}
    return {"attributes": spec.columns, "attributes_file": str(spec.side_file) if spec.side_file else None}
