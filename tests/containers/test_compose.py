"""`docker compose up` for real: the image is built, the stack runs, the README's runbook works.

Needs a running Docker engine with the compose v2 plugin (`make test-containers` installs and
starts one on Debian as root, and stops it afterwards). Talks to the containers only through the
port the compose file publishes on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, free_port

pytestmark = pytest.mark.containers

DIM = 16
PROXY_CA_DIR = Path("/usr/local/share/ca-certificates")


def engine_missing() -> str | None:
    """Why no engine can be used, or None."""
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    except FileNotFoundError:
        return "no docker CLI on PATH"
    if info.returncode:
        return "the Docker engine does not answer (docker info failed)"
    return "the compose v2 plugin is missing" if plugin.returncode else None


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    reason = engine_missing()
    if reason and os.environ.get("DOTCOS_REQUIRE_CONTAINERS"):
        pytest.fail(f"container test required but {reason}")
    if reason:
        pytest.skip(f"container test skipped: {reason} (make test-containers sets one up as root on Debian)")


class Stack:
    """One compose project (its own name, image tag and published port) driven like a user would."""

    def __init__(self, tmp: Path, tag: str, **env: str) -> None:
        self.data = tmp / "data"
        self.data.mkdir(exist_ok=True)
        self.port = free_port()
        self.project = f"dotcos-test-{os.getpid()}-{tag}"
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
            ["docker", "compose", "-p", self.project, "-f", str(REPO / "docker-compose.yml"), *args],
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

    def health(self) -> str:
        cid = self.compose("ps", "-q", "service").stdout.strip()
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

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "service", check=False).stdout[-4000:]

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


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("plain"), "test")
    try:
        stack.compose("build", timeout=900)
        stack.compose("up", "-d", timeout=600)
        stack.wait_healthy()
        yield stack
    finally:
        stack.down()


def test_the_stack_comes_up_healthy_and_answers_dot_and_cosine(plain: Stack) -> None:
    with httpx.Client(base_url=plain.url, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        info = client.get("/v1/collections/demo").json()
        assert set(info["metrics"]) >= {"dot", "cosine"}
        vector = [0.1] * info["dim"]
        dot, cosine = search(client, "demo", vector, "dot"), search(client, "demo", vector, "cosine")
        assert dot != cosine and all(-1.0 - 1e-5 <= h["score"] <= 1.0 + 1e-5 for h in cosine)
        wrong = client.post("/v1/collections/demo/search", json={"vector": [0.1, 0.2]})
        assert wrong.status_code == 400 and "dimension" in wrong.json()["error"]["message"]


def test_the_readme_rebuild_runbook_is_followed_by_the_running_service(plain: Stack) -> None:
    docs = write_data(plain.data)
    with httpx.Client(base_url=plain.url, timeout=30) as client:
        first = published(
            plain.builder(
                "build",
                "--input",
                "/data/items.npy",
                "--ids",
                "/data/items.ids",
                "--name",
                "items",
                "--metrics",
                "dot,cosine",
            )
        )
        wait_serving(client, "items", first)
        assert search(client, "items", docs[7].tolist(), "cosine", k=1)[0]["id"] == "item-7"
        second = published(
            plain.builder(
                "build",
                "--input",
                "/data/items.parquet",
                "--vector-column",
                "embedding",
                "--name",
                "items",
                "--index",
                "hnsw",
            )
        )
        assert wait_serving(client, "items", second)["count"] == len(docs)
        third = published(
            plain.builder(
                "build", "--input", "/data/parts/part-*.parquet", "--vector-column", "embedding", "--name", "items"
            )
        )
        wait_serving(client, "items", third)
        assert search(client, "items", docs[599].tolist(), "cosine", k=1)[0]["id"] == "item-599"
        sharded = published(
            plain.builder(
                "build", "--input", "/data/items.npy", "--ids", "/data/items.ids", "--name", "sharded", "--shards", "2"
            )
        )
        assert wait_serving(client, "sharded", sharded)["shards"] == 2
        listing = plain.builder("list").stdout
        assert all(v in listing for v in (first, second, third, sharded))
        plain.builder("activate", "--name", "items", "--version", first)
        wait_serving(client, "items", first)
        plain.builder("gc", "--name", "items", "--keep", "1")
        listing = plain.builder("list").stdout
        assert first in listing and third in listing and second not in listing
    assert plain.health() == "healthy 0"


def test_a_root_owned_bind_mount_is_refused_with_what_to_do(plain: Stack, tmp_path: Path) -> None:
    host_dir = tmp_path / "indexes"
    host_dir.mkdir(mode=0o755)
    run = ["docker", "run", "--rm", "-v", f"{host_dir}:/indexes", "--entrypoint", "dotcos-build", plain.image]
    refused = subprocess.run([*run, "demo"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr
    assert "index root /indexes is not writable by uid 10001 (gid 10001)" in refused.stderr
    assert refused.stderr.count("\n") == 1
    os.chown(host_dir, 10001, 10001)
    built = subprocess.run([*run, "demo"], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr


def test_the_image_carries_no_build_time_ca_and_no_compiler(plain: Stack) -> None:
    probe = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            plain.image,
            "-c",
            "command -v gcc; ls /usr/local/share/ca-certificates; id -u",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.split() == ["10001"], probe.stdout
    assert (
        "warning"
        not in subprocess.run(
            ["docker", "history", "--no-trunc", plain.image], capture_output=True, text=True
        ).stdout.lower()
    )


@pytest.fixture(scope="module")
def ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("ray"), "test-ray", DOTCOS_EXTRAS="ray", DOTCOS_RAY_ADDRESS="local")
    try:
        stack.compose("build", timeout=1200)
        stack.compose("up", "-d", timeout=600)
        stack.wait_healthy(timeout=300)
        yield stack
    finally:
        stack.down()


def test_ray_mode_under_a_read_only_root_serves_every_collection(ray: Stack) -> None:
    docs = write_data(ray.data)
    versions = {
        "items": published(
            ray.builder("build", "--input", "/data/items.npy", "--ids", "/data/items.ids", "--name", "items")
        ),
        "rayitems": published(
            ray.builder(
                "build",
                "--input",
                "/data/items.parquet",
                "--vector-column",
                "embedding",
                "--name",
                "rayitems",
                "--shards",
                "2",
            )
        ),
    }
    with httpx.Client(base_url=ray.url, timeout=60) as client:
        for name, version in versions.items():
            wait_serving(client, name, version, timeout=240)
            assert search(client, name, docs[3].tolist(), "cosine", k=1)[0]["id"] == "item-3"
        assert search(client, "demo", [0.1] * client.get("/v1/collections/demo").json()["dim"], "dot")
        ready = client.get("/readyz")
        assert ready.status_code == 200 and set(ready.json()["collections"]) == {"demo", "items", "rayitems"}
    logs = ray.logs()
    assert "Read-only file system" not in logs and "instead of /dev/shm" not in logs
    assert ray.health() == "healthy 0"
