"""Service section: real server processes driven by wrk (a C load generator, cheap per request).

Each run reports QPS, p50/p95/p99, errors and the CPU time of client and server, so the
client's share of the two shared cores is visible.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

BIN = Path(sys.executable).parent
LUA = Path(__file__).parent / "wrk" / "post.lua"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str

    def cpu_seconds(self) -> float:
        """User + system CPU of the server so far: its process and every live descendant (workers)."""
        stats = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        tree = {self.process.pid}
        while new := {pid for pid, (parent, _) in stats.items() if parent in tree} - tree:
            tree |= new
        return sum(stats[pid][1] for pid in tree if pid in stats) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(name: str, argv: list[str], env: dict[str, str], port: int, ready_path: str, log: Path) -> Server:
    with open(log, "wb") as handle:
        process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited; see {log}")
        try:
            if httpx.get(url + ready_path, timeout=2).status_code == 200:
                return Server(name, process, url)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise TimeoutError(f"{name} not ready")


def start_dotcos(root: Path, log: Path, extra_env: dict[str, str] | None = None) -> Server:
    port = free_port()
    env = {
        "DOTCOS_INDEX_ROOT": str(root),
        "DOTCOS_PORT": str(port),
        "DOTCOS_LOG_LEVEL": "warning",
        "DOTCOS_RELOAD_INTERVAL": "0",
        **(extra_env or {}),
    }
    return start("dotcos", [str(BIN / "dotcos-serve")], env, port, "/readyz", log)


def start_minimal(index_file: Path, ef: int, log: Path) -> Server:
    port = free_port()
    argv = [str(BIN / "uvicorn"), "bench.minimal_app:app", "--port", str(port), "--log-level", "warning"]
    env = {"MINIMAL_INDEX": str(index_file), "MINIMAL_EF": str(ef), "OMP_NUM_THREADS": "1"}
    return start("minimal", argv, env, port, "/docs", log)


CHROMA_QUERY = "/api/v2/tenants/default_tenant/databases/default_database/collections/{id}/query"


def chroma_venv(workdir: Path) -> Path | None:
    """Chroma's own virtualenv, installed by bench/setup.sh when chromadb installs."""
    venv = workdir / "chroma-venv"
    return venv if (venv / "bin" / "chroma").exists() else None


def start_chroma(venv: Path, workdir: Path) -> Server:
    port = free_port()
    argv = [
        str(venv / "bin" / "chroma"),
        "run",
        "--path",
        str(workdir / "chroma-db"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return start("chroma", argv, {}, port, "/api/v2/heartbeat", workdir / "chroma.log")


def load_chroma(venv: Path, server: Server, docs: Path, name: str, space: str, ef: int) -> str:
    """Load the documents with the same HNSW parameters as dotcos; returns the collection id."""
    port = server.url.rsplit(":", 1)[1]
    loader = Path(__file__).parent / "chroma_load.py"
    result = subprocess.run(
        [str(venv / "bin" / "python"), str(loader), port, str(docs), name, space, str(ef)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def write_bodies(
    path: Path, queries: np.ndarray, extra: dict[str, object], key: str = "vector", nest: bool = False
) -> Path:
    """One JSON body per line; `nest` wraps the vector in a list (APIs that take a batch)."""
    with open(path, "w") as handle:
        for q in queries:
            vector = [round(float(x), 5) for x in q]
            handle.write(json.dumps({key: [vector] if nest else vector, **extra}) + "\n")
    return path


def wrk(server: Server, path: str, bodies: Path, connections: int, seconds: float) -> dict[str, float]:
    """One wrk run; QPS and latency from its Lua summary, CPU of both sides from the OS."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed; run bench/setup.sh")
    before_client = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_server = server.cpu_seconds()
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            server.url + path,
        ],
        env={**os.environ, "BODIES": str(bodies)},
        capture_output=True,
        text=True,
        check=True,
    )
    after_client = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    client_cpu = (after_client.ru_utime - before_client.ru_utime) + (after_client.ru_stime - before_client.ru_stime)
    server_cpu = server.cpu_seconds() - before_server
    duration = summary["duration_us"] / 1e6
    return {
        "connections": connections,
        "qps": round(summary["requests"] / duration, 1),
        "goodput": round((summary["requests"] - summary["non_2xx"]) / duration, 1),
        "shed_share": round(summary["non_2xx"] / max(summary["requests"], 1), 4),
        "other_errors": summary["errors"],
        "p50_ms": summary["p50_us"] / 1000,
        "p95_ms": summary["p95_us"] / 1000,
        "p99_ms": summary["p99_us"] / 1000,
        "errors": summary["errors"] + summary["non_2xx"],
        "client_cpu_share": round(client_cpu / max(client_cpu + server_cpu, 1e-9), 3),
        "server_cpu_us": round(server_cpu / max(summary["requests"], 1) * 1e6, 1),
    }
