"""`docker compose up` for real: the image is built, the stack runs, the README's runbook works.

Needs a running Docker engine with the compose v2 plugin (`make test-containers` installs and
starts one on Debian as root, and stops it afterwards). Talks to the containers only through the
port the compose file publishes on 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.containers.stack import Stack, published, search, wait_serving, write_data

pytestmark = pytest.mark.containers


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
