"""Prometheus metrics and per-request logging, as a pure ASGI middleware (cheap per request)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.monitor import Figure
from service.core.overlay import Snapshot
from service.core.tuning import Knob

log = logging.getLogger("service.requests")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServiceMetrics:
    """The service's metrics in a private registry (one per app, so tests do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dotcos_requests_total", "HTTP requests", ["route", "metric", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "dotcos_request_seconds",
            "HTTP request latency",
            ["route", "metric"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.reloads = Counter(
            "dotcos_reloads_total", "Version loads by outcome", ["collection", "outcome"], registry=self.registry
        )
        self.arm_requests = Counter(
            "dotcos_arm_requests_total",
            "Requests answered per rollout arm",
            ["collection", "arm", "status"],
            registry=self.registry,
        )
        self.arm_latency = Histogram(
            "dotcos_arm_request_seconds",
            "Latency per rollout arm",
            ["collection", "arm"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        gauge = self._gauge
        self.version = gauge("dotcos_loaded_version_info", "Version served per collection (value 1)", "version")
        self.live_recall = gauge(
            "dotcos_live_recall",
            "Recall@10 of sampled served ANN searches against exact search (no value before the first sample)",
            "metric",
        )
        self.live_bounds = gauge(
            "dotcos_live_recall_bound", "95% confidence interval of dotcos_live_recall", "metric", "bound"
        )
        self.live_samples = gauge(
            "dotcos_live_recall_samples", "Searches measured for dotcos_live_recall (this version)", "metric"
        )
        self.knob = gauge(
            "dotcos_default_knob",
            "Current default efSearch / nprobe per metric (live recall may retune it)",
            "metric",
            "param",
        )
        self.knob_changes = gauge(
            "dotcos_default_knob_changes", "Times live recall retuned the default knob of this version", "metric"
        )
        self.pending = gauge(
            "dotcos_pending_changes",
            "Changes pending on the served version in this worker, by kind (delete, upsert, attributes)",
            "kind",
        )
        self.journal_position = gauge("dotcos_journal_position", "The last change-journal position applied")
        self.overlay_bytes = gauge("dotcos_overlay_bytes", "Memory the changed documents take in this worker")
        self.query_log = gauge(
            "dotcos_query_log_vectors",
            "Query vectors in the collection's query log after this worker's last merge",
            "metric",
        )
        self.arm_recall = gauge(
            "dotcos_arm_live_recall", "dotcos_live_recall of the version each arm reaches", "arm", "metric"
        )
        self.shadow = {
            key: gauge(f"dotcos_shadow_{name}", text, "metric")
            for key, name, text in (
                ("overlap_at_k", "overlap", "Mean overlap@k of ids between the live and the shadow answer"),
                ("score_shift", "score_shift", "Mean shift of the shadow's scores, rank by rank"),
                ("latency_ratio", "latency_ratio", "Mean ratio of the shadow search's duration to the live one's"),
                ("samples", "samples", "Searches shadowed for these figures"),
            )
        }
        self.live: Callable[[], list[tuple[str, str, Figure, Knob | None]]] = list
        self.arms: Callable[[], list[tuple[str, str, str, Figure]]] = list
        self.shadows: Callable[[], list[tuple[str, str, dict[str, Any]]]] = list
        self.changes: Callable[[], list[tuple[str, Snapshot]]] = list
        self.logged: Callable[[], dict[tuple[str, str], int]] = dict

    def _gauge(self, name: str, documentation: str, *labels: str) -> Gauge:
        """A gauge of this registry labelled by collection and `labels`."""
        return Gauge(name, documentation, ["collection", *labels], registry=self.registry)

    def request_done(self, route: str, metric: str, status: int, seconds: float) -> None:
        """Count and time one request; the labelled children are looked up once per label set,
        since `labels()` stringifies and locks on every call and this runs once per request."""
        key = (route, metric, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(route, metric, str(status)), self.latency.labels(route, metric))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def arm_done(self, collection: str, arm: str, status: int, seconds: float) -> None:
        """Count and time one request answered through a rollout arm."""
        self.arm_requests.labels(collection, arm, str(status)).inc()
        self.arm_latency.labels(collection, arm).observe(seconds)

    def loaded(self, collection: str, old: str | None, new: str) -> None:
        if old is not None:
            self.version.remove(collection, old)
        self.version.labels(collection, new).set(1)
        self.reloads.labels(collection, "loaded").inc()

    def refused(self, collection: str, version: str, reason: str) -> None:
        self.reloads.labels(collection, "refused").inc()

    def _update_live(self) -> None:
        """Live recall as of now, one series per served collection and metric (no value without samples)."""
        for gauge in (self.live_recall, self.live_bounds, self.live_samples, self.knob, self.knob_changes):
            gauge.clear()
        for collection, metric, figure, knob in self.live():
            if knob is not None:
                self.knob.labels(collection, metric, knob.param).set(knob.value)
                self.knob_changes.labels(collection, metric).set(knob.changes)
            self.live_samples.labels(collection, metric).set(figure.queries)
            bounds = figure.interval()
            if figure.recall is None or bounds is None:
                continue
            self.live_recall.labels(collection, metric).set(figure.recall)
            self.live_bounds.labels(collection, metric, "lower").set(bounds[0])
            self.live_bounds.labels(collection, metric, "upper").set(bounds[1])

    def _update_changes(self) -> None:
        """The change overlay and query log of every served collection, as of now."""
        for gauge in (self.pending, self.journal_position, self.overlay_bytes, self.query_log):
            gauge.clear()
        for collection, snapshot in self.changes():
            for kind, count in (("delete", len(snapshot.deleted)), ("upsert", snapshot.upserted)):
                self.pending.labels(collection, kind).set(count)
            self.pending.labels(collection, "attributes").set(snapshot.patched)
            self.journal_position.labels(collection).set(snapshot.position)
            self.overlay_bytes.labels(collection).set(snapshot.memory_bytes)
        for (collection, metric), vectors in self.logged().items():
            self.query_log.labels(collection, metric).set(vectors)
        self.arm_recall.clear()
        for collection, arm, metric, figure in self.arms():
            if figure.recall is not None:
                self.arm_recall.labels(collection, arm, metric).set(figure.recall)
        for gauge in self.shadow.values():
            gauge.clear()
        for collection, metric, compared in self.shadows():
            for key, gauge in self.shadow.items():
                if compared.get(key) is not None:
                    gauge.labels(collection, metric).set(compared[key])

    def exposition(self) -> bytes:
        self._update_live()
        self._update_changes()
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every request by route template, metric and status."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def record_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            self._record(scope, status["code"], time.perf_counter() - start)

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        state = scope.get("state", {})
        route: Any = scope.get("route")
        path = state.get("route") or getattr(route, "path", "unmatched")
        metric = state.get("metric", "")
        self.metrics.request_done(path, metric, status, elapsed)
        if state.get("arm"):
            self.metrics.arm_done(state["collection"], state["arm"], status, elapsed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "request method=%s route=%s metric=%s status=%d ms=%.2f",
                scope.get("method"),
                path,
                metric or "-",
                status,
                elapsed * 1000,
            )
