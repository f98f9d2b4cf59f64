"""Every status code the published OpenAPI document lists for an operation is reachable."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import SecretStr

from service.api.app import create_app
from service.core.readback import Cursor, filter_key
from service.settings import ServiceSettings
from tests.conftest import Corpus, build

TOKEN = "status-token"


def requests_by_status(corpus: Corpus) -> dict[tuple[str, str, int], Callable[[httpx.Client], httpx.Response]]:
    q = corpus.queries[0].tolist()
    big = {"vector": q, "exclude": ["x" * 5000]}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    table: dict[tuple[str, str, int], Callable[[httpx.Client], httpx.Response]] = {
        ("GET", "/healthz", 200): lambda c: c.get("/healthz"),
        ("GET", "/readyz", 200): lambda c: c.get("/readyz"),
        ("GET", "/metrics", 200): lambda c: c.get("/metrics"),
        ("GET", "/v1/collections", 200): lambda c: c.get("/v1/collections"),
        ("GET", "/v1/collections/{name}", 200): lambda c: c.get("/v1/collections/c"),
        ("GET", "/v1/collections/{name}", 404): lambda c: c.get("/v1/collections/nope"),
        ("POST", "/v1/admin/reload", 200): lambda c: c.post("/v1/admin/reload", headers=auth),
        ("POST", "/v1/admin/reload", 401): lambda c: c.post("/v1/admin/reload"),
        ("POST", "/v1/admin/reload", 403): lambda c: c.post("/v1/admin/reload", headers={"Authorization": "Bearer no"}),
        ("POST", "/v1/admin/reload", 413): lambda c: c.post("/v1/admin/reload", headers=auth, content=b"x" * 5000),
    }
    bodies = {
        "/search": ({"vector": q}, {"vector": [1.0]}, {"vector": q, "include": ["ghost"]}),
        "/search/batch": ({"vectors": [q]}, {"vectors": [[1.0]]}, {"vectors": [q], "include": ["ghost"]}),
        "/similar": ({"id": "doc-00001"}, {"vector": [1.0]}, {"id": "ghost"}),
        "/score": (
            {"vector": q, "ids": ["doc-00001"]},
            {"vector": [1.0], "ids": ["doc-00001"]},
            {"vector": q, "ids": ["ghost"]},
        ),
    }
    changes = {
        "delete": ({"ids": ["doc-00002"]}, {"ids": []}),
        "upsert": ({"ids": ["new-1"], "vectors": [q]}, {"ids": ["new-2"], "vectors": [[1.0]]}),
        "attributes": ({"ids": ["doc-00005"], "set": {"brand": "b9"}}, {"ids": ["doc-00005"], "set": {"size": 1}}),
    }
    for op, (good, bad) in changes.items():
        path, url = "/v1/collections/{name}/" + op, "/v1/collections/c/" + op
        table[("POST", path, 200)] = lambda c, u=url, b=good: c.post(u, json=b, headers=auth)
        table[("POST", path, 400)] = lambda c, u=url, b=bad: c.post(u, json=b, headers=auth)
        table[("POST", path, 401)] = lambda c, u=url, b=good: c.post(u, json=b)
        table[("POST", path, 403)] = lambda c, u=url, b=good: c.post(u, json=b, headers={"Authorization": "Bearer no"})
        table[("POST", path, 404)] = lambda c, o=op, b=good: c.post(f"/v1/collections/nope/{o}", json=b, headers=auth)
        table[("POST", path, 413)] = lambda c, u=url: c.post(u, json={"ids": ["x" * 5000]}, headers=auth)
        table[("POST", path, 422)] = lambda c, u=url: c.post(u, json={"unexpected": 1}, headers=auth)
        table[("POST", path, 415)] = lambda c, u=url: c.post(u, content=b"ids=a", headers={**auth, **FORM})
    stale = Cursor("a-version-long-gone", 0, 0, filter_key(None)).encode()
    bodies.update(
        {
            "/recommend": ({"positive": ["doc-00001"]}, {"positive": [[1.0]]}, {"positive": ["ghost"]}),
            "/get": ({"ids": ["doc-00001", "ghost"]}, {"ids": ["a", "a"]}, None),
            "/scroll": ({"limit": 5}, {"limit": 0}, None),
            "/count": ({}, {"filter": {"must": [{"key": "colour", "match": "red"}]}}, None),
        }
    )
    table[("POST", "/v1/collections/{name}/scroll", 410)] = lambda c: c.post(
        "/v1/collections/c/scroll", json={"cursor": stale}
    )
    pinned = {
        "/search": {"vector": q, "model": "none"},
        "/search/batch": {"vectors": [q], "model": "none"},
        "/similar": {"id": "doc-00001", "model": "none"},
        "/recommend": {"positive": ["doc-00001"], "model": "none"},
        "/score": {"vector": q, "ids": ["doc-00001"], "model": "none"},
        "/route": {"model": "none"},
    }
    for suffix, body in pinned.items():
        table[("POST", "/v1/collections/{name}" + suffix, 409)] = lambda c, s=suffix, b=body: c.post(
            "/v1/collections/c" + s, json=b
        )
    route = "/v1/collections/{name}/route"
    table[("POST", route, 200)] = lambda c: c.post("/v1/collections/c/route", json={"route_key": "user-1"})
    table[("POST", route, 404)] = lambda c: c.post("/v1/collections/c/route", json={"version": "nope"})
    table[("POST", route, 413)] = lambda c: c.post("/v1/collections/c/route", json={"route_key": "x" * 5000})
    table[("POST", route, 415)] = lambda c: c.post("/v1/collections/c/route", content=b"k=3", headers=FORM)
    table[("POST", route, 422)] = lambda c: c.post("/v1/collections/c/route", json={"unexpected": 1})
    for suffix, (good, bad, unknown) in bodies.items():
        path, url = "/v1/collections/{name}" + suffix, "/v1/collections/c" + suffix
        table[("POST", path, 200)] = lambda c, u=url, b=good: c.post(u, json=b)
        table[("POST", path, 400)] = lambda c, u=url, b=bad: c.post(u, json=b)
        if unknown is None:
            table[("POST", path, 404)] = lambda c, s=suffix, b=good: c.post("/v1/collections/nope" + s, json=b)
        else:
            table[("POST", path, 404)] = lambda c, u=url, b=unknown: c.post(u, json=b)
        table[("POST", path, 413)] = lambda c, u=url: c.post(u, json=big)
        table[("POST", path, 422)] = lambda c, u=url: c.post(u, json={"unexpected": 1})
        table[("POST", path, 415)] = lambda c, u=url: c.post(u, content=b"k=3", headers=FORM)
    return table


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def off_requests(corpus: Corpus) -> dict[tuple[str, str, int], Callable[[httpx.Client], httpx.Response]]:
    """404 for the admin routes of a server without DOTCOS_ADMIN_TOKEN."""
    return {("POST", "/v1/admin/reload", 404): lambda c: c.post("/v1/admin/reload")}


def shed_requests(corpus: Corpus) -> dict[tuple[str, str, int], Callable[[httpx.Client], httpx.Response]]:
    """503 for every query route, sent to a server draining (DOTCOS_MAX_PENDING=0)."""
    q = corpus.queries[0].tolist()
    bodies = {
        "/search": {"vector": q},
        "/search/batch": {"vectors": [q]},
        "/similar": {"id": "doc-00001"},
        "/recommend": {"positive": ["doc-00001"]},
        "/score": {"vector": q, "ids": ["doc-00001"]},
        "/get": {"ids": ["doc-00001"]},
        "/scroll": {},
        "/count": {},
        "/route": {},
    }
    return {
        ("POST", "/v1/collections/{name}" + suffix, 503): (
            lambda c, u="/v1/collections/c" + suffix, b=body: c.post(u, json=b)
        )
        for suffix, body in bodies.items()
    }


def full_requests(corpus: Corpus) -> dict[tuple[str, str, int], Callable[[httpx.Client], httpx.Response]]:
    """503 for the change routes, sent to a server whose overlay holds one entry at most."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bodies = {
        "delete": {"ids": ["doc-00003", "doc-00004"]},
        "upsert": {"ids": ["new-3", "new-4"], "vectors": [corpus.queries[0].tolist()] * 2},
        "attributes": {"ids": ["doc-00003", "doc-00004"], "unset": ["brand"]},
    }
    return {
        ("POST", "/v1/collections/{name}/" + op, 503): (
            lambda c, u="/v1/collections/c/" + op, b=body: c.post(u, json=b, headers=auth)
        )
        for op, body in bodies.items()
    }


def documented(settings: ServiceSettings) -> set[tuple[str, str, int]]:
    schema = create_app(settings).openapi()
    return {
        (method.upper(), path, int(status))
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
    }


def test_every_documented_status_is_reachable(corpus: Corpus, tmp_path: Path, serve) -> None:
    brands = tmp_path / "brands.jsonl"
    brands.write_text("".join(json.dumps({"id": i, "brand": f"b{n % 5}"}) + "\n" for n, i in enumerate(corpus.ids)))
    assert build(tmp_path, corpus, "c", "--attributes-file", str(brands)) == 0
    settings = ServiceSettings(index_root=tmp_path, admin_token=SecretStr(TOKEN), max_body_bytes=4096)
    table, shed, full, off = (
        requests_by_status(corpus),
        shed_requests(corpus),
        full_requests(corpus),
        off_requests(corpus),
    )
    not_ready = ("GET", "/readyz", 503)
    assert documented(settings) == set(table) | set(shed) | set(full) | set(off) | {not_ready}
    draining = serve(tmp_path, DOTCOS_MAX_PENDING="0")
    overflowing = serve(tmp_path, DOTCOS_ADMIN_TOKEN=TOKEN, DOTCOS_OVERLAY_MAX_ENTRIES="1")
    normal = serve(tmp_path, DOTCOS_ADMIN_TOKEN=TOKEN, DOTCOS_MAX_BODY_BYTES="4096")
    for server, requests in ((normal, table), (draining, {**shed, **off}), (overflowing, full)):
        with server.client() as client:
            for (method, path, status), send in requests.items():
                response = send(client)
                assert response.status_code == status, (method, path, response.text)
                if status >= 400:
                    assert set(response.json()["error"]) == {"code", "message"}
    assert asyncio.run(readyz_before_loading(settings)) == 503


async def readyz_before_loading(settings: ServiceSettings) -> int:
    """/readyz of an app whose lifespan has not run, i.e. before any collection is loaded."""
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://dotcos") as client:
        return (await client.get("/readyz")).status_code
