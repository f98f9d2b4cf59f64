"""HTTP routes: the FastAPI doors of the query handlers (service.api.handlers, which hand FAISS
work to the core's executor, coalesced) and the describe routes (plain `def`)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.binary import BINARY, BINARY_BODY, PARAMETER_SCHEMAS, PARAMETERS
from service.api.errors import error_response, error_responses
from service.api.handlers import ROUTES, Call, Route, answer
from service.api.schemas import (
    BandPlan,
    ChangesInfo,
    CollectionInfo,
    CollectionList,
    MetricInfo,
    PartReplicas,
    ReplicaInfo,
    ServedVersion,
    Status,
)
from service.api.state import AppState
from service.core.planner import band_choice
from service.core.serving import Served
from service.core.version import Version

router = APIRouter()


class JSONBytes(Response):
    """A JSON response rendered by orjson (the handlers return plain dicts and lists)."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.dotcos
    return state


@router.get("/healthz", response_model=Status)
async def healthz() -> Response:
    """200 while the process lives: the liveness probe."""
    return JSONBytes({"status": "ok"})


@router.get("/readyz", response_model=Status, responses=error_responses(503))
async def readyz(request: Request) -> Response:
    """503 until the initial load has finished, while a published collection is not served (naming
    it and why) and while a part on a cluster has no running replica, then 200 with the served
    versions: the readiness probe. With several workers, each takes connections only once its own
    initial load has finished."""
    state = app_state(request)
    if not state.registry.ready.is_set():
        return error_response(503, "not_ready", "still loading collections", {"Retry-After": "1"})
    unserved = state.registry.unserved()
    if unserved:
        why = "; ".join(f"{name}: {reason}" for name, reason in sorted(unserved.items()))
        return error_response(503, "not_ready", f"not serving every published collection: {why}", {"Retry-After": "1"})
    missing = await asyncio.to_thread(without_replica, state.registry.every())
    if missing:
        why = f"no running replica of {', '.join(missing)}"
        return error_response(503, "not_ready", why, {"Retry-After": "1"})
    served = {v.collection: v.version for v in state.registry.all()}
    refused = state.registry.refused()
    return JSONBytes({"status": "ready", "collections": served, **({"refused": refused} if refused else {})})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus exposition of this worker: requests and latency per route, metric and status,
    loaded versions and reloads, live recall, pending changes, shadow and arm figures."""
    body = app_state(request).metrics.exposition()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def describe(served: Served, state: AppState) -> dict[str, object]:
    """The public description of a served collection: its current version with its live recall so
    far, every served version and what it holds, its route."""
    version = served.current
    manifest = version.manifest
    monitor = state.searcher.monitor
    metrics = {}
    for name, entry in manifest.metrics.items():
        index, check = entry.index, entry.index.self_check
        metrics[name] = MetricInfo(
            index_kind=index.kind,
            factory=index.factory,
            layout=index.layout,
            count=index.count,
            exact=index.exact,
            search_params=version.knobs.current(name),
            built_search_params=index.search_params,
            recall_at_10=check.recall_at_10 if check else None,
            self_check_queries=check.queries if check else None,
            self_check_query_source=check.query_source if check else None,
            live_recall=None
            if monitor is None or index.exact
            else monitor.figure(version.collection, version.version, name).describe(),
            filter_index=None if index.filter_index is None else index.filter_index.factory,
            value_indexes=[f"{value.attribute}={value.value}" for value in index.value_indexes],
            filter_plan={
                band: BandPlan(**band_choice(ways, index.exact_micros.get(band)), ways=ways)
                for band, ways in index.filter_plan.items()
            },
        )
    snapshot = version.overlay.snapshot
    changes = ChangesInfo(
        **snapshot.describe(manifest.journal_position),
        at_build=manifest.changes,
        restored_from=manifest.restored_from,
    )
    return CollectionInfo(
        name=version.collection,
        version=version.version,
        count=snapshot.visible(manifest.count),
        built_count=manifest.count,
        dim=manifest.dim,
        default_metric=version.default_metric,
        metrics=metrics,
        not_built=manifest.not_built,
        created_at=manifest.created_at,
        loaded_at=version.loaded_at,
        load_seconds=round(version.load_seconds, 4),
        norm_profile=manifest.norm_profile.model_dump(),
        shards=len(manifest.parts()),
        attributes=manifest.attributes,
        changes=changes,
        parts=_parts(version),
        model=manifest.model,
        served={
            label: ServedVersion(version=v, model=served.versions[v].manifest.model, memory=served.versions[v].memory())
            for label, v in served.labels.items()
        },
        route=None if served.route is None else served.route.model_dump(exclude_none=True),
        refused=served.refused,
        shadow=_shadow(served, state),
    ).model_dump(mode="json")


def _parts(version: Version) -> list[PartReplicas] | None:
    """Where each part's replicas run, when the parts are on a cluster."""
    placement = version.parts.placement()
    if placement is None:
        return None
    return [
        PartReplicas(part=i, replicas=[ReplicaInfo(**asdict(r)) for r in replicas])
        for i, replicas in enumerate(placement)
    ]


def without_replica(versions: list[Version]) -> list[str]:
    """'collection/version part N' for every part of a served version with no running replica."""
    return [
        f"{v.collection}/{v.version} part {i}"
        for v in versions
        for i, replicas in enumerate(v.parts.placement() or [])
        if not any(r.running for r in replicas)
    ]


def _shadow(served: Served, state: AppState) -> dict[str, object] | None:
    """The shadow's figures per metric, when the collection has a shadow."""
    shadows = state.searcher.shadows
    if served.route is None or served.route.shadow is None or shadows is None:
        return None
    name = served.current.collection
    figures = {metric: shadows.figure(name, metric) for metric in served.current.manifest.metrics}
    measured = {metric: figure.describe() for metric, figure in figures.items() if figure is not None}
    return {"arm": served.route.shadow.arm, "sample": served.route.shadow.sample, "metrics": measured}


@router.get("/v1/collections", response_model=CollectionList)
def list_collections(request: Request) -> Response:
    """Every served collection, described as `GET /v1/collections/{name}` does."""
    state = app_state(request)
    return JSONBytes({"collections": [describe(s, state) for s in state.registry.collections()]})


@router.get("/v1/collections/{name}", response_model=CollectionInfo, responses=error_responses(404))
def get_collection(name: str, request: Request) -> Response:
    """What is served under this name: the version, `count` (standing now) and `built_count`, dim,
    model, the metrics with their index, recall self-check and what it was measured on, the default
    and built knobs, live recall, the filter plan per band, pending changes, the served versions with
    their memory, the route and the shadow."""
    state = app_state(request)
    return JSONBytes(describe(state.registry.served(name), state))


def _request_body(route: Route, body_schema: dict[str, str]) -> dict[str, object]:
    """The OpenAPI request of a query route: JSON, and for the searches also the binary body
    (service.api.binary) with its options as query parameters."""
    content: dict[str, object] = {"application/json": {"schema": body_schema}}
    if not route.suffix.startswith("search"):
        return {"requestBody": {"required": True, "content": content}}
    content[BINARY] = {"schema": {"type": "string", "format": "binary", "description": BINARY_BODY}}
    parameters = [
        {"name": key, "in": "query", "required": False, "description": f"binary body only: {text}", "schema": schema}
        for (key, text), schema in zip(PARAMETERS.items(), PARAMETER_SCHEMAS, strict=True)
    ]
    return {"requestBody": {"required": True, "content": content}, "parameters": parameters}


def _query_route(route: Route) -> None:
    """The FastAPI door of a query route: the body is read raw and parsed by the same handler as
    the ASGI front's (service.api.handlers); its model is declared for the OpenAPI document only."""
    body_schema = {"$ref": f"#/components/schemas/{route.model.__name__}"}

    async def endpoint(name: str, request: Request) -> Response:
        call = Call(name, await request.body(), request.headers, request.url.query)
        reply = await answer(route, app_state(request), call, request.url.path)
        request.state.metric, request.state.collection, request.state.arm = reply.metric, reply.collection, reply.arm
        return reply.response()

    endpoint.__doc__ = route.handler.__doc__
    router.add_api_route(
        route.template,
        endpoint,
        methods=["POST"],
        response_model=route.response,
        responses=error_responses(*route.errors),
        name=route.suffix.replace("/", "_"),
        openapi_extra=_request_body(route, body_schema),
    )


for _route in ROUTES.values():
    _query_route(_route)
