"""The floor of any Python HTTP search service here: read the body, parse the vector, answer 10 fixed hits.

No search, no validation beyond parsing. Served by the same uvicorn stack as dotcos (uvloop,
httptools), it measures what HTTP plus JSON alone cost per request on this machine.
Run: uvicorn bench.floor_app:app --port 8200
"""

from __future__ import annotations

import numpy as np
import orjson
from starlette.types import Receive, Scope, Send

ANSWER = orjson.dumps(
    {
        "collection": "floor",
        "version": "0",
        "metric": "dot",
        "results": [{"id": f"doc-{i}", "score": 1.0 - i / 10} for i in range(10)],
    }
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def read_body(receive: Receive) -> bytes:
    """A request's whole body, however many ASGI messages it comes in."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    if scope["method"] == "POST":
        np.asarray(orjson.loads(body)["vector"], dtype=np.float32)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
