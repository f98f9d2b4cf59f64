"""The binary search body: raw little-endian float32 query vectors, options in the query string.

`POST /v1/collections/{name}/search` (one vector) or `.../search/batch` (n vectors, n x dim values)
with `Content-Type: application/octet-stream` spares the client the JSON text of the vector (a
384-d vector is 1,536 bytes instead of 3-4 KB) and the service its parsing. The options a plain
search takes come as query parameters: k, metric, ef_search, nprobe, exact. Anything richer
(filters, include, group_by) stays JSON. The answer is the same JSON either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

import numpy as np

from index_builder.artifact.errors import InputError
from service.core.query import SearchOptions
from service.core.serving import Routing

BINARY = "application/octet-stream"
FLOAT32 = np.dtype("<f4")
PARAMETERS = {
    "k": "results per query (default 10, at most DOTCOS_MAX_K)",
    "offset": "results to skip: the answer is [offset, offset + k) of the top offset + k",
    "metric": "dot, cosine, ...; default: the first built",
    "ef_search": "HNSW candidate list size (HNSW only)",
    "nprobe": "IVF lists to visit (IVF indexes only)",
    "exact": "true: brute force over the raw vectors",
    "version": "answer from this served version (an alias, current, or a version id)",
    "model": "answer from a served version built with this model (409 when none is)",
    "route_key": "answer from the arm of the collection's split this key hashes to",
}
PARAMETER_SCHEMAS = (
    {"type": "integer", "minimum": 1},
    {"type": "integer", "minimum": 0},
    {"type": "string"},
    {"type": "integer", "minimum": 1},
    {"type": "integer", "minimum": 1},
    {"type": "boolean"},
    {"type": "string"},
    {"type": "string"},
    {"type": "string"},
)
BINARY_BODY = "little-endian float32 values: one vector (search) or n x dim of them (search/batch)"


def is_binary(headers: Mapping[str, str]) -> bool:
    """Whether the body is raw float32 (its Content-Type, parameters ignored)."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower() == BINARY


def binary_search(body: bytes, query: str, batch: bool, dim: int) -> tuple[np.ndarray, SearchOptions]:
    """The (n, dim) float32 query matrix of a binary body and the options of its query string."""
    field = "vectors" if batch else "vector"
    if not body or len(body) % FLOAT32.itemsize:
        raise InputError(f"{field}: the body must hold float32 values (4 bytes each), got {len(body)} bytes")
    values = np.frombuffer(body, dtype=FLOAT32)
    if not batch and len(values) > dim and len(values) % dim == 0:
        raise InputError(
            f"vector: the body holds {len(values) // dim} vectors of dimension {dim}; "
            "send one to /search, or several to /search/batch"
        )
    width = dim if batch else len(values)
    if len(values) % width:
        raise InputError(f"{field}: {len(values)} float32 values are not a whole number of vectors of dimension {dim}")
    return values.reshape(-1, width).astype(np.float32), _options(query)


def _given(query: str) -> dict[str, str]:
    """The query string's parameters, each known and given once."""
    given: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in PARAMETERS:
            raise InputError(f"{key}: not a parameter of a binary search; known: {', '.join(PARAMETERS)}")
        if key in given:
            raise InputError(f"{key}: given more than once")
        given[key] = value
    return given


def binary_routing(query: str) -> Routing:
    """The version, model and route key a binary search's query string names."""
    given = _given(query)
    return Routing(given.get("version"), given.get("model"), given.get("route_key"))


def _options(query: str) -> SearchOptions:
    given = _given(query)
    exact = given.get("exact", "false").lower()
    if exact not in ("true", "false"):
        raise InputError(f"exact: expected true or false, got {given['exact'][:40]!r}")
    k = _integer(given, "k")
    return SearchOptions(
        k=SearchOptions.k if k is None else k,
        offset=_integer(given, "offset") or 0,
        metric=given.get("metric"),
        ef_search=_integer(given, "ef_search"),
        nprobe=_integer(given, "nprobe"),
        exact=exact == "true",
    )


def _integer(given: dict[str, str], key: str) -> int | None:
    """A whole-number parameter (its range is the core's to check, as for JSON bodies)."""
    text = given.get(key)
    if text is None:
        return None
    if not text.isdigit():
        raise InputError(f"{key}: expected a whole number, got {text[:40]!r}")
    return int(text)
