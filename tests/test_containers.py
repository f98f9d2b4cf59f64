"""The Dockerfile and compose file say what we intend, and the commands they run work on the host."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from tests.conftest import BIN, REPO, free_port, wait_ready


def interpolated(text: str) -> str:
    """Compose's `${NAME:-default}` with every variable unset, as on a fresh machine."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


COMPOSE = yaml.safe_load(interpolated((REPO / "docker-compose.yml").read_text()))
DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    """Arguments of every Dockerfile instruction `name` (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1].strip() for line in text.splitlines() if line.strip().upper().startswith(name + " ")]


def exec_form(text: str) -> list[str]:
    return json.loads(text) if text.startswith("[") else shlex.split(text)


def test_compose_has_a_one_shot_builder_and_a_service_sharing_the_index_volume() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"builder", "service"}
    assert "indexes" in COMPOSE["volumes"]
    assert "indexes:/indexes" in services["builder"]["volumes"]
    assert "indexes:/indexes" in services["service"]["volumes"], "writable for the query log (querylog/ only)"
    assert services["service"]["read_only"] is True
    assert "./data:/data:ro" in services["builder"]["volumes"]
    assert "build" in services["builder"] and "build" not in services["service"], "the image is built once"
    assert services["service"]["image"] == services["builder"]["image"]
    assert services["builder"]["restart"] == "no"
    assert services["service"]["depends_on"]["builder"]["condition"] == "service_completed_successfully"
    assert services["service"]["ports"] == ["127.0.0.1:8000:8000"]
    assert "/home/dotcos:uid=10001,gid=10001,mode=0700" in services["service"]["tmpfs"], "Ray writes ~/.ray"
    assert services["service"]["shm_size"] == "1gb", "Ray's object store lives in /dev/shm"
    health = services["service"]["healthcheck"]["test"]
    assert health[0] == "CMD" and health[1:] == exec_form(instructions("HEALTHCHECK")[0].split("CMD", 1)[1].strip())
    assert services["service"]["read_only"] is True


def test_dockerfile_is_multi_stage_slim_non_root_with_a_health_check() -> None:
    bases = instructions("FROM")
    assert len(bases) >= 2
    assert all(re.match(r"python:3\.11\.\d+-slim", base) for base in bases)
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")
    assert "--from=wheels" in " ".join(instructions("COPY"))
    assert exec_form(instructions("CMD")[-1]) == ["dotcos-serve"]
    assert "8000" in instructions("EXPOSE")[0]
    assert "service.healthcheck" in instructions("HEALTHCHECK")[0]
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", "indexes", "tests", ".pytest_cache", "**/__pycache__"} <= set(ignored)


def container_env(service: str, root: Path, port: int) -> dict[str, str]:
    """The compose environment of a service, with host paths and a free port substituted."""
    env = {
        **os.environ,
        **{k: str(v) for k, v in COMPOSE["services"][service].get("environment", {}).items() if v not in (None, "")},
    }
    env.update(
        DOTCOS_INDEX_ROOT=str(root),
        DOTCOS_HOST="127.0.0.1",
        DOTCOS_PORT=str(port),
        DOTCOS_RELOAD_INTERVAL="0.2",
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
    )
    env.pop("DOTCOS_ADMIN_TOKEN", None)
    return env


def builder_command(*args: str) -> list[str]:
    spec = COMPOSE["services"]["builder"]
    return [*spec["entrypoint"], *(args or spec["command"])]


def test_the_container_commands_run_on_the_host(tmp_path: Path) -> None:
    root, port = tmp_path / "indexes", free_port()
    env = container_env("builder", root, port)
    first = subprocess.run(builder_command(), env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    version = (root / "demo" / "CURRENT").read_text()
    second = subprocess.run(builder_command(), env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "already present" in second.stdout
    assert (root / "demo" / "CURRENT").read_text() == version
    service_env = container_env("service", root, port)
    health = COMPOSE["services"]["service"]["healthcheck"]["test"][1:]
    assert subprocess.run(health, env=service_env, capture_output=True).returncode == 1
    process = subprocess.Popen(
        COMPOSE["services"]["service"]["command"], env=service_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        assert subprocess.run(health, env=service_env).returncode == 0
        with httpx.Client(base_url=url) as client:
            dim = client.get("/v1/collections/demo").json()["dim"]
            reply = client.post("/v1/collections/demo/search", json={"vector": [0.2] * dim, "k": 4})
            assert reply.status_code == 200 and len(reply.json()["results"]) == 4
            rebuild_while_serving(client, env, tmp_path, dim)
    finally:
        process.terminate()
        process.wait(timeout=10)


def rebuild_while_serving(client: httpx.Client, env: dict[str, str], tmp_path: Path, dim: int) -> None:
    """`docker compose run --rm builder build ...` equivalent; the running service swaps to it."""
    docs = np.random.default_rng(3).standard_normal((500, dim)).astype(np.float32)
    np.save(tmp_path / "items.npy", docs)
    result = subprocess.run(
        builder_command("build", "--input", str(tmp_path / "items.npy"), "--name", "items", "--quiet"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 30
    while client.get("/v1/collections/items").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    hits = client.post(
        "/v1/collections/items/search", json={"vector": docs[7].tolist(), "metric": "cosine", "k": 1}
    ).json()["results"]
    assert hits[0]["id"] == "7" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
