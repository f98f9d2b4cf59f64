"""Measuring a built index: recall@10 against exact search, default knob tuning, norm profile."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import faiss
import numpy as np

from index_builder.artifact.manifest import NormProfile, SelfCheck, SweepPoint
from index_builder.retrieval.ann import FILTER_BANDS, ServedIndex, ann_topk, filtered_knob
from index_builder.retrieval.faiss_params import EF_SEARCH, NPROBE
from index_builder.retrieval.rowsets import Mask, selector
from index_builder.retrieval.scoring import MISSING, Prepared, exact_topk, recall_at_k
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
MAX_FILTERED_EF = 4096
"""The service's default DOTCOS_MAX_EF_SEARCH: a band needing more is scanned exactly."""


def filtered_boosts(
    parts: list[ServedIndex], offsets: list[int], queries: np.ndarray, default: int | None, target: float, seed: int
) -> dict[str, int | None]:
    """Per selectivity band, the smallest boost of the filtered knob (ann.filtered_knob) at which a
    search among a random share of the documents reaches `target` recall@10 against exact search
    among the same documents, with two standard errors of the sample to spare; None when no boost
    does within the knob's range (the service then scans such filters exactly). Random filters
    are the baseline: filters correlated with the query can do better or worse."""
    param = parts[0].param
    if param is None:
        return {}
    prepared = Prepared.of(parts[0].space, queries[:FILTER_QUERIES])
    wanted = min(1.0, target + sampling_margin(target, len(prepared) * RECALL_K))
    rng = np.random.default_rng(seed)
    out: dict[str, int | None] = {}
    for band in FILTER_BANDS:
        masks = [rng.random(len(p.vectors)) < band for p in parts]
        allowed = [m if p.indexed is None else m & p.indexed for m, p in zip(masks, parts, strict=True)]
        exact = [
            exact_topk(p.space, prepared, p.vectors, p.scales, RECALL_K, candidates=np.flatnonzero(a))
            for p, a in zip(parts, allowed, strict=True)
        ]
        truth, _ = merge_parts(exact, offsets, RECALL_K)
        out[str(band)] = None
        for boost in FILTER_BOOSTS:
            value = filtered_knob(param, default, RECALL_K, band, boost)
            if param == EF_SEARCH and (value or 0) > MAX_FILTERED_EF:
                break
            found = [_filtered(p, prepared, value, a) for p, a in zip(parts, allowed, strict=True)]
            scores, rows = merge_parts(found, offsets, RECALL_K)
            if recall_at_k(truth, scores, rows) >= wanted:
                out[str(band)] = boost
                break
    return out


def sampling_margin(recall: float, hits: int) -> float:
    """Two standard errors of a recall measured over `hits` possible hits."""
    return float(2 * np.sqrt(recall * (1 - recall) / max(hits, 1)))


def _filtered(
    part: ServedIndex, queries: Prepared, value: int | None, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    chain = selector(Mask(allowed))
    return ann_topk(part, queries, RECALL_K, value, chain[-1])


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
