"""Untrusted artifacts and concurrent admin work never take the serving version down."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from index_builder.artifact.layout import list_versions, read_current, write_atomic
from tests.conftest import Corpus, build
from tests.service.test_hot_swap import Hammer, refused_count, wait_for


def test_unknown_schema_and_bad_current_are_refused(corpus: Corpus, tmp_path: Path, serve) -> None:
    assert build(tmp_path, corpus, "c") == 0
    good = read_current(tmp_path, "c")
    server = serve(tmp_path)
    assert build(tmp_path, corpus, "c", "--version", "future") == 0
    manifest_path = tmp_path / "c" / "versions" / "future" / "manifest.json"
    manifest_path.chmod(0o644)
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with server.client() as client:
        wait_for(lambda: refused_count(client) >= 1)
        write_atomic(tmp_path / "c" / "CURRENT", "../../etc")
        wait_for(lambda: refused_count(client) >= 2)
        assert client.get("/v1/collections/c").json()["version"] == good
        reply = client.post("/v1/collections/c/search", json={"vector": corpus.queries[0].tolist()})
        assert reply.status_code == 200 and reply.json()["version"] == good
    assert "schema_version 99" in server.log() and "is corrupt" in server.log()


def test_gc_and_activate_while_serving_fail_no_request(corpus: Corpus, tmp_path: Path, serve) -> None:
    for _ in range(3):
        assert build(tmp_path, corpus, "c") == 0
    first, _, third = list_versions(tmp_path, "c")
    server = serve(tmp_path)
    with Hammer(server.url, corpus.queries[1].tolist()) as hammer:
        wait_for(lambda: all(len(v) > 3 for v in hammer.versions))
        cli = [sys.executable, "-m", "index_builder"]
        assert (
            subprocess.run([*cli, "activate", "--root", str(tmp_path), "--name", "c", "--version", first]).returncode
            == 0
        )
        wait_for(lambda: hammer.seen() == {first})
        killed = subprocess.run(
            [*cli, "gc", "--root", str(tmp_path), "--name", "c", "--keep", "1"],
            env={"DOTCOS_CRASH_AT": "gc.before_delete", "PATH": ""},
        )
        assert killed.returncode == -signal.SIGKILL
        assert subprocess.run([*cli, "gc", "--root", str(tmp_path), "--name", "c", "--keep", "1"]).returncode == 0
        time.sleep(0.5)
    assert hammer.failures == []
    assert hammer.seen() == {first}
    assert set(list_versions(tmp_path, "c")) == {first, third}
