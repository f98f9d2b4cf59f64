"""How one part answers a filtered search: the planner's choice among the index, the filter index
and an exact scan, then the search itself.

Each part turns the request's tree (attribute conditions and the include / exclude ids) into
the set of its rows that pass. The build measured, per selectivity band, which way keeps the
recall target cheapest (index_builder.evaluate.filter_plan): the index with the set as an ID
selector and its knob raised for the selectivity, the filter index (IVF lists over int8 codes,
whose cost does not grow as the share passing falls) at a measured nprobe, or an exact scan.
A request takes its band's way unless scanning its own passing documents exactly costs less.
A search that comes back short is redone exactly, so whenever k documents pass, k come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from index_builder.artifact.manifest import FilterRoute
from index_builder.retrieval.ann import ServedIndex, ann_topk, filter_band, filtered_knob
from index_builder.retrieval.faiss_params import EF_SEARCH
from index_builder.retrieval.rowsets import AllBut, RowSet, count, listed, restrict, selector
from index_builder.retrieval.scoring import MISSING, exact_topk, scan_costs_less
from service.core.query import Query


@dataclass(frozen=True)
class Way:
    """How a filtered search runs: `exact`, or through `index` or `filter_index` at knob `value`,
    with the build's measured microseconds per query when it has them."""

    structure: str
    value: int | None = None
    micros: float | None = None


EXACT = Way("exact")


def run_search(
    served: ServedIndex, lists: ServedIndex | None, query: Query, allowed: RowSet | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, local rows) of one part among the rows that pass the query's filter (`allowed`;
    None: every row), through its index, its filter index `lists` or an exact scan."""
    k, options, queries = query.options.k, query.options, query.queries
    if allowed is None:
        if options.exact and not served.exact:
            return exact_topk(served.space, queries, served.vectors, served.scales, k)
        return ann_topk(served, queries, k, query.knob(served.param))
    allowed = restrict(allowed, served.indexed)
    eligible = count(allowed, served.ntotal)
    if eligible == 0:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), MISSING, np.int64)
    way = EXACT if options.exact and not served.exact else choose(served, lists, query, allowed, eligible)
    if way.structure == "exact":
        return _exact(served, query, allowed)
    chain = selector(allowed, len(served.vectors))
    searched = lists if way.structure == "filter_index" and lists is not None else served
    scores, rows = ann_topk(searched, queries, k, way.value, chain[-1])
    if ((rows != MISSING).sum(axis=1) < min(k, eligible)).any():
        return _exact(served, query, allowed)
    return scores, rows


def choose(served: ServedIndex, lists: ServedIndex | None, query: Query, allowed: RowSet, eligible: int) -> Way:
    """The cheapest way the build measured for the band at or below the selectivity (at least as
    demanding), an exact scan priced at this selectivity included. Where the build measured no
    costs, an exact scan when it reads no more rows, priced in distance computations, than the
    search compares with (its answer is exact); where it measured no way, the index with its knob
    raised for the selectivity. Measured time wins over the distance model: a gathered row costs
    far more than an int8 list entry (at 5 % of 1M rows, 7.7 ms scanned against 2.7 ms through
    the filter index, though the model priced the scan at 80k distances and the lists at 192k).
    An exclusion list keeps most documents: it is always searched, its knob raised by its length."""
    if isinstance(allowed, AllBut):
        wide = max(query.knob(served.param) or 0, query.options.k)
        if served.param != EF_SEARCH:
            return Way("index", query.knob(served.param))
        return Way("index", min(wide + min(len(allowed.rows), wide), query.limits.max_ef_search))
    selectivity = eligible / served.ntotal
    band = filter_band(selectivity)
    routes = query.plan.get(band) if band is not None else None
    threshold = query.limits.exact_filter_threshold
    if routes is None:
        value = filtered_knob(served.param, query.knob(served.param), query.options.k, selectivity)
        plain = Way("index", min(value, query.limits.max_ef_search) if served.param == EF_SEARCH and value else value)
        return EXACT if _scan_costs_less(served, plain, eligible, threshold) else plain
    ways = [way for route in routes if (way := _way(route, served, lists, query, float(str(band)))) is not None]
    if not ways:
        return EXACT
    best = min(ways, key=lambda way: way.micros if way.micros is not None else np.inf)
    if threshold is None and best.micros is not None and query.exact_micros:
        return EXACT if scan_micros(query.exact_micros, selectivity) <= best.micros else best
    return (
        EXACT
        if _scan_costs_less(lists if best.structure == "filter_index" else served, best, eligible, threshold)
        else best
    )


def _way(route: FilterRoute, served: ServedIndex, lists: ServedIndex | None, query: Query, band: float) -> Way | None:
    """A measured route as this request takes it (None when it cannot: no filter index loaded, or
    the raised knob past DOTCOS_MAX_EF_SEARCH)."""
    if route.structure == "filter_index":
        return None if lists is None else Way("filter_index", route.nprobe, route.micros)
    value = filtered_knob(served.param, query.knob(served.param), query.options.k, band, route.boost or 1)
    if served.param == EF_SEARCH and (value or 0) > query.limits.max_ef_search:
        return None
    return Way("index", value, route.micros)


def _scan_costs_less(searched: ServedIndex | None, way: Way, eligible: int, threshold: int | None) -> bool:
    """Scan when the passing documents are at most DOTCOS_EXACT_FILTER_THRESHOLD (when set), else
    when the scan reads fewer rows, priced in distance computations, than the search compares with
    (scoring.scan_costs_less)."""
    if threshold is not None:
        return eligible <= threshold
    if searched is None:
        return False
    return scan_costs_less(eligible, len(searched.vectors), searched.search_cost(way.value))


def band_choice(ways: list[FilterRoute], exact_micros: float | None) -> dict[str, Any]:
    """What the planner uses at a band's own selectivity, and its measured cost (the first way when
    costs were not measured)."""
    measured: list[tuple[float, str]] = [(way.micros, way.structure) for way in ways if way.micros is not None]
    if exact_micros is not None:
        measured.append((exact_micros, "exact"))
    if measured:
        micros, uses = min(measured)
        return {"uses": uses, "micros": micros, "exact_micros": exact_micros}
    return {"uses": ways[0].structure if ways else "exact", "micros": None, "exact_micros": exact_micros}


def scan_micros(measured: dict[str, float], selectivity: float) -> float:
    """An exact scan's cost at a selectivity from the build's measurements per band: interpolated
    between bands, in proportion to the nearest band outside them."""
    points = sorted((float(band), float(cost)) for band, cost in measured.items())
    (low, low_cost), (high, high_cost) = points[0], points[-1]
    if selectivity <= low:
        return low_cost * selectivity / low
    if selectivity >= high:
        return high_cost * selectivity / high
    return float(np.interp(selectivity, [p for p, _ in points], [c for _, c in points]))


def _exact(served: ServedIndex, query: Query, allowed: RowSet) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over the passing rows (for an exclusion: over all, the excluded dropped)."""
    k, queries = query.options.k, query.queries
    if isinstance(allowed, AllBut):
        scores, rows = exact_topk(served.space, queries, served.vectors, served.scales, k + len(allowed.rows))
        return _drop(scores, rows, allowed.rows, k)
    pool = listed(allowed, len(served.vectors))
    return exact_topk(served.space, queries, served.vectors, served.scales, k, candidates=pool)


def _drop(scores: np.ndarray, rows: np.ndarray, banned: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep_s = np.full((len(rows), k), -np.inf, dtype=np.float32)
    keep_r = np.full((len(rows), k), MISSING, dtype=np.int64)
    for i in range(len(rows)):
        ok = (rows[i] != MISSING) & ~np.isin(rows[i], banned)
        s, r = scores[i][ok][:k], rows[i][ok][:k]
        keep_s[i, : len(s)], keep_r[i, : len(r)] = s, r
    return keep_s, keep_r
