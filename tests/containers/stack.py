"""A compose project driven the way a user drives it, through the docker CLI and the port it
publishes on 127.0.0.1, and the data and checks the container tests share."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import REPO, free_port

DIM = 16
PROXY_CA_DIR = Path("/usr/local/share/ca-certificates")


class Stack:
    """One compose project (its own name, image tag and published port) driven like a user would."""

    def __init__(self, tmp: Path, tag: str, file: str = "docker-compose.yml", name: str = "", **env: str) -> None:
        self.file = REPO / file
        self.data = tmp / "data"
        self.data.mkdir(exist_ok=True)
        self.port = free_port()
        self.project = f"dotcos-test-{os.getpid()}-{name or tag}"
        extra_ca = "".join(p.read_text() for p in sorted(PROXY_CA_DIR.glob("*.crt")))
        self.env = {
            **os.environ,
            "DOCKER_BUILDKIT": "0",
            "COMPOSE_DOCKER_CLI_BUILD": "0",
            "DOTCOS_TAG": tag,
            "DOTCOS_PUBLISH_PORT": str(self.port),
            "DOTCOS_DATA": str(self.data),
            "EXTRA_CA_CERTS": extra_ca,
            **env,
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.image = f"dotcos:{tag}"

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["docker", "compose", "-p", self.project, "-f", str(self.file), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, f"compose {' '.join(args)}: {result.stderr[-2000:]}"
        return result

    def builder(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.compose("run", "--rm", "-T", "builder", *args, check=check)

    def container(self, service: str) -> str:
        """The id of a service's container (stopped ones too)."""
        return self.compose("ps", "-a", "-q", service).stdout.strip()

    def health(self) -> str:
        cid = self.container("service")
        out = subprocess.run(
            ["docker", "inspect", "--format", "{{.State.Health.Status}} {{.RestartCount}}", cid],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while (state := self.health()).split()[0] != "healthy":
            assert time.monotonic() < deadline, f"service not healthy after {timeout}s: {state}\n{self.logs()}"
            time.sleep(1)

    def logs(self, service: str = "service") -> str:
        return self.compose("logs", "--no-color", service, check=False).stdout[-4000:]

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", check=False)


def published(result: subprocess.CompletedProcess[str]) -> str:
    """The version a `dotcos-build build` printed as published."""
    match = re.search(r"published \S+ version (\S+):", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    return match.group(1)


def wait_serving(client: httpx.Client, name: str, version: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        reply = client.get(f"/v1/collections/{name}")
        if reply.status_code == 200 and reply.json()["version"] == version:
            return reply.json()
        assert time.monotonic() < deadline, f"{name} not serving {version}: {reply.text[:300]}"
        time.sleep(0.25)


def search(client: httpx.Client, name: str, vector: list[float], metric: str, k: int = 3) -> list[dict]:
    reply = client.post(f"/v1/collections/{name}/search", json={"vector": vector, "k": k, "metric": metric})
    assert reply.status_code == 200, reply.text
    assert reply.json()["metric"] == metric
    return reply.json()["results"]


def write_data(data: Path) -> np.ndarray:
    """The same 600 documents as .npy with ids, one parquet file, and three parquet shards."""
    docs = np.random.default_rng(5).standard_normal((600, DIM)).astype(np.float32)
    ids = [f"item-{i}" for i in range(len(docs))]
    np.save(data / "items.npy", docs)
    (data / "items.ids").write_text("\n".join(ids) + "\n")
    table = pa.table({"id": ids, "embedding": [row.tolist() for row in docs]})
    pq.write_table(table, data / "items.parquet")
    (data / "parts").mkdir(exist_ok=True)
    for i, start in enumerate(range(0, len(docs), 200)):
        pq.write_table(table.slice(start, 200), data / "parts" / f"part-{i:03d}.parquet")
    return docs
