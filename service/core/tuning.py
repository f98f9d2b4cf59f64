"""Holding the recall target on live traffic: each metric's default knob of a served version,
raised one step when live recall's upper bound falls below the collection's target recall, and
lowered one step when its lower bound stays comfortably above it, within bounds.

Every change is logged and counted; after a change the figure starts again, so the next decision
rests on searches made at the new value (that waiting is the hysteresis). A new version starts
from its manifest's values; requests with their own ef_search / nprobe are never overridden.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass

from index_builder.artifact.manifest import Manifest
from index_builder.retrieval.faiss_params import EF_SEARCH, NPROBE

log = logging.getLogger(__name__)

STEP = 1.5
MIN_QUERIES = 30
MARGIN = 0.02
"""Lower the knob only when the lower bound is this far above the target."""


@dataclass
class Knob:
    param: str
    value: int
    built: int
    changes: int = 0


def _ceiling(param: str, factory: str, max_ef: int) -> int:
    """The largest value worth trying: the request limit for efSearch, the list count for nprobe."""
    if param == EF_SEARCH:
        return max_ef
    lists = re.search(r"IVF(\d+)", factory)
    return int(lists.group(1)) if lists else max_ef


class Knobs:
    """The current default knob of every approximate metric of one version."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.target = {name: _target(manifest, name) for name in manifest.metrics}
        self._knobs: dict[str, Knob] = {}
        for name, entry in manifest.metrics.items():
            for param in (EF_SEARCH, NPROBE):
                if param in entry.index.search_params:
                    value = entry.index.search_params[param]
                    self._knobs[name] = Knob(param, value, value)
        self._lock = threading.Lock()

    def current(self, metric: str) -> dict[str, int]:
        """The search params a request without its own knob uses now."""
        knob = self._knobs.get(metric)
        if knob is None:
            return self.manifest.metrics[metric].index.search_params
        return {knob.param: knob.value}

    def knob(self, metric: str) -> Knob | None:
        return self._knobs.get(metric)

    def adjust(
        self, collection: str, metric: str, queries: int, bounds: tuple[float, float], max_ef: int
    ) -> str | None:
        """One step up or down when the figure says so; "raised", "lowered" or None."""
        knob = self._knobs.get(metric)
        if knob is None or queries < MIN_QUERIES:
            return None
        target = self.target[metric]
        lower, upper = bounds
        ceiling = _ceiling(knob.param, self.manifest.metrics[metric].index.factory, max_ef)
        floor = max(1, knob.built // 4)
        with self._lock:
            old = knob.value
            if upper < target and knob.value < ceiling:
                knob.value, direction = min(ceiling, math.ceil(knob.value * STEP)), "raised"
            elif lower > target + MARGIN and knob.value > floor:
                knob.value, direction = max(floor, math.floor(knob.value / STEP)), "lowered"
            else:
                return None
            knob.changes += 1
        log.info(
            "%s %s (version %s): live recall@10 in [%.3f, %.3f] against the target %.2f: %s %s from %d to %d",
            collection,
            metric,
            self.manifest.version,
            lower,
            upper,
            target,
            direction,
            knob.param,
            old,
            knob.value,
        )
        return direction


def _target(manifest: Manifest, metric: str) -> float:
    check = manifest.metrics[metric].index.self_check
    target = check.target_recall if check else manifest.build_params.get("target_recall", 0.95)
    return float(target) if isinstance(target, int | float) else 0.95
