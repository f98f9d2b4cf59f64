"""The engines bench.peers compares, each loaded with the same documents and HNSW parameters.

Every engine answers `search(vector, ef) -> ids` through a per-thread client made the way its own
users would (dotcos over HTTP/JSON or its binary body, Redis over RESP with redis-py, PostgreSQL
with psycopg, Chroma over its REST API, the Qdrant engine in-process), and reports the CPU and
memory of its server's process tree. Set-up comes from bench/peers_setup.sh; an engine that is
not set up raises `Unavailable` with the reason, which the bench prints in its table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.onesend import OneSendConnection
from bench.peer_data import K, PeerData
from bench.service_load import Server, free_port

WORK = Path(__file__).parent / ".work" / "peers"
HNSW_M, EF_CONSTRUCTION = 32, 128
Search = Callable[[np.ndarray, int], np.ndarray]


class Unavailable(Exception):
    """A peer that could not be set up or started; the message says why."""


def peer_status(name: str) -> None:
    """Raise Unavailable unless bench/peers_setup.sh set the peer up."""
    path = WORK / f"{name}.status"
    text = path.read_text().strip() if path.exists() else "not set up: run bash bench/peers_setup.sh"
    if text != "ok":
        raise Unavailable(text)


def tree_pids(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    tree = {root}
    while new := {pid for pid, parent in parents.items() if parent in tree} - tree:
        tree |= new
    return sorted(tree)


def pss_bytes(root: int) -> int:
    """Proportional set size of a process tree (shared pages counted once across it)."""
    total = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@dataclass
class Engine:
    """One engine serving one metric: how to make a client, and its server's CPU and memory."""

    name: str
    metric: str
    knob: str
    client: Callable[[], Search]
    cpu_seconds: Callable[[], float]
    memory_bytes: Callable[[], int]
    load_seconds: float
    in_process: bool = False
    knobs: tuple[int, ...] = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def _server_engine(
    server: Server, name: str, metric: str, knob: str, client: Callable[[], Search], load: float
) -> Engine:
    pid = server.process.pid
    return Engine(name, metric, knob, client, server.cpu_seconds, lambda: pss_bytes(pid), load)


class HttpClient:
    """A keep-alive HTTP/1.1 connection sending each request in one write (bench.onesend)."""

    def __init__(self, port: int) -> None:
        self.connection = OneSendConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> bytes:
        self.connection.request("POST", path, body, {"Content-Type": content_type})
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")
        return data


# dotcos ---------------------------------------------------------------------------------------


def dotcos_collection(data: PeerData, root: Path, docs: Path, name: str, extra: tuple[str, ...] = ()) -> float:
    """Build a collection (both metrics, HNSW32, efConstruction 128, tuned on the queries)."""
    from bench.scaleout import build_collection

    root.parent.mkdir(parents=True, exist_ok=True)
    queries = root.parent / "queries.npy"
    np.save(queries, data.queries)
    knobs = ("--hnsw-m", str(HNSW_M), "--ef-construction", str(EF_CONSTRUCTION), "--queries", str(queries))
    return build_collection(root, docs, name, "hnsw", *knobs, *extra, metrics="dot,cosine")


Request = Callable[["HttpClient", str, np.ndarray, int], bytes]
"""One search sent over a client's connection: (client, metric, vector, ef) -> the answer's body."""


def http_engines(server: Server, port: int, label: str, load: float, request: Request) -> list[Engine]:
    """Both metrics' engines of a server answering with dotcos's hits (ids are row numbers)."""

    def engine(metric: str) -> Engine:
        def client() -> Search:
            http_client = HttpClient(port)

            def search(vector: np.ndarray, ef: int) -> np.ndarray:
                hits = orjson.loads(request(http_client, metric, vector, ef))["results"]
                return np.array([int(h["id"]) for h in hits], dtype=np.int64)

            return search

        return _server_engine(server, label, metric, "efSearch", client, load)

    return [engine("dot"), engine("cosine")]


def dotcos_engines(
    root: Path, name: str, label: str, load: float, env: dict[str, str], binary: bool
) -> tuple[Server, list[Engine]]:
    """One dotcos server for both metrics; `binary` sends raw float32 bodies instead of JSON."""
    from bench.service_load import start_dotcos

    server = start_dotcos(root, root.parent / f"{name}-{len(label)}.log", env)
    port = int(server.url.rsplit(":", 1)[1])

    def request(http_client: HttpClient, metric: str, vector: np.ndarray, ef: int) -> bytes:
        if binary:
            path = f"/v1/collections/{name}/search?k={K}&metric={metric}&ef_search={ef}"
            return http_client.post(path, vector.astype("<f4").tobytes(), "application/octet-stream")
        body = {"vector": vector.tolist(), "k": K, "metric": metric, "params": {"ef_search": ef}}
        return http_client.post(f"/v1/collections/{name}/search", orjson.dumps(body))

    return server, http_engines(server, port, label, load, request)


FLOOR_FRONTS = {
    "asgi": "raw ASGI on dotcos's uvicorn stack",
    "raw": "asyncio + httptools, no ASGI, no uvicorn",
}


def floor_engines(root: Path, name: str, load: float, front: str) -> tuple[Server, list[Engine]]:
    """bench.search_floor_app on a dotcos collection (raw float32 bodies): the Python floor."""
    from bench.service_load import BIN, start

    port = free_port()
    env = {"DOTCOS_FLOOR_ROOT": str(root), "DOTCOS_FLOOR_COLLECTION": name}
    argv = [str(BIN / "python"), "-m", "bench.search_floor_app", str(port), front]
    server = start("floor", argv, env, port, "/", root.parent / f"floor-{name}-{front}.log")

    def request(http_client: HttpClient, metric: str, vector: np.ndarray, ef: int) -> bytes:
        return http_client.post(f"/search?k={K}&metric={metric}&ef_search={ef}", vector.astype("<f4").tobytes())

    label = f"Python floor ({name}, {FLOOR_FRONTS[front]}): one FAISS call, no checks, no rescoring"
    return server, http_engines(server, port, label, load, request)


# Redis Stack ----------------------------------------------------------------------------------

REDIS_METRICS = {"dot": "IP", "cosine": "COSINE"}


def redis_server() -> tuple[Server, int]:
    """An empty Redis Stack with RediSearch (TIMEOUT 0: never partial results) and its port."""
    peer_status("redis")
    import redis

    server_bin = next((WORK / "redis-venv").rglob("redis-stack-server/bin/redis-server"))
    module = server_bin.parent.parent / "lib" / "redisearch.so"
    port = free_port()
    argv = [str(server_bin), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--loadmodule", str(module), "TIMEOUT", "0"]
    env = {**os.environ, "LD_LIBRARY_PATH": str(WORK / "libssl1.1/usr/lib/x86_64-linux-gnu")}
    server = _started("redis", argv, WORK / "redis.log", env)
    connection = redis.Redis(port=port, protocol=2)
    _retry(connection.ping, redis.ConnectionError, server)
    return server, port


def redis_engines(data: PeerData) -> tuple[Server, list[Engine]]:
    """Redis Stack with one RediSearch HNSW index per metric."""
    import redis

    server, port = redis_server()
    load = _loaded(server, lambda: _load_redis(port, data))

    def engine(metric: str) -> Engine:
        def client() -> Search:
            mine = redis.Redis(port=port, protocol=2)
            query = f"*=>[KNN {K} @v $q EF_RUNTIME $ef AS score]"

            def search(vector: np.ndarray, ef: int) -> np.ndarray:
                found = mine.execute_command(
                    "FT.SEARCH", f"idx_{metric}", query, "PARAMS", "4", "q", vector.astype("<f4").tobytes(),
                    "ef", str(ef), "RETURN", "1", "score", "SORTBY", "score", "LIMIT", "0", str(K), "DIALECT", "2",
                )  # fmt: skip
                return np.array([int(key.split(b":")[1]) for key in found[1::2]], dtype=np.int64)

            return search

        return _server_engine(server, "Redis Stack 7.4 (RediSearch HNSW)", metric, "EF_RUNTIME", client, load)

    return server, [engine("dot"), engine("cosine")]


def _started(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Server:
    """A server process, its output in `log`."""
    with open(log, "wb") as handle:
        return Server(name, subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT), "")


def _retry(call: Callable[[], Any], error: type[Exception], server: Server) -> None:
    """Call until it no longer raises `error` (the server is still starting); 30 s at most."""
    for _ in range(300):
        try:
            call()
            return
        except error:
            time.sleep(0.1)
    server.stop()
    raise Unavailable(f"{server.name} did not answer within 30 s")


def _loaded(server: Server, load: Callable[[], float]) -> float:
    """The seconds `load` took; the server is stopped if loading fails."""
    try:
        return load()
    except BaseException:
        server.stop()
        raise


def _load_redis(port: int, data: PeerData) -> float:
    """Both metrics' indexes loaded and fully indexed; the seconds it took."""
    import redis

    connection = redis.Redis(port=port, protocol=2)
    started = time.perf_counter()
    for metric, distance in REDIS_METRICS.items():
        connection.execute_command(
            "FT.CREATE", f"idx_{metric}", "ON", "HASH", "PREFIX", "1", f"{metric}:", "SCHEMA", "v", "VECTOR",
            "HNSW", "10", "TYPE", "FLOAT32", "DIM", str(data.dim), "DISTANCE_METRIC", distance, "M", str(HNSW_M),
            "EF_CONSTRUCTION", str(EF_CONSTRUCTION),
        )  # fmt: skip
        pipe = connection.pipeline(transaction=False)
        for i, vector in enumerate(data.docs):
            pipe.hset(f"{metric}:{i}", "v", vector.astype("<f4").tobytes())
            if i % 2000 == 1999:
                pipe.execute()
        pipe.execute()
    while any(_indexed(connection.execute_command("FT.INFO", f"idx_{m}")) < 1 for m in REDIS_METRICS):
        time.sleep(0.2)
    return time.perf_counter() - started


def _indexed(info: Any) -> float:
    """FT.INFO's percent_indexed (redis-py answers a dict or a flat list, by version)."""
    fields = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2], strict=False))
    value = fields.get("percent_indexed", fields.get(b"percent_indexed"))
    return float(value)


# pgvector -------------------------------------------------------------------------------------

PG = Path("/usr/lib/postgresql/15/bin")
PG_USER = "dotcos-bench"
PG_OPS = {"dot": ("vector_ip_ops", "<#>"), "cosine": ("vector_cosine_ops", "<=>")}


def _as_pg_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as an unprivileged user of the bench's own."""
    if os.getuid() != 0:
        return argv
    if subprocess.run(["id", PG_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True)
    return ["runuser", "-u", PG_USER, "--", *argv]


def _load_pg(dsn: str, data: PeerData) -> float:
    """The table copied in and both metrics' HNSW indexes built; the seconds it took."""
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE items (id integer PRIMARY KEY, v vector({data.dim}))")
        with connection.cursor().copy("COPY items (id, v) FROM STDIN") as copy:
            for i, vector in enumerate(data.docs):
                copy.write_row((i, "[" + ",".join(f"{x:.7g}" for x in vector) + "]"))
        for metric, (ops, _) in PG_OPS.items():
            connection.execute(f"CREATE INDEX items_{metric} ON items USING hnsw (v {ops})")
    return time.perf_counter() - started


def pg_server() -> tuple[Server, str]:
    """An empty PostgreSQL 15 with the pgvector extension created, and its connection string."""
    peer_status("pgvector")
    import psycopg

    home = WORK / "pg"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    if os.getuid() == 0:
        _as_pg_user(["true"])
        shutil.chown(home, PG_USER)
    initdb = [str(PG / "initdb"), "-D", str(home / "data"), "-A", "trust", "-U", "bench"]
    subprocess.run(_as_pg_user(initdb), check=True, capture_output=True)
    port = free_port()
    settings = ["listen_addresses=127.0.0.1", "shared_buffers=512MB", "maintenance_work_mem=1GB", "fsync=off"]
    argv = [str(PG / "postgres"), "-D", str(home / "data"), "-p", str(port), "-k", str(home)]
    dsn = f"host=127.0.0.1 port={port} user=bench dbname=postgres"
    server = _started("pgvector", _as_pg_user([*argv, *(f"-c{s}" for s in settings)]), WORK / "pgvector.log")
    _retry(lambda: psycopg.connect(dsn).close(), psycopg.OperationalError, server)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION vector")
    return server, dsn


def pgvector_engines(data: PeerData) -> tuple[Server, list[Engine]]:
    """pgvector 0.8 at its HNSW defaults (m 16, ef_construction 64), one index per metric."""
    import psycopg

    server, dsn = pg_server()
    load = _loaded(server, lambda: _load_pg(dsn, data))

    def engine(metric: str) -> Engine:
        operator = PG_OPS[metric][1]

        def client() -> Search:
            mine = psycopg.connect(dsn, autocommit=True)
            current = [0]

            def search(vector: np.ndarray, ef: int) -> np.ndarray:
                if ef != current[0]:
                    mine.execute(f"SET hnsw.ef_search = {int(ef)}")
                    current[0] = ef
                text = "[" + ",".join(f"{x:.7g}" for x in vector) + "]"
                rows = mine.execute(
                    f"SELECT id, v {operator} %s::vector AS d FROM items ORDER BY d LIMIT {K}", (text,)
                ).fetchall()
                return np.array([r[0] for r in rows], dtype=np.int64)

            return search

        return _server_engine(server, "pgvector 0.8 (HNSW m 16, ef_construction 64)", metric, "ef_search", client, load)

    return server, [engine("dot"), engine("cosine")]


# Chroma ---------------------------------------------------------------------------------------

CHROMA_SPACES = {"dot": "ip", "cosine": "cosine"}
CHROMA_BASE = "/api/v2/tenants/default_tenant/databases/default_database/collections"


def chroma_engine(data: PeerData, metric: str, ef: int, docs: Path) -> tuple[Server, Engine]:
    """A Chroma server holding one collection at a fixed ef (Chroma fixes ef per collection)."""
    from bench.service_load import chroma_venv, load_chroma, start_chroma

    venv = chroma_venv(WORK.parent)
    if venv is None:
        raise Unavailable("chromadb is not installed (bench/peers_setup.sh installs it)")
    shutil.rmtree(WORK.parent / "chroma-db", ignore_errors=True)
    server = start_chroma(venv, WORK.parent)
    started = time.perf_counter()
    collection = load_chroma(venv, server, docs, f"peers_{metric}", CHROMA_SPACES[metric], ef)
    load = time.perf_counter() - started
    port = int(server.url.rsplit(":", 1)[1])

    def client() -> Search:
        mine = HttpClient(port)
        path = f"{CHROMA_BASE}/{collection}/query"

        def search(vector: np.ndarray, _ef: int) -> np.ndarray:
            body = {"query_embeddings": [vector.tolist()], "n_results": K, "include": ["distances"]}
            return np.array([int(i) for i in json.loads(mine.post(path, orjson.dumps(body)))["ids"][0]], dtype=np.int64)

        return search

    engine = _server_engine(server, "Chroma 1.x server (M 32, ef_construction 128)", metric, "ef", client, load)
    engine.knobs = (ef,)
    return server, engine


# Qdrant engine (in-process) -------------------------------------------------------------------

QDRANT_DISTANCES = {"dot": "Dot", "cosine": "Cosine"}


def qdrant_engine(data: PeerData, metric: str) -> Engine:
    """The Qdrant engine (qdrant-edge) in this process: no server, no network, no JSON."""
    peer_status("qdrant")
    import qdrant_edge as q

    path = WORK / f"qdrant-{metric}"
    shutil.rmtree(path, ignore_errors=True)
    before = pss_bytes(os.getpid())
    started = time.perf_counter()
    config = q.EdgeConfig(
        vectors=q.EdgeVectorParams(size=data.dim, distance=getattr(q.Distance, QDRANT_DISTANCES[metric])),
        hnsw_config=q.HnswIndexConfig(m=HNSW_M, ef_construct=EF_CONSTRUCTION, full_scan_threshold=10),
        optimizers=q.EdgeOptimizersConfig(indexing_threshold=1),  # always an HNSW graph, never a plain scan
    )
    shard = q.EdgeShard.create(str(path), config)
    for first in range(0, len(data.docs), 5000):
        points = [q.Point(i, data.docs[i].tolist()) for i in range(first, min(first + 5000, len(data.docs)))]
        shard.update(q.UpdateOperation.upsert_points(points))
    shard.optimize()
    load = time.perf_counter() - started
    memory = pss_bytes(os.getpid()) - before

    def client() -> Search:
        def search(vector: np.ndarray, ef: int) -> np.ndarray:
            request = q.QueryRequest(limit=K, query=q.Query.Nearest(vector.tolist()), params=q.SearchParams(hnsw_ef=ef))
            return np.array([p.id for p in shard.query(request)], dtype=np.int64)

        return search

    def cpu() -> float:
        times = os.times()
        return times.user + times.system

    return Engine("Qdrant engine (qdrant-edge, in-process)", metric, "hnsw_ef", client, cpu, lambda: memory, load, True)
