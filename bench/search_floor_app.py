"""The floor of any Python HTTP search service over dotcos's own index: parse, search, answer.

It loads a published dotcos collection and answers `POST /search?metric=..&k=..&ef_search=..` with
a raw little-endian float32 body by one FAISS call on the event loop: no validation, no coalescer,
no exact rescoring, no filters, FAISS's own distances as scores. Two fronts: `asgi`, one raw ASGI
callable on dotcos's own uvicorn stack (uvloop, httptools, its one-write protocol), and `raw`, an
asyncio protocol on uvloop feeding httptools directly, with no ASGI and no uvicorn at all. What
they spend per request is what HTTP plus FAISS alone cost here, so no Python service on this index
can spend less (bench.peers measures both beside dotcos and Redis). Run:
DOTCOS_FLOOR_ROOT=indexes DOTCOS_FLOOR_COLLECTION=name python -m bench.search_floor_app 8300 raw
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import cast
from urllib.parse import parse_qsl

import httptools
import numpy as np
import orjson
import uvicorn
import uvloop
from starlette.types import Receive, Scope, Send

from bench.floor_app import read_body
from index_builder.artifact.layout import read_current
from index_builder.retrieval.faiss_params import EF_SEARCH, search_parameters
from index_builder.retrieval.scoring import Prepared
from service.cli import HTTP_PROTOCOL
from service.core.loader import faiss_threads, read_version
from service.core.part import load_parts

ROOT = Path(os.environ["DOTCOS_FLOOR_ROOT"])
COLLECTION = os.environ["DOTCOS_FLOOR_COLLECTION"]
_manifest, _path = read_version(ROOT, COLLECTION, read_current(ROOT, COLLECTION))
PART = load_parts(_manifest, _path, mmap=True)[0]
if any(served.ranges for served in PART.indexes.values()):
    raise SystemExit("the floor searches one index per metric; this collection has a norm-ranged layout")
faiss_threads(1)
HEADERS = [(b"content-type", b"application/json")]


def answer(query_string: bytes, body: bytes) -> bytes:
    """One search: the query vector as FAISS takes it for the metric, one call, ids and distances."""
    params = dict(parse_qsl(query_string.decode()))
    served = PART.indexes[params["metric"]]
    k = int(params.get("k", 10))
    prepared = Prepared.of(served.space, np.frombuffer(body, dtype="<f4")[None, :])
    knob = search_parameters(EF_SEARCH, max(int(params.get("ef_search", 64)), k))
    distances, labels = served.index.search(served.faiss_queries(prepared), k, params=knob)
    hits = [{"id": PART.ids[r], "score": float(s)} for s, r in zip(distances[0], labels[0], strict=True) if r >= 0]
    return orjson.dumps({"metric": params["metric"], "results": hits})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = await read_body(receive)
    payload = answer(scope["query_string"], body) if scope["method"] == "POST" else b"{}"
    headers = [*HEADERS, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class RawProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive straight from httptools' callbacks: one write per response."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's own transport class
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        query_string = self.url.partition(b"?")[2]
        post = self.parser.get_method() == b"POST"
        payload = answer(query_string, b"".join(self.body)) if post else b"{}"
        self.body = []
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(payload)
        self.transport.write(head + payload)


async def serve_raw(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(RawProtocol, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    if sys.argv[2:] == ["raw"]:
        uvloop.run(serve_raw(int(sys.argv[1])))
    else:
        uvicorn.run(app, port=int(sys.argv[1]), log_level="warning", access_log=False, http=HTTP_PROTOCOL)
