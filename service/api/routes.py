"""HTTP routes: parse, call the core, shape the answer. Search handlers are `async` and hand
FAISS work to the core's executor explicitly (coalesced); describe handlers are plain `def`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

from index_builder.contract.errors import InputError
from service.api.errors import QUERY_ERRORS, error_response, error_responses
from service.api.schemas import (
    BatchSearchRequest,
    BatchSearchResponse,
    CollectionInfo,
    CollectionList,
    MetricInfo,
    ScoreRequest,
    ScoreResponse,
    SearchRequest,
    SearchResponse,
    SimilarRequest,
    Status,
)
from service.api.state import AppState, app_state
from service.core.items import ScoreQuery, SimilarQuery
from service.core.loader import Served
from service.core.search import Hit, SearchOptions

router = APIRouter()


class JSONBytes(Response):
    """A JSON response rendered by orjson (the handlers return plain dicts and lists)."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def to_matrix(rows: list[list[float]], field: str) -> np.ndarray:
    """Float32 (n, d) array from JSON lists, naming the first row whose length differs."""
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InputError(f"{field}[{i}]: dimension {width} expected (as {field}[0]), got {len(row)}")
    values = np.fromiter(rows[0], np.float64, width)[None, :] if len(rows) == 1 else np.array(rows, np.float64)
    return as_float32(values, field)


def as_float32(values: np.ndarray, field: str) -> np.ndarray:
    """Float32 copy of a float64 (n, d) array, naming the first finite number float32 cannot hold
    (NaN and Inf are left to the collection's own check)."""
    huge = (np.abs(values) > FLOAT32_MAX) & np.isfinite(values)
    if huge.any():
        line, col = (int(x[0]) for x in np.nonzero(huge))
        where = f"{field}[{line}]" if len(values) > 1 else field
        raise InputError(f"{where}: {values[line, col]:g} at position {col} is outside the float32 range (±3.4e38)")
    return values.astype(np.float32)


def _hits(hits: list[Hit]) -> list[dict[str, object]]:
    return [{"id": h.id, "score": h.score} for h in hits]


@router.get("/healthz", response_model=Status)
async def healthz() -> Response:
    return JSONBytes({"status": "ok"})


@router.get("/readyz", response_model=Status, responses=error_responses(503))
async def readyz(request: Request) -> Response:
    state = app_state(request)
    if not state.registry.ready.is_set():
        return error_response(503, "not_ready", "still loading collections", {"Retry-After": "1"})
    unserved = state.registry.unserved()
    if unserved:
        why = "; ".join(f"{name}: {reason}" for name, reason in sorted(unserved.items()))
        return error_response(503, "not_ready", f"not serving every published collection: {why}",
                              {"Retry-After": "1"})
    served = {v.collection: v.version for v in state.registry.all()}
    return JSONBytes({"status": "ready", "collections": served})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    body = app_state(request).metrics.exposition()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def describe(version: Served) -> dict[str, object]:
    """The public description of a served version."""
    manifest = version.manifest
    metrics = {}
    for name, entry in manifest.metrics.items():
        index, check = entry.index, entry.index.self_check
        metrics[name] = MetricInfo(
            index_kind=index.kind, factory=index.factory, layout=index.layout, count=index.count,
            exact=index.exact, search_params=index.search_params,
            recall_at_10=check.recall_at_10 if check else None,
            self_check_queries=check.queries if check else None,
        )
    return CollectionInfo(
        name=version.collection, version=version.version, count=manifest.count, dim=manifest.dim,
        default_metric=version.default_metric, metrics=metrics, not_built=manifest.not_built,
        created_at=manifest.created_at,
        loaded_at=version.loaded_at, load_seconds=round(version.load_seconds, 4),
        norm_profile=manifest.norm_profile.model_dump(), shards=len(manifest.parts()),
    ).model_dump(mode="json")


@router.get("/v1/collections", response_model=CollectionList)
def list_collections(request: Request) -> Response:
    return JSONBytes({"collections": [describe(v) for v in app_state(request).registry.all()]})


@router.get("/v1/collections/{name}", response_model=CollectionInfo, responses=error_responses(404))
def get_collection(name: str, request: Request) -> Response:
    return JSONBytes(describe(app_state(request).registry.get(name)))


def deadline(headers: Mapping[str, str]) -> float | None:
    """The client's time budget in seconds from X-Deadline-Ms, if it sent one."""
    text = headers.get("x-deadline-ms")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise InputError(f"X-Deadline-Ms: expected a positive number of milliseconds, got {text[:40]!r}")
    return value / 1000


def query_field(batch: bool) -> str:
    """The body field holding the query vectors, as error messages name it."""
    return "vectors" if batch else "vector"


def search_input(body: SearchRequest | BatchSearchRequest) -> tuple[np.ndarray, SearchOptions]:
    """Query matrix and options from a validated search body."""
    if isinstance(body, BatchSearchRequest):
        return to_matrix(body.vectors, query_field(True)), body.options()
    return to_matrix([body.vector], query_field(False)), body.options()


async def answer_search(state: AppState, scope: Scope, name: str, vectors: np.ndarray, options: SearchOptions,
                        batch: bool) -> Response:
    """One search request, from parsed input to response (the routes and the ASGI fast path share it)."""
    result = await state.searcher.search(state.registry.get(name), vectors, options, query_field(batch),
                                         deadline(Headers(scope=scope)))
    scope.setdefault("state", {})["metric"] = result.metric
    hits = [_hits(h) for h in result.hits] if batch else _hits(result.hits[0])
    return JSONBytes({"collection": result.collection, "version": result.version, "metric": result.metric,
                      "results": hits})


@router.post("/v1/collections/{name}/search", response_model=SearchResponse, responses=error_responses(*QUERY_ERRORS))
async def search_one(name: str, body: SearchRequest, request: Request) -> Response:
    return await answer_search(app_state(request), request.scope, name, *search_input(body), batch=False)


@router.post("/v1/collections/{name}/search/batch", response_model=BatchSearchResponse,
             responses=error_responses(*QUERY_ERRORS))
async def search_batch(name: str, body: BatchSearchRequest, request: Request) -> Response:
    return await answer_search(app_state(request), request.scope, name, *search_input(body), batch=True)


@router.post("/v1/collections/{name}/similar", response_model=SearchResponse, responses=error_responses(*QUERY_ERRORS))
async def similar_items(name: str, body: SimilarRequest, request: Request) -> Response:
    """The k documents most similar to a stored document (by id) or to a document vector."""
    state = app_state(request)
    vector = to_matrix([body.vector], "vector") if body.vector is not None else None
    query = SimilarQuery(doc_id=body.id, vector=vector, options=body.options())
    result = await state.searcher.similar(state.registry.get(name), query, deadline(request.headers))
    request.state.metric = result.metric
    return JSONBytes({"collection": result.collection, "version": result.version, "metric": result.metric,
                      "results": _hits(result.hits[0])})


@router.post("/v1/collections/{name}/score", response_model=ScoreResponse, responses=error_responses(*QUERY_ERRORS))
async def score_candidates(name: str, body: ScoreRequest, request: Request) -> Response:
    """Exact scores of given candidates, in the order given (re-ranking)."""
    state = app_state(request)
    version = state.registry.get(name)
    single = body.vector is not None
    rows = [body.vector] if body.vector is not None else body.vectors or []
    vectors = to_matrix(rows, "vector" if single else "vectors")
    ids = [[str(i) for i in body.ids]] if single else [[str(i) for i in group] for group in body.ids]
    query = ScoreQuery(vectors=vectors, ids=ids, metric=body.metric)
    metric, lists = await state.searcher.score(version, query, deadline(request.headers))
    request.state.metric = metric
    results = _hits(lists[0]) if single else [_hits(h) for h in lists]
    return JSONBytes({"collection": version.collection, "version": version.version, "metric": metric,
                      "results": results})
