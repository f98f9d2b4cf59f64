"""The floor of any Python HTTP search service over dotcos's own index: parse, search, answer.

One raw ASGI callable on the same uvicorn stack as dotcos (uvloop, httptools). It loads a published
dotcos collection and answers `POST /search?metric=..&k=..&ef_search=..` with a raw little-endian
float32 body by one FAISS call on the event loop: no validation, no coalescer, no exact rescoring,
no filters, FAISS's own distances as scores. What it spends per request is what HTTP plus FAISS
alone cost here, so no Python service on this index can spend less (bench.peers measures it beside
dotcos and Redis). It is served with dotcos's own one-write HTTP protocol. Run:
DOTCOS_FLOOR_ROOT=indexes DOTCOS_FLOOR_COLLECTION=name python -m bench.search_floor_app 8300
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import orjson
import uvicorn
from starlette.types import Receive, Scope, Send

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
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    payload = answer(scope["query_string"], body) if scope["method"] == "POST" else b"{}"
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": payload})


if __name__ == "__main__":
    uvicorn.run(app, port=int(sys.argv[1]), log_level="warning", access_log=False, http=HTTP_PROTOCOL)
