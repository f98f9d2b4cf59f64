"""Publishing survives kills at any moment; list, inspect, verify, activate and gc behave."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from index_builder.artifact.layout import STAGING_PREFIX, list_versions, read_current
from index_builder.cli import main
from tests.builder.helpers import active_manifest
from tests.conftest import Corpus, build

CRASH_POINTS = ["publish.before_fsync", "publish.before_rename", "publish.before_current", "publish.after_current"]


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "index_builder", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def build_args(root: Path, corpus: Corpus, *extra: str) -> list[str]:
    return [
        "build",
        "--input",
        str(corpus.docs_path),
        "--ids",
        str(corpus.ids_path),
        "--name",
        "c",
        "--root",
        str(root),
        "--quiet",
        *extra,
    ]


def assert_intact(root: Path, version: str) -> None:
    """CURRENT still names `version`, it verifies, and no partial version is visible."""
    assert read_current(root, "c") == version
    assert main(["verify", "--root", str(root), "--name", "c"]) == 0
    for path in (root / "c" / "versions").iterdir():
        assert (path / "manifest.json").is_file(), f"partial version visible: {path}"


def test_sigkill_during_a_build_leaves_the_served_version_intact(corpus: Corpus, tmp_path: Path) -> None:
    assert build(tmp_path, corpus, "c") == 0
    old = read_current(tmp_path, "c")
    big = np.tile(corpus.docs, (40, 1))
    np.save(tmp_path / "big.npy", big)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "index_builder",
            "build",
            "--input",
            str(tmp_path / "big.npy"),
            "--name",
            "c",
            "--root",
            str(tmp_path),
            "--index",
            "hnsw",
            "--quiet",
        ]
    )
    deadline = time.monotonic() + 120
    while not any(
        p.name.startswith(STAGING_PREFIX) and (p / "vectors.npy").exists() for p in (tmp_path / "c").iterdir()
    ):
        assert time.monotonic() < deadline and process.poll() is None, "build never started staging"
        time.sleep(0.01)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert_intact(tmp_path, old)
    assert build(tmp_path, corpus, "c") == 0
    assert read_current(tmp_path, "c") != old
    assert main(["gc", "--root", str(tmp_path), "--name", "c", "--keep", "5"]) == 0
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(STAGING_PREFIX)]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_kill_at_every_publish_step_keeps_a_valid_served_version(point: str, corpus: Corpus, tmp_path: Path) -> None:
    assert build(tmp_path, corpus, "c") == 0
    old = read_current(tmp_path, "c")
    result = cli(*build_args(tmp_path, corpus), env={"DOTCOS_CRASH_AT": point})
    assert result.returncode == -signal.SIGKILL, result.stderr
    current = read_current(tmp_path, "c")
    assert current == old if point != "publish.after_current" else current != old
    assert_intact(tmp_path, current)
    assert cli(*build_args(tmp_path, corpus)).returncode == 0


@pytest.mark.parametrize("point", ["gc.before_delete", "activate.before_current"])
def test_a_kill_during_gc_or_activate_keeps_a_valid_served_version(point: str, corpus: Corpus, tmp_path: Path) -> None:
    for _ in range(3):
        assert build(tmp_path, corpus, "c") == 0
    versions = list_versions(tmp_path, "c")
    command = ["gc", "--keep", "1"] if point.startswith("gc") else ["activate", "--version", versions[0]]
    result = cli(*command, "--root", str(tmp_path), "--name", "c", env={"DOTCOS_CRASH_AT": point})
    assert result.returncode == -signal.SIGKILL
    assert_intact(tmp_path, versions[-1])
    assert main([*command, "--root", str(tmp_path), "--name", "c"]) == 0


def test_other_failures_exit_1_and_change_nothing(corpus: Corpus, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    assert build(blocker, corpus, "c") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_list_inspect_activate_and_gc(corpus: Corpus, tmp_path: Path, capsys) -> None:
    root = str(tmp_path)
    for _ in range(3):
        assert build(tmp_path, corpus, "c") == 0
    first, second, third = list_versions(tmp_path, "c")
    capsys.readouterr()
    assert main(["list", "--root", root]) == 0
    listing = capsys.readouterr().out
    assert f"* {third}" in listing and f"  {first}" in listing
    assert main(["inspect", "--root", root, "--name", "c"]) == 0
    text = capsys.readouterr().out
    assert third in text and "recall@10" in text and "sha256" in text
    assert main(["inspect", "--root", root, "--name", "c", "--json", "--version", first]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == first
    assert main(["activate", "--root", root, "--name", "c", "--version", first]) == 0
    assert read_current(tmp_path, "c") == first
    assert main(["gc", "--root", root, "--name", "c", "--keep", "1"]) == 0
    assert list_versions(tmp_path, "c") == [first, third]
    assert main(["activate", "--root", root, "--name", "c", "--version", "nope"]) == 2
    assert "version 'nope' of 'c' not found" in capsys.readouterr().err
    assert main(["inspect", "--root", root, "--name", "missing"]) == 2


@pytest.mark.parametrize("victim", ["dot.faiss", "vectors.npy", "ids.txt"])
def test_verify_fails_naming_a_corrupted_file(victim: str, corpus: Corpus, tmp_path: Path, capsys) -> None:
    assert build(tmp_path, corpus, "c") == 0
    path, _ = active_manifest(tmp_path, "c")
    target = path / victim
    os.chmod(target, 0o644)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", "--root", str(tmp_path), "--name", "c"]) == 1
    assert victim in capsys.readouterr().err


@pytest.mark.parametrize("module, extra", [("parts", ()), ("parts", ("--shards", "2"))])
def test_every_build_verifies_what_it_wrote_before_publishing(
    module: str, extra: tuple[str, ...], corpus: Corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A manifest that promises other counts than the files hold is caught before anything is published."""
    import importlib

    target = importlib.import_module(f"index_builder.{module}")
    honest = target.new_manifest

    def lying(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        manifest = honest(*args, **kwargs)
        dot = manifest.metrics["dot"]
        wrong = dot.index.model_copy(update={"count": dot.index.count + 1})
        metrics = {**manifest.metrics, "dot": dot.model_copy(update={"index": wrong})}
        shards = [
            s.model_copy(update={"index_counts": {**s.index_counts, "dot": s.index_counts["dot"] + 1}})
            for s in manifest.shards
        ]
        return manifest.model_copy(update={"metrics": metrics, "shards": shards})

    monkeypatch.setattr(target, "new_manifest", lying)
    assert build(tmp_path, corpus, "c", *extra) == 1
    assert "dot" in capsys.readouterr().err
    assert list_versions(tmp_path, "c") == [] and not (tmp_path / "c" / "CURRENT").exists()
