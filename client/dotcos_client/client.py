"""`Client` and `AsyncClient`: the same methods, the second awaited.

Both send the calls of `dotcos_client.calls`, retry a bounded number of times on 503 and on
connection errors (honouring Retry-After; a write is retried only when the service cannot have
applied it), and send a per-call deadline as X-Deadline-Ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from dotcos_client import calls
from dotcos_client.calls import BINARY, Call, Example, Vector, pause, retry_after
from dotcos_client.errors import DotcosError, error_of
from dotcos_client.models import Change, Document, Documents, Hit, SearchResult

T = TypeVar("T")
RETRIED = (503,)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _request(call: Call[Any], deadline: float | None) -> dict[str, Any]:
    """The httpx arguments of a call: its body and the deadline header."""
    headers = {"Content-Type": BINARY} if call.content is not None else {}
    if deadline is not None:
        headers["X-Deadline-Ms"] = f"{deadline * 1000:.0f}"
    arguments: dict[str, Any] = {"headers": headers, "params": call.params}
    if call.method == "POST":
        arguments["content" if call.content is not None else "json"] = (
            call.content if call.content is not None else call.json
        )
    if deadline is not None:
        arguments["timeout"] = deadline + 1.0
    return arguments


def _outcome(call: Call[T], response: httpx.Response) -> T:
    """The call's result, or the error the answer describes."""
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.is_success:
        return call.parse(body)
    raise error_of(response.status_code, body, retry_after(response.headers))


def _retryable(call: Call[Any], error: Exception) -> bool:
    """503 always (nothing was done); a lost connection only for a call that may be repeated, or
    one that never reached the service."""
    if isinstance(error, DotcosError):
        return error.status in RETRIED
    return call.idempotent or isinstance(error, httpx.ConnectError)


def _search_fields(k: int, fields: Mapping[str, Any]) -> dict[str, Any]:
    return {"k": k, **fields}


class _Base:
    def __init__(self, url: str, token: str | None, timeout: float, retries: int, backoff: float) -> None:
        self.url, self.retries, self.backoff = url.rstrip("/"), retries, backoff
        self.headers, self.timeout = _headers(token), timeout

    def _wait(self, attempt: int, error: Exception, ends: float | None) -> float | None:
        """Seconds to wait before retrying, or None when the error is final (or the deadline near)."""
        if attempt > self.retries:
            return None
        hint = error.retry_after if isinstance(error, DotcosError) and hasattr(error, "retry_after") else None
        wait = pause(attempt, self.backoff, hint)
        if ends is not None and time.monotonic() + wait >= ends:
            return None
        return wait


class Client(_Base):
    """A synchronous client: `Client(url, token=None, timeout=10.0)`; use it as a context manager
    or call `close()`."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, timeout, retries, backoff)
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def send(self, call: Call[T], deadline: float | None = None) -> T:
        """One call, retried on 503 and lost connections as the rule says."""
        ends = None if deadline is None else time.monotonic() + deadline
        attempt = 0
        while True:
            attempt += 1
            left = None if ends is None else max(0.001, ends - time.monotonic())
            try:
                return _outcome(call, self.http.request(call.method, call.path, **_request(call, left)))
            except (DotcosError, httpx.TransportError) as error:
                wait = self._wait(attempt, error, ends) if _retryable(call, error) else None
                if wait is None:
                    raise
                time.sleep(wait)

    def search(
        self, collection: str, vector: Vector, k: int = 10, *, deadline: float | None = None, **fields: Any
    ) -> SearchResult:
        """The k best documents for one query vector. Fields: metric, filter, exclude, include,
        group_by, score_threshold, with_attributes, offset, mmr, exact, ef_search, nprobe, and
        version, model or route_key where the service routes. A vector with no other field than
        these last three, k, metric, offset, exact, ef_search or nprobe is sent as raw float32."""
        result = self.send(calls.search(collection, vector, False, _search_fields(k, fields)), deadline)
        assert isinstance(result, SearchResult)
        return result

    def search_batch(
        self,
        collection: str,
        vectors: Sequence[Vector] | Any,
        k: int = 10,
        *,
        deadline: float | None = None,
        **fields: Any,
    ) -> list[SearchResult]:
        """The k best documents for each of several query vectors (an (n, d) array or a list)."""
        result = self.send(calls.search(collection, vectors, True, _search_fields(k, fields)), deadline)
        assert isinstance(result, list)
        return result

    def similar(
        self,
        collection: str,
        id: str | None = None,
        *,
        ids: Sequence[str] | None = None,
        vector: Vector | None = None,
        k: int = 10,
        deadline: float | None = None,
        **fields: Any,
    ) -> SearchResult:
        """Documents similar to a stored one (`id`), to several (`ids`) or to a `vector`; never
        the documents asked about."""
        source = {key: value for key, value in (("id", id), ("ids", ids), ("vector", vector)) if value is not None}
        return self.send(calls.similar(collection, source, _search_fields(k, fields)), deadline)

    def recommend(
        self,
        collection: str,
        positive: Sequence[Example],
        negative: Sequence[Example] = (),
        *,
        strategy: str = "average_vector",
        k: int = 10,
        deadline: float | None = None,
        **fields: Any,
    ) -> SearchResult:
        """Documents recommended by examples (ids or vectors): `average_vector` or `best_score`."""
        return self.send(calls.recommend(collection, positive, negative, strategy, _search_fields(k, fields)), deadline)

    def score(
        self, collection: str, vector: Vector, ids: Sequence[str], *, deadline: float | None = None, **fields: Any
    ) -> list[Hit]:
        """The exact score of each candidate id under one query vector, in the order given. Fields:
        metric, filter, and version, model or route_key where the service routes."""
        result = self.send(calls.score(collection, vector, ids, fields), deadline)
        assert isinstance(result, list)
        return result

    def score_batch(
        self,
        collection: str,
        vectors: Sequence[Vector] | Any,
        ids: Sequence[Sequence[str]],
        *,
        deadline: float | None = None,
        **fields: Any,
    ) -> list[list[Hit]]:
        """The exact scores of one candidate id list per query vector, in the order given."""
        result = self.send(calls.score(collection, vectors, ids, fields), deadline)
        assert isinstance(result, list)
        return result

    def get(
        self,
        collection: str,
        ids: Sequence[str],
        *,
        with_vectors: bool = False,
        with_attributes: bool = True,
        deadline: float | None = None,
    ) -> Documents:
        """Documents by id as they stand now, and the ids the collection does not hold."""
        return self.send(calls.get(collection, ids, with_vectors, with_attributes), deadline)

    def scroll(
        self,
        collection: str,
        *,
        filter: Any = None,
        limit: int = 100,
        with_vectors: bool = False,
        with_attributes: bool = True,
    ) -> Iterator[Document]:
        """Every document passing the filter, each once, following the cursors page by page."""
        fields = {"filter": filter, "limit": limit, "with_vectors": with_vectors, "with_attributes": with_attributes}
        cursor: str | None = None
        while True:
            documents, cursor = self.send(calls.scroll_page(collection, cursor, fields))
            yield from documents
            if cursor is None:
                return

    def count(self, collection: str, *, filter: Any = None, deadline: float | None = None) -> int:
        """How many documents pass the filter now."""
        return self.send(calls.count(collection, filter), deadline)

    def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: Vector | Sequence[Vector],
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Change:
        """Insert or replace whole documents (attributes left out become null); needs the token."""
        return self.send(calls.upsert(collection, ids, vectors, attributes))

    def delete(self, collection: str, ids: Sequence[str]) -> Change:
        """Delete documents; ids the collection does not hold come back in `unknown`."""
        return self.send(calls.delete(collection, ids))

    def set_attributes(
        self,
        collection: str,
        ids: Sequence[str],
        set: Mapping[str, Any] | None = None,
        unset: Sequence[str] | None = None,
    ) -> Change:
        """Change some attributes of stored documents, keeping the rest of them."""
        return self.send(calls.set_attributes(collection, ids, set, unset))

    def collections(self) -> list[dict[str, Any]]:
        """Every served collection's description."""
        return self.send(calls.collections())

    def info(self, collection: str) -> dict[str, Any]:
        """One collection's description: version, counts, metrics, recall, changes."""
        return self.send(calls.info(collection))


class AsyncClient(_Base):
    """The asynchronous client: the methods of `Client`, awaited (`scroll` is an async iterator)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, timeout, retries, backoff)
        self.http = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def send(self, call: Call[T], deadline: float | None = None) -> T:
        """One call, retried on 503 and lost connections as the rule says."""
        ends = None if deadline is None else time.monotonic() + deadline
        attempt = 0
        while True:
            attempt += 1
            left = None if ends is None else max(0.001, ends - time.monotonic())
            try:
                return _outcome(call, await self.http.request(call.method, call.path, **_request(call, left)))
            except (DotcosError, httpx.TransportError) as error:
                wait = self._wait(attempt, error, ends) if _retryable(call, error) else None
                if wait is None:
                    raise
                await asyncio.sleep(wait)

    async def search(
        self, collection: str, vector: Vector, k: int = 10, *, deadline: float | None = None, **fields: Any
    ) -> SearchResult:
        result = await self.send(calls.search(collection, vector, False, _search_fields(k, fields)), deadline)
        assert isinstance(result, SearchResult)
        return result

    async def search_batch(
        self,
        collection: str,
        vectors: Sequence[Vector] | Any,
        k: int = 10,
        *,
        deadline: float | None = None,
        **fields: Any,
    ) -> list[SearchResult]:
        result = await self.send(calls.search(collection, vectors, True, _search_fields(k, fields)), deadline)
        assert isinstance(result, list)
        return result

    async def similar(
        self,
        collection: str,
        id: str | None = None,
        *,
        ids: Sequence[str] | None = None,
        vector: Vector | None = None,
        k: int = 10,
        deadline: float | None = None,
        **fields: Any,
    ) -> SearchResult:
        source = {key: value for key, value in (("id", id), ("ids", ids), ("vector", vector)) if value is not None}
        return await self.send(calls.similar(collection, source, _search_fields(k, fields)), deadline)

    async def recommend(
        self,
        collection: str,
        positive: Sequence[Example],
        negative: Sequence[Example] = (),
        *,
        strategy: str = "average_vector",
        k: int = 10,
        deadline: float | None = None,
        **fields: Any,
    ) -> SearchResult:
        call = calls.recommend(collection, positive, negative, strategy, _search_fields(k, fields))
        return await self.send(call, deadline)

    async def score(
        self, collection: str, vector: Vector, ids: Sequence[str], *, deadline: float | None = None, **fields: Any
    ) -> list[Hit]:
        result = await self.send(calls.score(collection, vector, ids, fields), deadline)
        assert isinstance(result, list)
        return result

    async def score_batch(
        self,
        collection: str,
        vectors: Sequence[Vector] | Any,
        ids: Sequence[Sequence[str]],
        *,
        deadline: float | None = None,
        **fields: Any,
    ) -> list[list[Hit]]:
        result = await self.send(calls.score(collection, vectors, ids, fields), deadline)
        assert isinstance(result, list)
        return result

    async def get(
        self,
        collection: str,
        ids: Sequence[str],
        *,
        with_vectors: bool = False,
        with_attributes: bool = True,
        deadline: float | None = None,
    ) -> Documents:
        return await self.send(calls.get(collection, ids, with_vectors, with_attributes), deadline)

    async def scroll(
        self,
        collection: str,
        *,
        filter: Any = None,
        limit: int = 100,
        with_vectors: bool = False,
        with_attributes: bool = True,
    ) -> AsyncIterator[Document]:
        fields = {"filter": filter, "limit": limit, "with_vectors": with_vectors, "with_attributes": with_attributes}
        cursor: str | None = None
        while True:
            documents, cursor = await self.send(calls.scroll_page(collection, cursor, fields))
            for document in documents:
                yield document
            if cursor is None:
                return

    async def count(self, collection: str, *, filter: Any = None, deadline: float | None = None) -> int:
        return await self.send(calls.count(collection, filter), deadline)

    async def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: Vector | Sequence[Vector],
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> Change:
        return await self.send(calls.upsert(collection, ids, vectors, attributes))

    async def delete(self, collection: str, ids: Sequence[str]) -> Change:
        return await self.send(calls.delete(collection, ids))

    async def set_attributes(
        self,
        collection: str,
        ids: Sequence[str],
        set: Mapping[str, Any] | None = None,
        unset: Sequence[str] | None = None,
    ) -> Change:
        return await self.send(calls.set_attributes(collection, ids, set, unset))

    async def collections(self) -> list[dict[str, Any]]:
        return await self.send(calls.collections())

    async def info(self, collection: str) -> dict[str, Any]:
        return await self.send(calls.info(collection))
