"""The FastAPI application: loading in the lifespan, middleware, routes, error handlers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import admin, routes
from service.api.admission import AdmissionGate
from service.api.errors import install_error_handlers
from service.api.front import QueryFront
from service.api.handlers import ROUTES
from service.api.limits import BodySizeLimit, ContentTypes
from service.api.observability import MetricsMiddleware, ServiceMetrics
from service.api.state import AppState
from service.core import heap
from service.core.loader import Loader, LocalLoader, configure_runtime
from service.core.monitor import RecallMonitor
from service.core.overlay import refresh_all
from service.core.periodic import Periodic
from service.core.querylog import QueryLog
from service.core.registry import Registry
from service.core.searcher import Searcher
from service.core.shadow import ShadowMonitor
from service.settings import ServiceSettings

log = logging.getLogger(__name__)


def _log_example(settings: ServiceSettings, registry: Registry) -> None:
    """A ready-to-paste curl line querying the first collection with its first document."""
    versions = registry.all()
    if not versions:
        log.warning(
            "no collection under %s yet; publish one with `dotcos-build build` (it is picked up without a restart)",
            settings.index_root,
        )
        return
    first = versions[0]
    dim = first.manifest.dim
    body = json.dumps({"vector": [round(dim**-0.5, 4)] * dim, "k": 5, "metric": first.default_metric})
    log.info(
        "ready: curl -s http://%s:%d/v1/collections/%s/search -H 'Content-Type: application/json' -d '%s'",
        settings.host,
        settings.port,
        first.collection,
        body,
    )


def published_openapi(app: FastAPI) -> None:
    """The published document: the query routes' body models (their doors read the body raw, so
    FastAPI does not list them itself), and no automatic 422 on operations without a body (their
    only parameters are string path segments, which cannot fail validation)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for route in ROUTES.values():
            body = route.model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[route.model.__name__] = body
        for operations in schema["paths"].values():
            for operation in operations.values():
                if "requestBody" not in operation:
                    operation["responses"].pop("422", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def version_loader(settings: ServiceSettings, searcher: Searcher) -> Loader:
    """Parts on Ray Serve when DOTCOS_RAY_ADDRESS is set, else every part in this process."""
    if settings.ray_address:
        from service.scaleout.ray_parts import RayLoader

        return RayLoader(settings.index_root, settings.ray, settings.overlay)
    return LocalLoader(settings.index_root, searcher.coalescer, settings.mmap, settings.overlay)


class DotcosApp(FastAPI):
    """FastAPI behind dotcos's own ASGI layers (metrics, CORS, admission, body limit, query front).

    The layers run in front of FastAPI's middleware stack rather than inside it: FastAPI wraps
    every request in its error, telemetry and body-limit middleware before user middleware runs,
    and on the hot query routes that cost more event-loop time than the search. Everything the
    front does not answer goes on to FastAPI unchanged.
    """

    def __init__(self, front: Callable[[ASGIApp], ASGIApp], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._front = front(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._front(scope, receive, send)


def front_layers(settings: ServiceSettings, state: AppState) -> Callable[[ASGIApp], ASGIApp]:
    """Our ASGI layers around an app, outermost first: metrics, CORS, admission, body limit, content
    type, query front."""

    def wrap(app: ASGIApp) -> ASGIApp:
        app = ContentTypes(QueryFront(app, state))
        app = AdmissionGate(BodySizeLimit(app, max_bytes=settings.max_body_bytes), searcher=state.searcher)
        if settings.cors_origins:
            app = CORSMiddleware(
                app,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        return MetricsMiddleware(app, metrics=state.metrics)

    return wrap


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the app; collections load in the background once the lifespan starts."""
    settings = settings or ServiceSettings()
    metrics = ServiceMetrics()
    query_log = (
        QueryLog(settings.index_root, settings.query_log_size, settings.query_log_flush_s)
        if settings.query_log
        else None
    )
    monitor = RecallMonitor(settings.live_recall_sample, settings.live_recall_cpu_share, settings.live_recall_adapt)
    shadows = ShadowMonitor(settings.live_recall_cpu_share, settings.limits)
    searcher = Searcher(settings.limits, settings.execution, query_log, monitor, shadows)
    loader = version_loader(settings, searcher)
    registry = Registry(
        settings.index_root, metrics, loader, heap.settle if settings.gc_freeze else None, settings.max_served_versions
    )
    state = AppState(settings=settings, registry=registry, metrics=metrics, searcher=searcher)
    tailer = Periodic(
        "dotcos-overlay",
        settings.overlay_refresh_s,
        lambda: refresh_all([v.overlay for v in registry.every()]),
        "reading the change journals failed; retrying",
    )
    metrics.changes = lambda: [(v.collection, v.overlay.snapshot) for v in registry.all()]
    metrics.logged = lambda: dict(query_log.sizes) if query_log is not None else {}
    metrics.arms = lambda: [
        (s.current.collection, arm, metric, monitor.figure(s.current.collection, version, metric))
        for s in registry.collections()
        for arm, version in s.labels.items()
        for metric in s.versions[version].manifest.metrics
    ]
    metrics.shadows = lambda: [
        (collection, metric, figure.describe()) for (collection, metric), figure in shadows.figures.items()
    ]
    metrics.live = lambda: [
        (v.collection, metric, monitor.figure(v.collection, v.version, metric), v.knobs.knob(metric))
        for v in registry.all()
        for metric in v.manifest.metrics
    ]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The event loop runs only inline searches (cheap by definition, service.core.batching):
        # one thread each, as a second would cost a wake-up per search for little work.
        configure_runtime(1, settings.blas_threshold, settings.switch_interval_ms)
        log.info(
            "loading collections from %s (reload every %ss, %d FAISS threads per executor search)",
            settings.index_root,
            settings.reload_interval,
            settings.faiss_threads,
        )
        loader.start()
        registry.start(settings.reload_interval, lambda: _log_example(settings, registry))
        if settings.workers > 1:
            # uvicorn's workers share one socket and a worker accepts once its lifespan has started:
            # waiting here keeps a loading worker from taking searches it would answer with 503.
            await asyncio.to_thread(registry.ready.wait)
        if query_log is not None:
            query_log.start()
        monitor.start()
        shadows.start()
        tailer.start()
        yield
        tailer.stop()
        shadows.stop()
        monitor.stop()
        registry.stop()
        if query_log is not None:
            query_log.stop()
        loader.close()
        searcher.close()

    app = DotcosApp(
        front_layers(settings, state),
        title="dotcos",
        version="0.1.0",
        lifespan=lifespan,
        description="Top-k retrieval by dot product or cosine, chosen per request.",
    )
    app.state.dotcos = state
    app.include_router(routes.router)
    app.include_router(admin.router)
    install_error_handlers(app)
    published_openapi(app)
    return app
