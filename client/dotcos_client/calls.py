"""Every call as data: its path, its body and how its answer becomes a result; and the retry
rule. The sync and async clients both send these, so they cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from dotcos_client.models import Change, Document, Documents, Hit, SearchResult

T = TypeVar("T")
BINARY = "application/octet-stream"
BINARY_OPTIONS = frozenset({"k", "metric", "offset", "exact", "ef_search", "nprobe", "version", "model", "route_key"})
"""The options a raw float32 body can carry (in the query string); anything else goes as JSON."""
MAX_PAUSE_S = 10.0

Vector = Sequence[float] | np.ndarray
Example = str | Vector


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP call: POST with a JSON or raw body (GET when `method` says so), whether repeating
    it is harmless after a lost connection, and how its JSON answer becomes the result."""

    path: str
    parse: Callable[[Any], T]
    json: Any = None
    content: bytes | None = None
    params: Mapping[str, str] | None = None
    method: str = "POST"
    idempotent: bool = True


def pause(attempt: int, backoff: float, retry_after: float | None) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): exponential backoff, at least what the
    service asked for in Retry-After, at most MAX_PAUSE_S."""
    return float(min(MAX_PAUSE_S, max(backoff * 2 ** (attempt - 1), retry_after or 0.0)))


def retry_after(headers: Mapping[str, str]) -> float | None:
    text = headers.get("retry-after")
    try:
        return None if text is None else max(0.0, float(text))
    except ValueError:
        return None


def _matrix(vectors: Vector | Sequence[Vector]) -> np.ndarray:
    return np.atleast_2d(np.asarray(vectors, dtype=np.float32))


def _given(value: Any) -> bool:
    """Whether an option says anything: not None, False, 0 or empty."""
    return value is not None and value is not False and not (isinstance(value, int | list | tuple | dict) and not value)


def _options(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The search options given (the others left to the service's defaults), knobs under `params`."""
    body = {key: value for key, value in fields.items() if _given(value) and key not in ("ef_search", "nprobe")}
    params = {key: fields[key] for key in ("ef_search", "nprobe") if fields.get(key) is not None}
    if body.pop("exact", False):
        params["exact"] = True
    return {**body, **({"params": params} if params else {})}


def _result(raw: dict[str, Any], batch: bool) -> SearchResult | list[SearchResult]:
    def one(hits: list[dict[str, Any]]) -> SearchResult:
        return SearchResult(
            raw["collection"],
            raw["version"],
            raw["metric"],
            [Hit.of(h) for h in hits],
            raw.get("model"),
            raw.get("arm"),
        )

    return [one(hits) for hits in raw["results"]] if batch else one(raw["results"])


def search(collection: str, vectors: Vector | Sequence[Vector], batch: bool, fields: Mapping[str, Any]) -> Call[Any]:
    """A search (or batch): a raw float32 body when the options allow it, else JSON."""
    matrix = _matrix(vectors)
    given = {key: value for key, value in fields.items() if _given(value) or key == "k"}
    path = f"/v1/collections/{collection}/search" + ("/batch" if batch else "")
    parse: Callable[[Any], Any] = lambda raw: _result(raw, batch)  # noqa: E731
    if given.keys() <= BINARY_OPTIONS:
        params = {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in given.items()}
        return Call(path, parse, content=np.ascontiguousarray(matrix, "<f4").tobytes(), params=params)
    field = {"vectors": matrix.tolist()} if batch else {"vector": matrix[0].tolist()}
    return Call(path, parse, json={**field, **_options(fields)})


def similar(collection: str, source: dict[str, Any], fields: Mapping[str, Any]) -> Call[SearchResult]:
    body = {
        key: (np.asarray(value, np.float32).tolist() if key == "vector" else value) for key, value in source.items()
    }
    return Call(f"/v1/collections/{collection}/similar", lambda raw: _one(raw), json={**body, **_options(fields)})


def _one(raw: dict[str, Any]) -> SearchResult:
    result = _result(raw, False)
    assert isinstance(result, SearchResult)
    return result


def _examples(examples: Sequence[Example]) -> list[Any]:
    return [e if isinstance(e, str) else np.asarray(e, np.float32).tolist() for e in examples]


def recommend(
    collection: str, positive: Sequence[Example], negative: Sequence[Example], strategy: str, fields: Mapping[str, Any]
) -> Call[SearchResult]:
    body = {"positive": _examples(positive), "negative": _examples(negative), "strategy": strategy}
    return Call(f"/v1/collections/{collection}/recommend", _one, json={**body, **_options(fields)})


def score(
    collection: str, vectors: Vector | Sequence[Vector], ids: Sequence[str] | Sequence[Sequence[str]], fields: Any
) -> Call[Any]:
    """Exact scores of given ids: one vector with a flat id list, or one id list per vector."""
    matrix = _matrix(vectors)
    batch = bool(ids) and not isinstance(ids[0], str)
    field = {"vectors": matrix.tolist()} if batch else {"vector": matrix[0].tolist()}
    given = {key: value for key, value in fields.items() if value is not None}
    return Call(
        f"/v1/collections/{collection}/score",
        lambda raw: [[Hit.of(h) for h in hits] for hits in raw["results"]] if batch else _hits(raw["results"]),
        json={**field, "ids": [list(group) for group in ids] if batch else list(ids), **given},
    )


def _hits(raw: list[dict[str, Any]]) -> list[Hit]:
    return [Hit.of(h) for h in raw]


def get(collection: str, ids: Sequence[str], with_vectors: bool, with_attributes: bool) -> Call[Documents]:
    body = {"ids": list(ids), "with_vectors": with_vectors, "with_attributes": with_attributes}
    return Call(
        f"/v1/collections/{collection}/get",
        lambda raw: Documents([Document.of(d) for d in raw["documents"]], list(raw["missing"])),
        json=body,
    )


def scroll_page(
    collection: str, cursor: str | None, fields: Mapping[str, Any]
) -> Call[tuple[list[Document], str | None]]:
    body = {key: value for key, value in {**fields, "cursor": cursor}.items() if value is not None}
    return Call(
        f"/v1/collections/{collection}/scroll",
        lambda raw: ([Document.of(d) for d in raw["documents"]], raw["next_cursor"]),
        json=body,
    )


def count(collection: str, filter: Any) -> Call[int]:
    body = {} if filter is None else {"filter": filter}
    return Call(f"/v1/collections/{collection}/count", lambda raw: int(raw["count"]), json=body)


def _change(raw: dict[str, Any]) -> Change:
    return Change(raw["collection"], int(raw["position"]), int(raw["count"]), list(raw.get("unknown", [])))


def upsert(
    collection: str, ids: Sequence[str], vectors: Vector | Sequence[Vector], attributes: Sequence[Any] | None
) -> Call[Change]:
    body: dict[str, Any] = {"ids": list(ids), "vectors": _matrix(vectors).tolist()}
    if attributes is not None:
        body["attributes"] = list(attributes)
    return Call(f"/v1/collections/{collection}/upsert", _change, json=body, idempotent=False)


def delete(collection: str, ids: Sequence[str]) -> Call[Change]:
    return Call(f"/v1/collections/{collection}/delete", _change, json={"ids": list(ids)}, idempotent=False)


def set_attributes(
    collection: str, ids: Sequence[str], values: Mapping[str, Any] | None, unset: Sequence[str] | None
) -> Call[Change]:
    body = {"ids": list(ids), "set": dict(values or {}), "unset": list(unset or [])}
    return Call(f"/v1/collections/{collection}/attributes", _change, json=body, idempotent=False)


def collections() -> Call[list[dict[str, Any]]]:
    return Call("/v1/collections", lambda raw: list(raw["collections"]), method="GET")


def info(collection: str) -> Call[dict[str, Any]]:
    return Call(f"/v1/collections/{collection}", lambda raw: dict(raw), method="GET")
