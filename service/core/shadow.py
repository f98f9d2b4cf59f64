"""Shadow traffic: a sample of live searches also run, in the background, on the shadow arm's
version (a candidate of the same model), and compared with what was served.

Never in the request path: a served search is offered after its answer (a random draw), a
bounded queue takes it or drops its oldest entry, and one background thread runs what was
sampled on the shadow version, pausing so that it uses at most its share of one core. Each
sample gives the overlap@k of ids between the live and the shadow answer, the mean shift of the
shadow's scores rank by rank, and the ratio of the two searches' durations. Figures belong to one
(live, shadow) pair of versions; a new pair starts from zero. Left out: requests with group_by,
offset or MMR (their answer is not the plain top-k).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from index_builder.retrieval.scoring import MISSING
from service.core.config import Limits
from service.core.periodic import Periodic
from service.core.query import Answer, SearchOptions
from service.core.version import Version

log = logging.getLogger(__name__)

ROUND_S = 1.0


@dataclass
class ShadowFigure:
    """Sums over `samples` shadowed queries of one live and one shadow version."""

    live: str
    shadow: str
    samples: int = 0
    overlap: float = 0.0
    shift: float = 0.0
    latency: float = 0.0

    def describe(self) -> dict[str, Any]:
        mean = (lambda total: round(total / self.samples, 4)) if self.samples else (lambda total: None)
        return {
            "live_version": self.live,
            "shadow_version": self.shadow,
            "samples": self.samples,
            "overlap_at_k": mean(self.overlap),
            "score_shift": mean(self.shift),
            "latency_ratio": mean(self.latency),
        }


@dataclass(frozen=True)
class _Sample:
    live: Version
    shadow: Version
    metric: str
    vectors: np.ndarray
    options: SearchOptions
    served: Answer
    seconds: float
    loop: asyncio.AbstractEventLoop


class ShadowMonitor:
    """Samples served searches onto the shadow version and keeps the comparison per (collection, metric)."""

    def __init__(self, cpu_share: float, limits: Limits, queue_size: int = 256, seed: int | None = None) -> None:
        self.cpu_share, self.limits = cpu_share, limits
        self.random = random.Random(seed)
        self.queue: deque[_Sample] = deque(maxlen=queue_size)
        self.figures: dict[tuple[str, str], ShadowFigure] = {}
        self._lock = threading.Lock()
        self._rounds = Periodic("dotcos-shadow", ROUND_S, self._round, "a shadow round failed")

    @staticmethod
    def shadowable(options: SearchOptions) -> bool:
        return options.group_by is None and options.offset == 0 and options.mmr is None

    def offer(
        self, live: Version, shadow: Version, share: float, sample: tuple[str, np.ndarray, SearchOptions, Answer, float]
    ) -> None:
        """Called on the event loop after a search was answered: maybe keep it for the shadow."""
        metric, vectors, options, served, seconds = sample
        if self.random.random() >= share or not self.shadowable(options):
            return
        loop = asyncio.get_running_loop()
        self.queue.append(_Sample(live, shadow, metric, vectors, options, served, seconds, loop))

    def figure(self, collection: str, metric: str) -> ShadowFigure | None:
        return self.figures.get((collection, metric))

    def start(self) -> None:
        self._rounds.start()

    def stop(self) -> None:
        self._rounds.stop()

    def _round(self) -> None:
        started = time.perf_counter()
        for _ in range(len(self.queue)):
            sample = self.queue.popleft()
            try:
                self._compare(sample)
            except Exception as exc:  # a swap or shutdown mid-run loses a sample, nothing else
                log.debug("shadow sample of %s dropped: %s", sample.live.collection, exc)
        self._rounds.interval = max(ROUND_S, (time.perf_counter() - started) * (1 / self.cpu_share - 1))

    def _compare(self, sample: _Sample) -> None:
        """Run one sample on the shadow version and add its comparison with the live answer."""
        options = replace(sample.options, metric=sample.metric)
        query = sample.shadow.query(sample.vectors, options, self.limits, "vector")

        async def timed() -> tuple[Answer, float]:
            start = time.perf_counter()
            answer = await sample.shadow.search(query)
            return answer, time.perf_counter() - start

        answer, seconds = asyncio.run_coroutine_threadsafe(timed(), sample.loop).result(timeout=60)
        overlap, shift = compare(sample.served, answer)
        key = (sample.live.collection, sample.metric)
        with self._lock:
            figure = self.figures.get(key)
            if figure is None or (figure.live, figure.shadow) != (sample.live.version, sample.shadow.version):
                figure = self.figures[key] = ShadowFigure(sample.live.version, sample.shadow.version)
            figure.samples += len(overlap)
            figure.overlap += float(overlap.sum())
            figure.shift += float(np.nansum(shift))
            figure.latency += len(overlap) * seconds / max(sample.seconds, 1e-9)


def compare(live: Answer, shadow: Answer) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the overlap@k of the two answers' ids (k: the live answer's hits), and the mean
    shift of the shadow's scores over the ranks both answered."""
    overlaps, shifts = [], []
    for line in range(len(live.rows)):
        served = live.rows[line] != MISSING
        found = shadow.rows[line] != MISSING
        ids = {str(i) for i in live.labels[line, served]}
        others = {str(i) for i in shadow.labels[line, found]}
        overlaps.append(len(ids & others) / len(ids) if ids else 1.0)
        ranks = min(int(served.sum()), int(found.sum()))
        gap = shadow.scores[line, :ranks].astype(np.float64) - live.scores[line, :ranks]
        shifts.append(float(gap.mean()) if ranks else np.nan)
    return np.array(overlaps), np.array(shifts)
