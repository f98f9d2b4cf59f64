"""A fixed corpus of HTTP requests and the responses the service gave them, kept as a golden file.

Refactors must not change what a user sees: `test_http_corpus.py` replays every request of
`requests()` against collections built by `build_collections()` and compares status and body
with `golden_http.json` (versions and timings masked). Record anew, only for an intended change
of the interface, with `python -m tests.service.http_corpus`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from index_builder.cli import main as build_main
from tests.conftest import Corpus, make_corpus

GOLDEN = Path(__file__).with_name("golden_http.json")
TOKEN = "golden-token"
MASKED = {"version", "created_at", "loaded_at", "load_seconds", "micros", "exact_micros", "uses"}
EXACT_FILTER_THRESHOLD = 200
"""A fixed count decides exact scans, since the build's timings (masked above) vary from run to run."""
METRICS = ["dot", "cosine", "norm_pow:0.5", "norm_sigmoid", "covariance"]
Request = dict[str, Any]


def build_collections(root: Path, corpus: Corpus, users: Path) -> None:
    """Deterministic builds (seeded, one FAISS thread): every index family, MIPS, shards."""
    common = [
        "--input",
        str(corpus.docs_path),
        "--ids",
        str(corpus.ids_path),
        "--root",
        str(root),
        "--queries",
        str(corpus.queries_path),
        "--quiet",
        "--threads",
        "1",
        "--version",
        "v1",
    ]
    builds = {
        "hnsw": ["--index", "hnsw", "--metrics", ",".join(METRICS), "--users", str(users), "--filter-index", "none"],
        "flat": ["--index", "flat"],
        "ivf": ["--index", "ivf", "--nlist", "16", "--mips", "l2"],
        "sharded": ["--index", "flat", "--shards", "3", "--metrics", "dot,cosine,norm_pow:0.5"],
    }
    for name, extra in builds.items():
        assert build_main(["build", "--name", name, *common, *extra]) == 0, name


def _vector(corpus: Corpus, i: int) -> list[float]:
    return [float(x) for x in corpus.queries[i % len(corpus.queries)]]


def _searches(corpus: Corpus) -> Iterator[Request]:
    ids = corpus.ids
    for name, metrics in (
        ("hnsw", METRICS),
        ("flat", ["dot", "cosine"]),
        ("ivf", ["dot", "cosine"]),
        ("sharded", ["dot", "cosine", "norm_pow:0.5"]),
    ):
        for i, metric in enumerate(metrics):
            path = f"/v1/collections/{name}/search"
            v = _vector(corpus, i)
            yield {"path": path, "body": {"vector": v, "k": 5, "metric": metric}}
            yield {"path": path, "body": {"vector": v, "k": 7, "metric": metric, "params": {"exact": True}}}
            yield {"path": path, "body": {"vector": v, "k": 5, "metric": metric, "exclude": ids[:50]}}
            yield {"path": path, "body": {"vector": v, "k": 4, "metric": metric, "include": ids[100:130]}}
            yield {
                "path": path,
                "body": {"vector": v, "k": 6, "metric": metric, "include": ids[:400], "exclude": ids[:10]},
            }
            yield {
                "path": path + "/batch",
                "body": {"vectors": [_vector(corpus, j) for j in range(i, i + 3)], "k": 3, "metric": metric},
            }
            yield {"path": path + "/batch", "body": {"vectors": [v, v], "k": 2, "metric": metric, "exclude": ids[:5]}}
            yield {"path": f"/v1/collections/{name}/similar", "body": {"id": ids[200 + i], "k": 5, "metric": metric}}
            yield {
                "path": f"/v1/collections/{name}/similar",
                "body": {"vector": v, "k": 3, "metric": metric, "exclude": ids[:3]},
            }
            yield {
                "path": f"/v1/collections/{name}/score",
                "body": {"vector": v, "ids": ids[300:305], "metric": metric},
            }
        yield {"path": f"/v1/collections/{name}/search", "body": {"vector": _vector(corpus, 9), "k": 3}}
        yield {
            "path": f"/v1/collections/{name}/score",
            "body": {"vectors": [_vector(corpus, 1), _vector(corpus, 2)], "ids": [ids[:3], ids[7:9]]},
        }
    for param in ({"ef_search": 8}, {"ef_search": 200}):
        yield {"path": "/v1/collections/hnsw/search", "body": {"vector": _vector(corpus, 4), "k": 5, "params": param}}
    for nprobe in (1, 4, 16):
        yield {
            "path": "/v1/collections/ivf/search",
            "body": {"vector": _vector(corpus, 5), "k": 5, "metric": "cosine", "params": {"nprobe": nprobe}},
        }
    for k in (1, 10, 50):
        yield {
            "path": "/v1/collections/sharded/search/batch",
            "body": {"vectors": [_vector(corpus, j) for j in range(4)], "k": k, "include": corpus.ids[::7]},
        }
    yield {"path": "/v1/collections/flat/search", "body": {"vector": [0.0] * 24, "k": 3, "metric": "dot"}}
    yield {"path": "/v1/collections/flat/search", "body": {"vector": _vector(corpus, 1), "k": 3000}}
    yield {
        "path": "/v1/collections/flat/search",
        "body": {"vector": _vector(corpus, 1), "k": 4, "exclude": ["no-such-id"]},
    }
    yield {"path": "/v1/collections/flat/search", "body": {"vector": [int(x * 10) for x in _vector(corpus, 2)], "k": 2}}


def _errors(corpus: Corpus) -> Iterator[Request]:
    v = _vector(corpus, 0)
    s = "/v1/collections/flat/search"
    bodies: list[tuple[str, Any]] = [
        ("/v1/collections/nope/search", {"vector": v}),
        (s, {"vector": [1.0, 2.0]}),
        (s + "/batch", {"vectors": [v, [1.0]]}),
        (s, {"vector": []}),
        (s, {"vector": ["x"] * 24}),
        (s, {"k": 3}),
        (s, {"vector": v, "k": 0}),
        (s, {"vector": v, "k": 1001}),
        (s + "/batch", {"vectors": [v] * 1025}),
        (s, {"vector": v, "metric": "norm_sigmoid"}),
        (s, {"vector": v, "metric": "l2"}),
        (s, {"vector": v, "metric": "norm_pow:x"}),
        (s, {"vector": [0.0] * 24, "metric": "cosine"}),
        (s + "/batch", {"vectors": [v, [0.0] * 24], "metric": "cosine"}),
        (s, {"vector": v, "include": ["doc-00001", "zz"]}),
        (s, {"vector": v, "topk": 3}),
        (s, {"vector": v, "params": {"nprobe": -1}}),
        (s, {"vector": v, "params": {"ef_search": 5000}}),
        (s, {"vector": v, "params": {"fast": True}}),
        (s, {"vector": [1e39, *v[1:]]}),
        (s, {"vector": v, "k": "ten"}),
        (s, {"vector": v, "k": 2.5}),
        (s, {"vector": v, "metric": 3}),
        (s, {"vector": v, "exclude": "doc-00001"}),
        (s, [1, 2, 3]),
        (s + "/batch", {"vectors": []}),
        (s + "/batch", {"vector": v}),
        ("/v1/collections/flat/similar", {"id": "doc-00001", "vector": v}),
        ("/v1/collections/flat/similar", {"k": 3}),
        ("/v1/collections/flat/similar", {"id": "no-such-id"}),
        ("/v1/collections/sharded/similar", {"id": "no-such-id"}),
        ("/v1/collections/flat/similar", {"vector": [1.0]}),
        ("/v1/collections/flat/score", {"vector": v, "ids": ["doc-00001", "zz"]}),
        ("/v1/collections/sharded/score", {"vector": v, "ids": ["doc-00001", "zz"]}),
        ("/v1/collections/flat/score", {"vector": v, "ids": [["doc-00001"]]}),
        ("/v1/collections/flat/score", {"vectors": [v], "ids": ["doc-00001"]}),
        ("/v1/collections/flat/score", {"vectors": [v, v], "ids": [["doc-00001"]]}),
        ("/v1/collections/flat/score", {"ids": ["doc-00001"]}),
        ("/v1/collections/sharded/search", {"vector": v, "include": ["zz"]}),
        ("/v1/collections/sharded/search", {"vector": [1.0]}),
        ("/v1/collections/sharded/search", {"vector": v, "metric": "covariance"}),
        ("/v1/collections/hnsw/search", {"vector": v, "metric": "norm_pow:2"}),
    ]
    for path, body in bodies:
        yield {"path": path, "body": body}
    for text in ('{"vector": [NaN]}', '{"vector": [Infinity, 1]}', '{"vector": [1, 2', "not json", ""):
        yield {"path": s, "text": text}
    yield {"path": s, "text": json.dumps({"vector": v}), "headers": {"x-deadline-ms": "soon"}}
    yield {"method": "GET", "path": "/v1/collections/nope"}
    yield {"method": "GET", "path": "/v1/nothing-here"}
    yield {"method": "DELETE", "path": "/v1/collections/flat"}
    yield {"method": "POST", "path": "/v1/admin/reload"}
    yield {"method": "POST", "path": "/v1/admin/reload", "headers": {"authorization": "Bearer wrong"}}
    yield {"method": "POST", "path": "/v1/admin/reload", "headers": {"authorization": "Basic abc"}}


def _describes() -> Iterator[Request]:
    yield {"method": "GET", "path": "/healthz"}
    yield {"method": "GET", "path": "/readyz"}
    yield {"method": "GET", "path": "/v1/collections"}
    for name in ("hnsw", "flat", "ivf", "sharded"):
        yield {"method": "GET", "path": f"/v1/collections/{name}"}
    yield {"method": "POST", "path": "/v1/admin/reload", "headers": {"authorization": f"Bearer {TOKEN}"}}


def requests(corpus: Corpus) -> list[Request]:
    """Every request of the corpus, in replay order."""
    return [*_describes(), *_searches(corpus), *_errors(corpus)]


def key(request: Request) -> str:
    """Method, path and a digest of the body: enough to tell that a replay matches its record."""
    payload = request.get("text", json.dumps(request.get("body"), sort_keys=True))
    digest = hashlib.sha256(f"{request.get('headers')}{payload}".encode()).hexdigest()[:12]
    return f"{request.get('method', 'POST')} {request['path']} {digest}"


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<masked>" if k in MASKED else _mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


async def replay(client: httpx.AsyncClient, request: Request) -> dict[str, Any]:
    """Status and (masked) JSON body of one request."""
    method = request.get("method", "POST")
    headers = request.get("headers", {})
    if "text" in request:
        response = await client.request(
            method, request["path"], content=request["text"], headers={"content-type": "application/json", **headers}
        )
    elif "body" in request:
        response = await client.request(method, request["path"], json=request["body"], headers=headers)
    else:
        response = await client.request(method, request["path"], headers=headers)
    return {"status": response.status_code, "body": _mask(response.json())}


async def _replay_all(root: Path, sent: list[Request], door: str) -> list[dict[str, Any]]:
    from fastapi import FastAPI

    from service.api.app import create_app
    from service.settings import ServiceSettings

    settings = ServiceSettings(
        index_root=root,
        reload_interval=0,
        admin_token=TOKEN,
        live_recall_sample=0,
        exact_filter_threshold=EXACT_FILTER_THRESHOLD,
    )
    app = create_app(settings)
    entry = app if door == "front" else functools.partial(FastAPI.__call__, app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=entry)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            deadline = time.monotonic() + 60
            while (await client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "collections did not load"
                await asyncio.sleep(0.05)
            return [await replay(client, r) for r in sent]


def answers(tmp: Path, door: str = "front") -> tuple[list[Request], list[dict[str, Any]]]:
    """Build the corpus collections under tmp, serve them in-process (ASGI, with the lifespan) and
    replay every request through a door: "front" (the whole app, as served) or "routes" (FastAPI's
    own routes, behind no front layer); returns the requests and their responses."""
    corpus = make_corpus(tmp / "data")
    users = tmp / "users.npy"
    np.save(users, np.random.default_rng(11).standard_normal((400, 24)).astype(np.float32))
    build_collections(tmp / "root", corpus, users)
    sent = requests(corpus)
    return sent, asyncio.run(_replay_all(tmp / "root", sent, door))


def record(tmp: Path) -> None:
    sent, got = answers(tmp)
    recorded = [{"request": key(r), "response": g} for r, g in zip(sent, got, strict=True)]
    GOLDEN.write_text(json.dumps(recorded, indent=1) + "\n")
    print(f"recorded {len(recorded)} requests to {GOLDEN}")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        record(Path(tmp))
