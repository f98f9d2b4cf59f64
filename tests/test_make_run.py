"""`make run` from a fresh copy of the tree: creates .venv, builds the demo, serves, answers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx

from tests.conftest import REPO, free_port, wait_ready


def fresh_copy(target: Path) -> None:
    """The files a clone would have: tracked plus untracked-but-not-ignored ones."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def test_make_run_from_a_fresh_tree(tmp_path: Path) -> None:
    tree = tmp_path / "clone"
    fresh_copy(tree)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "DOTCOS_"))}
    env.update(DOTCOS_PORT=str(port), DOTCOS_RELOAD_INTERVAL="0")
    log = tmp_path / "make-run.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            ["make", "run"], cwd=tree, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, timeout=480)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            info = client.get("/v1/collections/demo").json()
            vector = [0.1] * info["dim"]
            body = client.post("/v1/collections/demo/search", json={"vector": vector, "k": 3}).json()
        assert [len(body["results"]), body["metric"]] == [3, "dot"]
        assert (tree / ".venv" / "bin" / "dotcos-serve").exists()
        assert (tree / "indexes" / "demo" / "CURRENT").exists()
        assert "curl -s http://127.0.0.1:" in log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
