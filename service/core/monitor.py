"""Live recall: a sampled share of served ANN searches re-run exactly in the background, and the
recall@10 the service actually delivers, per collection and metric, with a confidence interval.

Never in the request path: a served search is offered (a random draw), a bounded queue takes it
or drops its oldest entry, and one background thread wakes once a second to re-run what was
sampled exactly, batched into one call per version, metric and knob (filtered samples one by
one), pausing so that it uses at most DOTCOS_LIVE_RECALL_CPU_SHARE of one core. Left out: flat
indexes (exact already), exact requests, requests with their own ef_search / nprobe (they are
not the default's figure), group_by requests and score thresholds. Filtered requests are compared with the exact
answer under the same filter. Figures belong to one version; a new version starts from zero.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from index_builder.retrieval.scoring import Prepared, found_at_k
from service.core.periodic import Periodic
from service.core.query import Answer, Query
from service.core.version import Version

log = logging.getLogger(__name__)

Z95 = 1.96
ROUND_S = 1.0
KEPT_VERSIONS = 4
"""Versions of a collection whose live recall is kept (served at once: current and aliases)."""


@dataclass
class Figure:
    """Recall measured on `queries` sampled searches: `hits` of `possible` exact top-k results found."""

    version: str
    queries: int = 0
    hits: int = 0
    possible: int = 0

    @property
    def recall(self) -> float | None:
        return self.hits / self.possible if self.possible else None

    def interval(self) -> tuple[float, float] | None:
        """A 95 % Wilson interval, treating each exact result as one trial."""
        if not self.possible:
            return None
        n, p = self.possible, self.hits / self.possible
        centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
        half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def describe(self) -> dict[str, Any]:
        bounds = self.interval()
        return {
            "recall_at_10": None if self.recall is None else round(self.recall, 4),
            "samples": self.queries,
            "lower": None if bounds is None else round(bounds[0], 4),
            "upper": None if bounds is None else round(bounds[1], 4),
        }


@dataclass(frozen=True)
class _Sample:
    version: Version
    query: Query
    served: Answer
    loop: asyncio.AbstractEventLoop


class RecallMonitor:
    """Samples served searches and keeps live recall figures per (collection, metric)."""

    def __init__(
        self, share: float, cpu_share: float, adapt: bool, queue_size: int = 256, seed: int | None = None
    ) -> None:
        self.share, self.cpu_share, self.adapt = share, cpu_share, adapt
        self.random = random.Random(seed)
        self.queue: deque[_Sample] = deque(maxlen=queue_size)
        self.figures: dict[tuple[str, str, str], Figure] = {}
        self._lock = threading.Lock()
        self._rounds = Periodic("dotcos-live-recall", ROUND_S, self._round, "a live recall round failed")

    @staticmethod
    def measurable(query: Query, exact_index: bool) -> bool:
        options = query.options
        return not (exact_index or options.exact or options.ef_search or options.nprobe or options.group_by is not None)

    def offer(self, version: Version, query: Query, served: Answer) -> None:
        """Called on the event loop after a search was answered: maybe keep it for an exact re-run."""
        if self.share <= 0 or self.random.random() >= self.share:
            return
        self.queue.append(_Sample(version, query, served, asyncio.get_running_loop()))

    def figure(self, collection: str, version: str, metric: str) -> Figure:
        """Live recall of one served version (several versions of a collection may be served)."""
        return self.figures.get((collection, version, metric)) or Figure(version)

    def start(self) -> None:
        self._rounds.start()

    def stop(self) -> None:
        self._rounds.stop()

    def _round(self) -> None:
        """Re-run what was sampled since the last round, batched (a thread that wakes rarely and
        makes few calls takes the interpreter lock from the event loop rarely), then wait at least
        ROUND_S and long enough to keep within cpu_share of one core."""
        started = time.perf_counter()
        samples = [self.queue.popleft() for _ in range(len(self.queue))]
        for group in _groups(samples):
            try:
                self._measure(group)
            except Exception as exc:  # a swap or shutdown mid-measure loses a round, nothing else
                log.debug("live recall samples of %s dropped: %s", group[0].version.collection, exc)
        self._rounds.interval = max(ROUND_S, (time.perf_counter() - started) * (1 / self.cpu_share - 1))

    def _measure(self, group: list[_Sample]) -> None:
        """Re-run one group's queries exactly in one call and count what each served answer found."""
        first = group[0]
        version, metric = first.version, first.query.metric
        sizes, ks = [len(s.query.queries) for s in group], [s.query.options.k for s in group]
        batch = first.query.batched(Prepared.concat([s.query.queries for s in group]), max(ks))
        exact = replace(batch, options=replace(batch.options, exact=True))
        truth = asyncio.run_coroutine_threadsafe(version.search(exact), first.loop).result(timeout=60)
        with self._lock:
            for sample, answer in zip(group, truth.split(sizes, ks), strict=True):
                self._count(version, metric, sample, answer)

    def _count(self, version: Version, metric: str, sample: _Sample, truth: Answer) -> None:
        hits, possible = found_at_k(truth.scores, sample.served.scores, sample.served.rows)
        key = (version.collection, version.version, metric)
        figure = self.figures.get(key)
        if figure is None:
            figure = self.figures[key] = Figure(version.version)
            self._forget_old(version.collection)
        if sample.query.defaults != version.knobs.current(metric):
            return
        figure.queries += len(possible)
        figure.hits += int(hits.sum())
        figure.possible += int(possible.sum())
        bounds = figure.interval()
        if not self.adapt or bounds is None:
            return
        changed = version.knobs.adjust(
            version.collection, metric, figure.queries, bounds, sample.query.limits.max_ef_search
        )
        if changed:
            self.figures[key] = Figure(version.version)

    def _forget_old(self, collection: str) -> None:
        """Keep the figures of the last KEPT_VERSIONS versions of a collection measured."""
        versions = list(dict.fromkeys(v for c, v, _ in self.figures if c == collection))
        for gone in versions[:-KEPT_VERSIONS]:
            for key in [k for k in self.figures if k[0] == collection and k[1] == gone]:
                del self.figures[key]


def _groups(samples: list[_Sample]) -> list[list[_Sample]]:
    """Samples that one exact call can answer together: same version, metric and knob, no filter
    (a filtered sample is its own group)."""
    groups: dict[object, list[_Sample]] = {}
    for at, sample in enumerate(samples):
        query = sample.query
        plain = query.where is None and not query.fields
        key = (id(sample.version), query.metric, tuple(query.defaults.items())) if plain else at
        groups.setdefault(key, []).append(sample)
    return list(groups.values())
