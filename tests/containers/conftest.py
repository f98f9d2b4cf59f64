"""The container tests need a Docker engine with the compose v2 plugin: where none can be had they
skip saying why, unless DOTCOS_REQUIRE_CONTAINERS is set (as `make test-containers` sets it)."""

from __future__ import annotations

import os
import subprocess

import pytest


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
