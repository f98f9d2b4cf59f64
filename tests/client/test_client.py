"""The Python client's whole surface against a real `dotcos-serve`, sync and async; its error
classes and retries against a stub server that answers what a test tells it; and the client
installed alone in a fresh virtual environment, where faiss is absent."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from dotcos_client import AsyncClient, BadRequest, Client, Conflict, DotcosError, Gone, NotFound, Unavailable
from dotcos_client.calls import scroll_page

from index_builder.cli import main as build_main
from tests.conftest import REPO, Server, build_branded, free_port

TOKEN = "client-token"
N, DIM = 500, 8


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("client")
    return build_branded(tmp, "d", np.random.default_rng(4).standard_normal((N, DIM)).astype(np.float32))


@pytest.fixture
def server(root: Path, serve) -> Server:
    return serve(root, DOTCOS_ADMIN_TOKEN=TOKEN, DOTCOS_OVERLAY_REFRESH_S="0.05")


def test_the_sync_client_covers_the_api(server: Server) -> None:
    query = np.linspace(-1, 1, DIM).astype(np.float32)
    with Client(server.url, token=TOKEN) as dotcos:
        assert [c["name"] for c in dotcos.collections()] == ["items"] and dotcos.info("items")["count"] == N
        top = dotcos.search("items", query, k=5, metric="cosine")
        assert len(top) == 5 and top.metric == "cosine" and top.collection == "items"
        exact = dotcos.search("items", query.tolist(), k=5, metric="cosine", exact=True)
        assert [h.id for h in exact] == top.ids
        assert dotcos.search("items", query, k=3, offset=2, metric="cosine", exact=True).ids == top.ids[2:5]
        filtered = dotcos.search(
            "items", query, k=4, filter={"must": [{"key": "brand", "match": "b1"}]}, with_attributes=True
        )
        assert all(h.attributes == {"brand": "b1"} for h in filtered)
        carried = dotcos.search("items", query, k=2, with_vectors=True)
        assert all(h.vector is not None and h.vector.shape == query.shape for h in carried)
        batch = dotcos.search_batch("items", np.stack([query, -query]), k=3)
        assert len(batch) == 2 and all(len(row) == 3 for row in batch)
        assert len(dotcos.search("items", query, k=6, mmr={"diversity": 0.5, "candidates": 30})) == 6
        assert "d1" not in dotcos.similar("items", "d1", k=3).ids
        assert not {"d1", "d2"} & set(dotcos.similar("items", ids=["d1", "d2"], k=3).ids)
        assert len(dotcos.similar("items", vector=query, k=2)) == 2
        liked = dotcos.recommend("items", ["d1", query], ["d2"], strategy="best_score", k=4)
        assert len(liked) == 4 and not {"d1", "d2"} & set(liked.ids)
        scored = dotcos.score("items", query, ["d3", "d4"], metric="dot")
        assert [h.id for h in scored] == ["d3", "d4"]
        both = dotcos.score_batch("items", np.stack([query, -query]), [["d3"], ["d3", "d4"]], metric="dot")
        assert [[h.id for h in hits] for hits in both] == [["d3"], ["d3", "d4"]]
        assert both[0][0].score == pytest.approx(-both[1][0].score) == pytest.approx(scored[0].score)

        written = dotcos.upsert("items", ["n1"], query[None, :] * 3, attributes=[{"brand": "b9"}])
        assert written.count == 1 and written.position > 0
        assert dotcos.delete("items", ["d7", "ghost"]).unknown == ["ghost"]
        assert dotcos.set_attributes("items", ["d8"], set={"brand": "b9"}).count == 1
        got = dotcos.get("items", ["n1", "d7", "d8"], with_vectors=True)
        assert [d.id for d in got.documents] == ["n1", "d8"] and got.missing == ["d7"]
        assert np.array_equal(got.documents[0].vector, query * 3) and got.documents[1].attributes == {"brand": "b9"}
        assert (
            dotcos.count("items") == N
            and dotcos.count("items", filter={"must": [{"key": "brand", "match": "b9"}]}) == 2
        )
        scrolled = [doc.id for doc in dotcos.scroll("items", limit=64)]
        assert len(scrolled) == len(set(scrolled)) == N and "d7" not in scrolled and "n1" in scrolled


def test_the_async_client_covers_the_same_api(server: Server) -> None:
    query = np.linspace(1, -1, DIM).astype(np.float32)

    async def run() -> None:
        async with AsyncClient(server.url, token=TOKEN) as dotcos:
            assert (await dotcos.info("items"))["name"] == "items"
            assert len(await dotcos.collections()) == 1
            top = await dotcos.search("items", query, k=4)
            assert len(top) == 4
            assert len(await dotcos.search_batch("items", [query, query], k=2)) == 2
            assert len(await dotcos.similar("items", "d1", k=2)) == 2
            assert len(await dotcos.recommend("items", ["d1"], k=2)) == 2
            assert (await dotcos.score("items", query, ["d1"]))[0].id == "d1"
            assert (await dotcos.score_batch("items", [query], [["d1"]]))[0][0].id == "d1"
            await dotcos.upsert("items", ["a1"], [query])
            await dotcos.set_attributes("items", ["a1"], set={"brand": "b2"})
            assert (await dotcos.get("items", ["a1"])).documents[0].attributes == {"brand": "b2"}
            await dotcos.delete("items", ["a1"])
            assert (await dotcos.get("items", ["a1"])).missing == ["a1"]
            assert await dotcos.count("items") == N
            assert len([doc async for doc in dotcos.scroll("items", limit=100)]) == N
            with pytest.raises(NotFound):
                await dotcos.search("nope", query)

    asyncio.run(run())


def test_errors_carry_status_code_and_message(server: Server, root: Path, serve) -> None:
    with Client(server.url, token=TOKEN) as dotcos:
        with pytest.raises(BadRequest) as bad:
            dotcos.search("items", [1.0, 2.0])
        assert bad.value.status == 400 and bad.value.code == "invalid_input" and "dimension 8" in bad.value.message
        with pytest.raises(BadRequest) as malformed:
            dotcos.search("items", np.ones(DIM), k="5", with_attributes=True)  # type: ignore[arg-type]
        assert malformed.value.status == 422
        with pytest.raises(NotFound):
            dotcos.info("nope")
        with pytest.raises(NotFound):
            dotcos.similar("items", "ghost")
        cursor = dotcos.send(scroll_page("items", None, {"limit": 10}))[1]
        assert build_main(["build", "--from-current", "--name", "items", "--root", str(root), "--quiet"]) == 0
        dotcos.http.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(Gone) as gone:
            dotcos.send(scroll_page("items", cursor, {"limit": 10}))
        assert gone.value.status == 410 and isinstance(gone.value, NotFound)
    draining = serve(root, DOTCOS_MAX_PENDING="0")
    with Client(draining.url, retries=1, backoff=0.01) as shed:
        with pytest.raises(Unavailable) as busy:
            shed.search("items", np.ones(DIM, np.float32))
        assert busy.value.status == 503 and busy.value.retry_after == 1.0


class Stub:
    """A local HTTP server answering each request with the next of `replies` (status, headers,
    body); it records what it received."""

    def __init__(self, replies: list[tuple[int, dict[str, str], dict[str, Any]]]) -> None:
        self.replies, self.seen = replies, []
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", interface="asgi3")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen.append(
            {"path": scope["path"], "query": scope["query_string"].decode(), "headers": headers, "body": body}
        )
        status, extra, content = self.replies[min(len(self.seen), len(self.replies)) - 1]
        payload = json.dumps(content).encode()
        response_headers = [
            (b"content-type", b"application/json"),
            *((k.encode(), v.encode()) for k, v in extra.items()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})

    def __enter__(self) -> Stub:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


ANSWER = {"collection": "items", "version": "v1", "metric": "dot", "results": [{"id": "d1", "score": 1.5}]}
BUSY = {"error": {"code": "unavailable", "message": "overloaded"}}


def test_a_503_is_retried_honouring_retry_after_then_the_answer_comes() -> None:
    replies = [(503, {"Retry-After": "0.2"}, BUSY), (503, {}, BUSY), (200, {}, ANSWER)]
    with Stub(replies) as stub, Client(stub.url, backoff=0.01) as dotcos:
        started = time.monotonic()
        result = dotcos.search("items", np.ones(4, np.float32), k=1, deadline=5.0)
        assert result.ids == ["d1"] and len(stub.seen) == 3 and time.monotonic() - started >= 0.2
        assert all(s["headers"]["content-type"] == "application/octet-stream" for s in stub.seen)
        assert 0 < float(stub.seen[0]["headers"]["x-deadline-ms"]) <= 5000
        assert np.frombuffer(stub.seen[0]["body"], "<f4").tolist() == [1.0] * 4 and "k=1" in stub.seen[0]["query"]


def test_routing_fields_travel_in_the_query_string_of_a_binary_body() -> None:
    with Stub([(200, {}, {**ANSWER, "arm": "candidate"})]) as stub, Client(stub.url) as dotcos:
        result = dotcos.search("items", np.ones(4, np.float32), route_key="user-7", model="m2")
        assert result.arm == "candidate" and stub.seen[0]["headers"]["content-type"] == "application/octet-stream"
        assert "route_key=user-7" in stub.seen[0]["query"] and "model=m2" in stub.seen[0]["query"]


def test_retries_are_bounded_and_writes_are_not_repeated_after_a_lost_answer() -> None:
    with Stub([(503, {"Retry-After": "0"}, BUSY)]) as stub, Client(stub.url, retries=2, backoff=0.01) as dotcos:
        with pytest.raises(Unavailable):
            dotcos.search("items", np.ones(4, np.float32))
        assert len(stub.seen) == 3
    calls: list[httpx.Request] = []

    def lost(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadError("connection lost", request=request)

    with Client("http://dotcos.invalid", retries=3, backoff=0.0, transport=httpx.MockTransport(lost)) as dotcos:
        with pytest.raises(httpx.ReadError):
            dotcos.delete("items", ["d1"])
        assert len(calls) == 1
        with pytest.raises(httpx.ReadError):
            dotcos.count("items")
        assert len(calls) == 5


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequest),
        (404, NotFound),
        (409, Conflict),
        (410, Gone),
        (413, BadRequest),
        (415, BadRequest),
        (422, BadRequest),
        (401, DotcosError),
    ],
)
def test_each_status_is_its_error_class(status: int, error: type[DotcosError]) -> None:
    body = {"error": {"code": "some_code", "message": "what went wrong"}}
    with Stub([(status, {}, body)]) as stub, Client(stub.url) as dotcos:
        with pytest.raises(error) as raised:
            dotcos.search("items", [1.0, 2.0], filter={"must": []})
        assert (raised.value.status, raised.value.code, raised.value.message) == (
            status,
            "some_code",
            "what went wrong",
        )
        assert type(raised.value) is error and stub.seen[0]["headers"]["content-type"] == "application/json"


def test_the_client_installs_alone_in_a_fresh_environment_without_faiss(tmp_path: Path, server: Server) -> None:
    wheels, source = tmp_path / "wheels", tmp_path / "client"
    shutil.copytree(REPO / "client", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels)]
    subprocess.run([*build, str(source)], check=True, capture_output=True, timeout=300)
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "client-deps.pth").write_text(str(_dependencies(tmp_path / "deps")) + "\n")
    (wheel,) = wheels.glob("dotcos_client-*.whl")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel)], check=True, timeout=300
    )
    script = (
        "import importlib.util, sys, numpy as np\n"
        "from dotcos_client import Client\n"
        "assert importlib.util.find_spec('faiss') is None and importlib.util.find_spec('fastapi') is None\n"
        "assert 'index_builder' not in sys.modules and importlib.util.find_spec('index_builder') is None\n"
        "with Client(sys.argv[1]) as c:\n"
        "    print(len(c.search('items', np.ones(8, np.float32), k=3)))\n"
    )
    done = subprocess.run(
        [str(python), "-c", script, server.url], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"


CLIENT_DEPENDENCIES = ("httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi", "numpy", "numpy.libs")


def _dependencies(target: Path) -> Path:
    """A directory holding only the client's dependencies (links into this environment's)."""
    target.mkdir()
    for name in CLIENT_DEPENDENCIES:
        for source in Path(np.__file__).parents[1].glob(name):
            (target / source.name).symlink_to(source)
    return target
