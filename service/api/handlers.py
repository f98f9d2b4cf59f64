"""The query routes, framework-free: request bytes in, a `Reply` out.

Both doors call these handlers: the raw ASGI front (`service.api.front`, which answers the
query routes in front of FastAPI's per-request machinery) and the FastAPI routes (the
documented OpenAPI interface). Each body is parsed once, here: the common search body of plain
numbers with `k`/`metric` by orjson straight into an array, anything else by the pydantic
models, which also produce every validation error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from index_builder.artifact.errors import DotcosError, InputError
from service.api.binary import binary_routing, binary_search, is_binary
from service.api.errors import PINNED_ERRORS, QUERY_ERRORS, Reply, dotcos_reply, unexpected_reply, validation_reply
from service.api.schemas import (
    BatchSearchRequest,
    BatchSearchResponse,
    CountRequest,
    CountResponse,
    GetRequest,
    GetResponse,
    RecommendRequest,
    RouteRequest,
    RouteResponse,
    ScoreRequest,
    ScoreResponse,
    ScrollRequest,
    ScrollResponse,
    SearchRequest,
    SearchResponse,
    SimilarRequest,
)
from service.api.state import AppState
from service.core.part import Doc
from service.core.query import Hit, SearchOptions
from service.core.ranking import RecommendQuery
from service.core.searcher import ScoreQuery, SearchResult, SimilarQuery
from service.core.serving import Pick, Routing
from service.core.version import canonical_metric

FLOAT32_MAX = float(np.finfo(np.float32).max)
DEFAULT_K = SearchRequest.model_fields["k"].default


def as_float32(values: np.ndarray, field: str) -> np.ndarray:
    """Float32 copy of a float64 (n, d) array, naming the first finite number float32 cannot hold
    (NaN and Inf are left to the collection's own check)."""
    huge = (np.abs(values) > FLOAT32_MAX) & np.isfinite(values)
    if huge.any():
        line, col = (int(x[0]) for x in np.nonzero(huge))
        where = f"{field}[{line}]" if len(values) > 1 else field
        raise InputError(f"{where}: the value at position {col} is outside the float32 range (±3.4e38)")
    return values.astype(np.float32)


def to_matrix(rows: list[list[float]], field: str) -> np.ndarray:
    """Float32 (n, d) array from JSON lists, naming the first row whose length differs."""
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InputError(f"{field}[{i}]: dimension {width} expected (as {field}[0]), got {len(row)}")
    values = np.fromiter(rows[0], np.float64, width)[None, :] if len(rows) == 1 else np.array(rows, np.float64)
    return as_float32(values, field)


def plain_search(body: bytes, batch: bool) -> tuple[np.ndarray, SearchOptions] | None:
    """The query matrix and options of a body holding only numbers, `k` and `metric`, or None when
    it holds anything else (or anything the pydantic model would refuse or convert)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    field = query_field(batch)
    if type(doc) is not dict or not doc.keys() <= {field, "k", "metric", "params"}:
        return None
    k, metric, params = doc.get("k", DEFAULT_K), doc.get("metric"), plain_params(doc.get("params", {}))
    if type(k) is not int or k < 1 or not (metric is None or type(metric) is str) or params is None:
        return None
    try:
        values = np.array(doc.get(field))
    except ValueError:
        return None
    if values.dtype.kind not in "fi" or values.ndim != (2 if batch else 1) or 0 in values.shape:
        return None
    matrix = as_float32(np.asarray(values if batch else values[None, :], dtype=np.float64), field)
    return matrix, SearchOptions(k=k, metric=metric, ef_search=params.get("ef_search"), nprobe=params.get("nprobe"))


def plain_params(params: object) -> dict[str, int] | None:
    """`params` holding only positive integer knobs (ef_search, nprobe), or None."""
    if type(params) is not dict or not params.keys() <= {"ef_search", "nprobe"}:
        return None
    if not all(type(v) is int and v >= 1 for v in params.values()):
        return None
    return params


def query_field(batch: bool) -> str:
    """The body field holding the query vectors, as error messages name it."""
    return "vectors" if batch else "vector"


def parse_search(body: bytes, batch: bool) -> tuple[np.ndarray, SearchOptions, Routing]:
    """Query matrix, options and routing of a search body; ValidationError or InputError for a bad one."""
    plain = plain_search(body, batch)
    return (*plain, Routing()) if plain is not None else model_search(body, batch)


def model_search(body: bytes, batch: bool) -> tuple[np.ndarray, SearchOptions, Routing]:
    """A search body validated by its pydantic model (every body plain_search declines)."""
    field = query_field(batch)
    if batch:
        many = BatchSearchRequest.model_validate_json(body)
        return to_matrix(many.vectors, field), many.options(), many.routing()
    one = SearchRequest.model_validate_json(body)
    return to_matrix([one.vector], field), one.options(), one.routing()


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


def _hits(hits: list[Hit]) -> list[dict[str, object]]:
    return [{"id": h.id, "score": h.score} if h.attributes is None and h.vector is None else _hit(h) for h in hits]


def _hit(hit: Hit) -> dict[str, object]:
    """A hit with what it carries back: attributes, vector, or both."""
    shown: dict[str, object] = {"id": hit.id, "score": hit.score}
    if hit.attributes is not None:
        shown["attributes"] = hit.attributes
    if hit.vector is not None:
        shown["vector"] = hit.vector
    return shown


def _answered(pick: Pick, metric: str) -> dict[str, object]:
    """What every answer says of who answered: collection, version, metric, model, arm."""
    version = pick.version
    return {
        "collection": version.collection,
        "version": version.version,
        "metric": metric,
        "model": version.manifest.model,
        "arm": pick.arm,
    }


def _result(result: SearchResult, pick: Pick, batch: bool) -> Reply:
    results = [_hits(h) for h in result.hits] if batch else _hits(result.hits[0])
    arm = (pick.version.collection, pick.arm)
    return Reply.json({**_answered(pick, result.metric), "results": results}, metric=result.metric, arm=arm)


@dataclass(frozen=True)
class Call:
    """One query-route request as either door hands it over: the collection's name, the raw
    body, the headers and the query string (read by binary searches only)."""

    name: str
    body: bytes
    headers: Mapping[str, str]
    query: str = ""


async def search(state: AppState, call: Call, batch: bool) -> Reply:
    if is_binary(call.headers):
        served = state.registry.served(call.name)
        pick = served.pick(binary_routing(call.query))
        vectors, options = binary_search(call.body, call.query, batch, pick.version.dim)
    else:
        vectors, options, routing = parse_search(call.body, batch)
        served = state.registry.served(call.name)
        pick = served.pick(routing)
    result = await state.searcher.search(
        pick.version,
        vectors,
        options,
        query_field(batch),
        deadline(call.headers),
        logged=True,
        shadow=served.shadow_for(pick),
    )
    return _result(result, pick, batch)


async def similar(state: AppState, call: Call) -> Reply:
    """The k documents most similar to a stored document (by id), to several (around their average)
    or to a document vector."""
    request = SimilarRequest.model_validate_json(call.body)
    vector = to_matrix([request.vector], "vector") if request.vector is not None else None
    query = SimilarQuery(doc_id=request.id, vector=vector, options=request.options(), doc_ids=request.ids)
    pick = state.registry.pick(call.name, request.routing())
    return _result(await state.searcher.similar(pick.version, query, deadline(call.headers)), pick, batch=False)


async def recommend(state: AppState, call: Call) -> Reply:
    """The k documents recommended by positive and negative examples (ids or vectors)."""
    request = RecommendRequest.model_validate_json(call.body)
    positive = _examples(request.positive, "positive")
    negative = _examples(request.negative, "negative")
    query = RecommendQuery(positive, negative, request.strategy, request.options())
    pick = state.registry.pick(call.name, request.routing())
    return _result(await state.searcher.recommend(pick.version, query, deadline(call.headers)), pick, batch=False)


def _examples(given: list[str | list[float]], field: str) -> list[str | np.ndarray]:
    """Examples as ids or float32 vectors (each vector checked for the float32 range)."""
    return [e if isinstance(e, str) else to_matrix([e], f"{field}[{i}]")[0] for i, e in enumerate(given)]


def _documents(docs: list[Doc]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for doc in docs:
        shown: dict[str, object] = {"id": doc.id}
        if doc.vector is not None:
            shown["vector"] = doc.vector.tolist()
        if doc.attributes is not None:
            shown["attributes"] = doc.attributes
        out.append(shown)
    return out


async def get(state: AppState, call: Call) -> Reply:
    """Documents by id as they stand now, in the order asked; the ids not held are listed as missing."""
    request = GetRequest.model_validate_json(call.body)
    version = state.registry.get(call.name)
    found, missing = await state.searcher.get(
        version, request.ids, request.with_vectors, request.with_attributes, deadline(call.headers)
    )
    body = {"collection": version.collection, "version": version.version, "documents": _documents(found)}
    return Reply.json({**body, "missing": missing})


async def scroll(state: AppState, call: Call) -> Reply:
    """Every document passing the filter, page after page, each exactly once (the cursor pins the
    version and journal position the first page saw)."""
    request = ScrollRequest.model_validate_json(call.body)
    version = state.registry.get(call.name)
    page = (request.limit, request.with_vectors, request.with_attributes)
    found = await state.searcher.scroll(version, request.filter, request.cursor, page, deadline(call.headers))
    body = {"collection": version.collection, "version": version.version, "documents": _documents(found.documents)}
    return Reply.json({**body, "next_cursor": found.next_cursor})


async def count(state: AppState, call: Call) -> Reply:
    """How many documents pass the filter now (exact)."""
    request = CountRequest.model_validate_json(call.body)
    version = state.registry.get(call.name)
    total = await state.searcher.count(version, request.filter, deadline(call.headers))
    return Reply.json({"collection": version.collection, "version": version.version, "count": total})


async def route(state: AppState, call: Call) -> Reply:
    """The arm, version and model that would answer a request with this route key (or pin), without
    searching: a client computes the user vector with that version's tower first."""
    request = RouteRequest.model_validate_json(call.body)
    pick = state.registry.pick(call.name, request.routing())
    version = pick.version
    return Reply.json(
        {"collection": version.collection, "arm": pick.arm, "version": version.version, "model": version.manifest.model}
    )


async def score(state: AppState, call: Call) -> Reply:
    """Exact scores of given candidates, in the order given (re-ranking)."""
    request = ScoreRequest.model_validate_json(call.body)
    pick = state.registry.pick(call.name, request.routing())
    version = pick.version
    single = request.vector is not None
    rows = [request.vector] if request.vector is not None else request.vectors or []
    vectors = to_matrix(rows, "vector" if single else "vectors")
    ids = [[str(i) for i in request.ids]] if single else [[str(i) for i in group] for group in request.ids]
    metric, lists = await state.searcher.score(
        version,
        ScoreQuery(vectors=vectors, ids=ids, metric=request.metric, filter=request.filter),
        deadline(call.headers),
    )
    results = _hits(lists[0]) if single else [_hits(h) for h in lists]
    arm = (version.collection, pick.arm)
    return Reply.json({**_answered(pick, metric), "results": results}, metric=metric, arm=arm)


Handler = Callable[[AppState, Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    """A query route: its path template (as metrics label it), handler, body and answer models and
    error statuses (for OpenAPI)."""

    suffix: str
    handler: Handler
    model: type[BaseModel]
    response: type[BaseModel]
    errors: tuple[int, ...] = QUERY_ERRORS

    @property
    def template(self) -> str:
        return f"/v1/collections/{{name}}/{self.suffix}"


async def _search_one(state: AppState, call: Call) -> Reply:
    """The k best documents for one query vector under the requested metric, with filters, group_by,
    offset and MMR applied inside the search; scores in the metric's own units, rescored exactly."""
    return await search(state, call, batch=False)


async def _search_batch(state: AppState, call: Call) -> Reply:
    """The same search for each of several query vectors (`vectors`), one result list per vector,
    in the order given."""
    return await search(state, call, batch=True)


ROUTES = {
    route.suffix: route
    for route in (
        Route("search", _search_one, SearchRequest, SearchResponse, PINNED_ERRORS),
        Route("search/batch", _search_batch, BatchSearchRequest, BatchSearchResponse, PINNED_ERRORS),
        Route("similar", similar, SimilarRequest, SearchResponse, PINNED_ERRORS),
        Route("recommend", recommend, RecommendRequest, SearchResponse, PINNED_ERRORS),
        Route("score", score, ScoreRequest, ScoreResponse, PINNED_ERRORS),
        Route("route", route, RouteRequest, RouteResponse, tuple(e for e in PINNED_ERRORS if e != 400)),
        Route("get", get, GetRequest, GetResponse),
        Route("scroll", scroll, ScrollRequest, ScrollResponse, (*QUERY_ERRORS, 410)),
        Route("count", count, CountRequest, CountResponse),
    )
}


async def answer(route: Route, state: AppState, call: Call, where: str) -> Reply:
    """A route's reply, every failure included (the one error mapping of the query routes); a
    failure carries the metric the request named, as a success does."""
    try:
        return await route.handler(state, call)
    except ValidationError as exc:
        reply = validation_reply(exc.errors())
    except DotcosError as exc:
        reply = dotcos_reply(exc)
    except Exception:
        reply = unexpected_reply("POST", where)
    return replace(reply, metric=named_metric(state, call)) if "metric" in route.model.model_fields else reply


def named_metric(state: AppState, call: Call) -> str:
    """The canonical name of the metric a request named ("invalid" when it is no metric), else the
    collection's default, for the labels of a failed request."""
    if is_binary(call.headers):
        named: object = dict(parse_qsl(call.query)).get("metric")
    else:
        try:
            doc = orjson.loads(call.body)
        except orjson.JSONDecodeError:
            doc = None
        named = doc.get("metric") if type(doc) is dict else None
    if named is None:
        try:
            return state.registry.get(call.name).default_metric
        except DotcosError:
            return ""
    try:
        return canonical_metric(str(named))
    except InputError:
        return "invalid"
