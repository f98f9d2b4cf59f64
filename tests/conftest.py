"""Shared fixtures: seeded structured data, builds through the real CLI, the app in-process (for
route behaviour) and real server processes (for the lifecycle)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.types import ASGIApp

from index_builder.cli import main as build_main
from index_builder.synthetic import TwoTowerSpec, two_tower
from service.api.app import create_app
from service.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Corpus:
    """Documents with skewed norms and a few zero vectors, queries, and string ids on disk."""

    docs: np.ndarray
    queries: np.ndarray
    ids: list[str]
    docs_path: Path
    queries_path: Path
    ids_path: Path


def make_corpus(tmp: Path, n: int = 3000, dim: int = 24, zeros: int = 3, seed: int = 7) -> Corpus:
    docs, queries = two_tower(TwoTowerSpec(docs=n, queries=64, dim=dim, clusters=12, seed=seed))
    docs[[5, 17, 123][:zeros]] = 0.0
    ids = [f"doc-{i:05d}" for i in range(n)]
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "docs.npy", docs)
    np.save(tmp / "queries.npy", queries)
    (tmp / "ids.txt").write_text("\n".join(ids) + "\n")
    return Corpus(docs, queries, ids, tmp / "docs.npy", tmp / "queries.npy", tmp / "ids.txt")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def build_branded(tmp: Path, prefix: str, vectors: np.ndarray, *extra: str) -> Path:
    """Build collection `items` from `vectors` with ids `<prefix><row>` and one attribute, `brand`
    (three values in turn), under `tmp/root`; returns the root."""
    ids = [f"{prefix}{i}" for i in range(len(vectors))]
    table = pa.table({"id": ids, "vector": list(vectors), "brand": [f"b{i % 3}" for i in range(len(vectors))]})
    pq.write_table(table, tmp / "docs.parquet")
    argv = ["build", "--input", str(tmp / "docs.parquet"), "--name", "items", "--root", str(tmp / "root")]
    assert build_main([*argv, "--attributes", "brand", "--quiet", *extra]) == 0
    return tmp / "root"


def build(root: Path, corpus: Corpus, name: str = "items", *extra: str) -> int:
    """Run `dotcos-build build` in-process over the corpus; returns the exit code."""
    argv = [
        "build",
        "--input",
        str(corpus.docs_path),
        "--ids",
        str(corpus.ids_path),
        "--name",
        name,
        "--root",
        str(root),
        "--queries",
        str(corpus.queries_path),
        "--quiet",
        *extra,
    ]
    return build_main(argv)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, *lines: str, timeout: float = 10, times: int = 1) -> str:
        """The log once it holds every line (`times` times): request lines are written after the
        response is sent."""
        deadline = time.monotonic() + timeout
        while not all((log := self.log()).count(line) >= times for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        return log


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60, path: str = "/readyz") -> None:
    """Poll `path` (/readyz) until 200; fail with the process's exit if it dies first."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if client.get(path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"{url}{path} not ready after {timeout}s")


class LoopTransport(httpx.BaseTransport):
    """A synchronous httpx transport into an ASGI app whose event loop runs in another thread."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.inner, self.loop = httpx.ASGITransport(app=app), loop

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        return httpx.Response(response.status_code, headers=response.headers, content=await response.aread())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        copy = httpx.Request(request.method, request.url, headers=request.headers, content=request.read())
        return asyncio.run_coroutine_threadsafe(self._send(copy), self.loop).result(timeout=60)


@contextmanager
def in_process(root: Path, **env: str) -> Iterator[httpx.Client]:
    """The app with its lifespan in this process (settings from `env` as the server would read
    them), once /readyz answers 200: for route behaviour, where a real process adds nothing."""
    environment = {"DOTCOS_INDEX_ROOT": str(root), "DOTCOS_RELOAD_INTERVAL": "0.2", **env}
    with mock.patch.dict(os.environ, environment):
        app = create_app(ServiceSettings())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    lifespan = app.router.lifespan_context(app)
    asyncio.run_coroutine_threadsafe(lifespan.__aenter__(), loop).result(timeout=60)
    try:
        with httpx.Client(transport=LoopTransport(app, loop), base_url="http://127.0.0.1", timeout=30) as client:
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"collections under {root} not ready after 60s")
                time.sleep(0.05)
            yield client
    finally:
        asyncio.run_coroutine_threadsafe(lifespan.__aexit__(None, None, None), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def start_server(root: Path, log_path: Path, wait_for: str = "/readyz", **env: str) -> Server:
    """Start the real `dotcos-serve` console script on a free 127.0.0.1 port; return once
    `wait_for` answers 200."""
    port = free_port()
    environment = {
        **os.environ,
        "DOTCOS_INDEX_ROOT": str(root),
        "DOTCOS_PORT": str(port),
        "DOTCOS_HOST": "127.0.0.1",
        "DOTCOS_RELOAD_INTERVAL": "0.2",
        **env,
    }
    with open(log_path, "wb") as handle:
        process = subprocess.Popen(
            [str(BIN / "dotcos-serve")], env=environment, stdout=handle, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, path=wait_for)
    except Exception:
        process.kill()
        raise
    return Server(url, process, log_path)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[callable]:
    """Factory fixture: serve(root, **env) starts a server that is stopped after the test."""
    servers: list[Server] = []

    def _start(root: Path, wait_for: str = "/readyz", **env: str) -> Server:
        server = start_server(root, tmp_path / f"server-{len(servers)}.log", wait_for, **env)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        stop_server(server)
