"""Measuring a built index: recall@10 against exact search, default knob tuning, norm profile."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import faiss
import numpy as np

from index_builder.artifact.manifest import FilterRoute, NormProfile, SelfCheck, SweepPoint
from index_builder.retrieval.ann import FILTER_BANDS, ServedIndex, ann_topk, filtered_knob
from index_builder.retrieval.faiss_params import EF_SEARCH, NPROBE
from index_builder.retrieval.rowsets import Mask, selector
from index_builder.retrieval.scoring import MISSING, Prepared, exact_topk, recall_at_k, scan_costs_less
from index_builder.retrieval.spaces import MetricSpace
from index_builder.scaleout.sharding import merge_parts

log = logging.getLogger(__name__)

RECALL_K = 10
EF_SWEEP = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048)


def _sweep_values(param: str | None, nlist: int) -> list[int | None]:
    if param == EF_SEARCH:
        return list(EF_SWEEP)
    if param == NPROBE:
        return [*(1 << i for i in range((nlist - 1).bit_length())), nlist]
    return [None]


SearchAt = Callable[[Prepared, int, int | None], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Checked:
    """What a self-check measures: a search at a knob value under a metric, the knob and its range."""

    space: MetricSpace
    search: SearchAt
    param: str | None
    nlist: int

    @property
    def name(self) -> str:
        return self.space.name


def served_check(served: ServedIndex) -> Checked:
    """The self-check of one index searched exactly as the service searches it."""
    ivf = faiss.try_extract_index_ivf(served.index)
    return Checked(served.space, partial(ann_topk, served), served.param, ivf.nlist if ivf is not None else 0)


def self_check(
    checked: Checked, queries: np.ndarray, truth: np.ndarray, source: str, target: float
) -> tuple[SelfCheck, dict[str, int]]:
    """Recall@10 over a sweep of the index's knob; the default is the cheapest value reaching target.

    `truth` holds the exact top-k scores of the queries (the merged exact answers of all parts), shared by every index
    built for the metric.
    """
    k = truth.shape[1]
    param = checked.param
    prepared = Prepared.of(checked.space, queries)
    sweep: list[SweepPoint] = []
    recall = 0.0
    chosen: int | None = None
    for value in _sweep_values(param, checked.nlist):
        scores, rows = checked.search(prepared, k, value)
        recall, chosen = recall_at_k(truth, scores, rows), value
        if value is not None:
            sweep.append(SweepPoint(value=value, recall_at_10=round(recall, 4)))
        if recall >= target:
            break
    if recall < target:
        log.warning(
            "%s: recall@10 %.3f stays below the target %.2f at %s=%s", checked.name, recall, target, param, chosen
        )
    check = SelfCheck(
        recall_at_10=round(recall, 4),
        queries=len(queries),
        query_source=source,
        target_recall=target,
        param=param,
        sweep=sweep,
    )
    return check, ({param: int(chosen)} if param and chosen is not None else {})


FILTER_BOOSTS = (1, 2, 4, 8)
FILTER_QUERIES = 200
TIMED_QUERIES = 16
"""Queries timed one at a time per candidate way of a band (the service runs filtered searches singly)."""
MAX_FILTERED_EF = 4096
"""The service's default DOTCOS_MAX_EF_SEARCH: a band needing more is scanned exactly."""
NPROBE_STEPS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


@dataclass(frozen=True)
class FilterPlan:
    """Per selectivity band the ways that keep the recall target, and what an exact scan cost
    (both in microseconds per query and part, measured)."""

    routes: dict[str, list[FilterRoute]]
    exact_micros: dict[str, float]


def filter_plan(
    parts: list[ServedIndex],
    filters: list[ServedIndex] | None,
    offsets: list[int],
    queries: np.ndarray,
    default: int | None,
    target: float,
    seed: int,
) -> FilterPlan:
    """Per selectivity band, searches among a random share of the documents: the index with its knob
    raised by the smallest boost reaching `target` recall@10, the filter index at the smallest nprobe
    reaching it (each against exact search among the same documents, with two standard errors of
    the sample to spare), and an exact scan, each timed. Random filters are the baseline: filters
    correlated with the query can do better or worse."""
    if parts[0].param is None and filters is None:
        return FilterPlan({}, {})
    prepared = Prepared.of(parts[0].space, queries[:FILTER_QUERIES])
    timed = Prepared.of(parts[0].space, queries[:TIMED_QUERIES])
    wanted = min(1.0, target + sampling_margin(target, len(prepared) * RECALL_K))
    rng = np.random.default_rng(seed)
    routes: dict[str, list[FilterRoute]] = {}
    scans: dict[str, float] = {}
    with one_thread():
        for band in FILTER_BANDS:
            masks = [rng.random(len(p.vectors)) < band for p in parts]
            allowed = [m if p.indexed is None else m & p.indexed for m, p in zip(masks, parts, strict=True)]
            band_search = _BandSearch(parts, offsets, allowed)
            truth, _ = band_search.exact(prepared)
            scans[str(band)] = band_search.micros(band_search.exact, timed)
            routes[str(band)] = []
            if band_search.scanned(default):
                continue
            for sweep in band_search.sweeps(filters, default, band):
                for route, search in sweep:
                    recall = recall_at_k(truth, *search(prepared))
                    if recall >= wanted:
                        update = {"recall_at_10": round(recall, 4), "micros": band_search.micros(search, timed)}
                        routes[str(band)].append(route.model_copy(update=update))
                        break
    return FilterPlan(routes, scans)


Search = Callable[[Prepared], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class _BandSearch:
    """Searches of every part among its `allowed` rows, merged as the service merges them."""

    parts: list[ServedIndex]
    offsets: list[int]
    allowed: list[np.ndarray]

    def exact(self, queries: Prepared) -> tuple[np.ndarray, np.ndarray]:
        found = [
            exact_topk(p.space, queries, p.vectors, p.scales, RECALL_K, candidates=np.flatnonzero(a))
            for p, a in zip(self.parts, self.allowed, strict=True)
        ]
        return merge_parts(found, self.offsets, RECALL_K)

    def ann(self, served: list[ServedIndex], value: int | None) -> Search:
        def search(queries: Prepared) -> tuple[np.ndarray, np.ndarray]:
            found = []
            for part, allowed in zip(served, self.allowed, strict=True):
                chain = selector(Mask(allowed), len(allowed))
                found.append(ann_topk(part, queries, RECALL_K, value, chain[-1]))
            return merge_parts(found, self.offsets, RECALL_K)

        return search

    def scanned(self, default: int | None) -> bool:
        """Whether every part scans its share exactly for less than one unfiltered search at the
        default knob costs: no way can beat the scan, so none is measured (the planner scans)."""
        return all(
            scan_costs_less(int(a.sum()), len(p.vectors), p.search_cost(default))
            for p, a in zip(self.parts, self.allowed, strict=True)
        )

    def sweeps(
        self, filters: list[ServedIndex] | None, default: int | None, band: float
    ) -> list[Iterator[tuple[FilterRoute, Search]]]:
        """The candidate ways, one sweep per structure in increasing cost (the filter index by
        nprobe, the index by boost); the caller stops each sweep at the first that reaches the target."""
        return [self._filter_sweep(filters), self._index_sweep(default, band)]

    def _filter_sweep(self, filters: list[ServedIndex] | None) -> Iterator[tuple[FilterRoute, Search]]:
        if filters is None:
            return
        nlist = faiss.extract_index_ivf(filters[0].index).nlist
        for nprobe in [*(n for n in NPROBE_STEPS if n < nlist), nlist]:
            yield FilterRoute(structure="filter_index", nprobe=nprobe), self.ann(filters, nprobe)

    def _index_sweep(self, default: int | None, band: float) -> Iterator[tuple[FilterRoute, Search]]:
        param = self.parts[0].param
        if param is None:
            return
        for boost in FILTER_BOOSTS:
            value = filtered_knob(param, default, RECALL_K, band, boost)
            if param == EF_SEARCH and (value or 0) > MAX_FILTERED_EF:
                return
            yield FilterRoute(structure="index", boost=boost), self.ann(self.parts, value)

    def micros(self, search: Search, queries: Prepared) -> float:
        """Microseconds per query and part, the queries run one at a time."""
        started = time.perf_counter()
        for i in range(len(queries)):
            search(queries.row(i))
        return round((time.perf_counter() - started) * 1e6 / max(len(queries), 1) / len(self.parts), 1)


@contextmanager
def one_thread() -> Iterator[None]:
    """FAISS on one thread, as the service runs a request, while timing."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def sampling_margin(recall: float, hits: int) -> float:
    """Two standard errors of a recall measured over `hits` possible hits."""
    return float(2 * np.sqrt(recall * (1 - recall) / max(hits, 1)))


def norm_profile(norms: np.ndarray) -> NormProfile:
    """Min, median, p99, max and zero count of document norms."""
    return NormProfile(
        min=float(norms.min()),
        median=float(np.median(norms)),
        p99=float(np.percentile(norms, 99)),
        max=float(norms.max()),
        zero_count=int((norms == 0).sum()),
    )


def norm_bias(exact_rows: np.ndarray, norms: np.ndarray) -> float:
    """Share of exact dot top-10 results held by the 5 % largest-norm documents."""
    top = max(1, int(np.ceil(0.05 * len(norms))))
    threshold = np.partition(norms, len(norms) - top)[len(norms) - top]
    found = exact_rows[exact_rows != MISSING]
    return float(np.mean(norms[found] >= threshold)) if len(found) else 0.0
