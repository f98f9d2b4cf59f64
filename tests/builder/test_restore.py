"""The lifecycle commands as a user runs them on a parquet export: what each build, activate,
restore, snapshot, reapply and gc prints and does to the pending changes; snapshots that are
truncated or altered are refused whole; a restore or a snapshot killed at any step leaves the
collection as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index_builder.artifact.journal import DELETE, Change, Journal
from index_builder.artifact.layout import list_versions, read_current
from index_builder.cli import main
from index_builder.pending import standing
from tests.conftest import in_process

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
N, DIM = 400, 8


def export(path: Path, n: int = N, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    table = pa.table(
        {
            "id": [f"item-{i}" for i in range(n)],
            "vector": list(vectors),
            "brand": [f"b{i % 5}" for i in range(n)],
            "price": [float(i % 50) for i in range(n)],
        }
    )
    pq.write_table(table, path)
    return path


def cli(capsys: pytest.CaptureFixture[str], root: Path, *argv: str) -> tuple[int, str]:
    code = main([argv[0], "--name", "items", "--root", str(root), *argv[1:]])
    return code, capsys.readouterr().out


def build_export(capsys: pytest.CaptureFixture[str], root: Path, data: Path, *flags: str) -> tuple[int, str]:
    return cli(capsys, root, "build", "--input", str(data), "--attributes", "brand,price", "--quiet", *flags)


@pytest.fixture
def served(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[Path, Path, httpx.Client]]:
    root, data = tmp_path / "root", export(tmp_path / "items.parquet")
    assert build_export(capsys, root, data)[0] == 0
    with in_process(root, DOTCOS_ADMIN_TOKEN=TOKEN, DOTCOS_OVERLAY_REFRESH_S="0.02") as client:
        yield root, data, client


def write(client: httpx.Client, op: str, body: dict) -> int:
    reply = client.post(f"/v1/collections/items/{op}", json=body, headers=AUTH)
    assert reply.status_code == 200, reply.text
    return int(reply.json()["position"])


def standing_ids(client: httpx.Client, root: Path, ids: list[str]) -> set[str]:
    """Which of `ids` the served collection holds once it has caught up with the root (read back
    through /score)."""
    end, active = standing(root, "items").end, read_current(root, "items")
    for _ in range(500):
        client.post("/v1/admin/reload", headers=AUTH)
        info = client.get("/v1/collections/items").json()
        if info["version"] == active and info["changes"]["journal_position"] >= end:
            break
    else:
        raise AssertionError(f"the service did not catch up with {active} at position {end}")
    vector = [1.0] * DIM
    return {
        i
        for i in ids
        if client.post("/v1/collections/items/score", json={"vector": vector, "ids": [i]}).status_code == 200
    }


def test_a_rebuild_from_a_stale_export_keeps_the_writes_and_says_so(served, capsys) -> None:
    root, data, client = served
    first = write(client, "upsert", {"ids": ["new-1"], "vectors": [[0.5] * DIM]})
    last = write(client, "delete", {"ids": ["item-5"]})
    code, out = build_export(capsys, root, data)
    assert code == 0 and f"2 pending changes kept (positions {first}..{last})" in out
    assert standing_ids(client, root, ["new-1", "item-5"]) == {"new-1"}
    info = client.get("/v1/collections/items").json()
    assert info["count"] == N and info["built_count"] == N
    assert info["changes"]["at_build"]["kept"] == {"first": first, "last": last, "count": 2, "reason": None}

    code, out = build_export(capsys, root, data, "--changes-included-through", str(first))
    assert code == 0 and f"1 pending change folded (positions {first}..{first})" in out
    assert f"1 pending change kept (positions {last}..{last})" in out
    assert standing_ids(client, root, ["new-1", "item-5"]) == set()

    code, out = build_export(capsys, root, data, "--discard-changes")
    assert code == 0 and f"1 pending change discarded (positions {last}..{last})" in out
    assert standing_ids(client, root, ["new-1", "item-5"]) == {"item-5"}
    code, out = cli(capsys, root, "inspect")
    assert f"set aside: 1 pending change (positions {last}..{last}) by discarded" in out
    code, out = cli(capsys, root, "reapply")
    assert code == 0 and f"re-applied 1 set-aside change(s) (positions {last}..{last})" in out
    assert standing_ids(client, root, ["item-5"]) == set()


def test_changes_through_a_position_past_the_journal_exit_2(served, capsys) -> None:
    root, data, client = served
    write(client, "delete", {"ids": ["item-1"]})
    code = main(
        ["build", "--input", str(data), "--name", "items", "--root", str(root), "--changes-included-through", "99"]
    )
    assert code == 2 and "position 99 is not in the journal" in capsys.readouterr().err
    code = main(["build", "--from-current", "--discard-changes", "--name", "items", "--root", str(root)])
    assert code == 2 and "leave out --discard-changes" in capsys.readouterr().err


def test_restore_to_a_position_sets_later_changes_aside_and_activate_keeps_them(served, capsys) -> None:
    root, data, client = served
    good = write(client, "upsert", {"ids": ["new-1"], "vectors": [[0.5] * DIM]})
    bad = [write(client, "delete", {"ids": [f"item-{i}"]}) for i in range(3)]
    before = read_current(root, "items")
    code, out = cli(capsys, root, "restore", "--position", str(good))
    assert code == 0 and "1 pending change carried" in out
    assert f"3 pending changes set aside (positions {bad[0]}..{bad[-1]})" in out
    assert standing_ids(client, root, ["new-1", "item-0", "item-1", "item-2"]) == {
        "new-1",
        "item-0",
        "item-1",
        "item-2",
    }
    code, out = cli(capsys, root, "inspect")
    assert f"set aside: 3 pending changes (positions {bad[0]}..{bad[-1]}) by restore to position {good}" in out
    restored = read_current(root, "items")
    code, out = cli(capsys, root, "activate", "--version", before)
    assert code == 0
    assert (
        f"items: active version {restored} -> {before}; 1 pending change (positions {good}..{good}) stay on top" in out
    )
    assert standing_ids(client, root, ["new-1", "item-0"]) == {"new-1", "item-0"}
    code, out = cli(capsys, root, "reapply")
    assert code == 0 and standing_ids(client, root, ["item-0", "item-1", "item-2"]) == set()


def test_a_snapshot_restores_into_another_root_with_identical_answers_and_pending_changes(
    served, tmp_path: Path, capsys
) -> None:
    root, _, client = served
    write(client, "upsert", {"ids": ["new-1", "item-3"], "vectors": [[0.5] * DIM, [-1.0] * DIM]})
    write(client, "delete", {"ids": ["item-4"]})
    write(client, "attributes", {"ids": ["item-7"], "set": {"brand": "zz"}, "unset": ["price"]})
    snapshot = tmp_path / "items.snap"
    code, out = cli(capsys, root, "snapshot", "--out", str(snapshot))
    assert code == 0 and "3 pending changes" in out
    query = {"vector": [0.3, -0.2, 0.1, 0.9, -0.5, 0.4, 0.0, 0.2], "k": N, "with_attributes": True}
    bodies = [
        {**query, "metric": metric, "params": {"exact": exact}}
        for metric in ("dot", "cosine")
        for exact in (True, False)
    ]
    answers = [client.post("/v1/collections/items/search", json=body).json()["results"] for body in bodies]
    write(client, "delete", {"ids": ["item-8"]})
    other = tmp_path / "other"
    code, out = cli(capsys, other, "restore", "--snapshot", str(snapshot))
    assert code == 0 and "3 pending changes carried" in out
    with in_process(other) as restored:
        for body, expected in zip(bodies, answers, strict=True):
            assert restored.post("/v1/collections/items/search", json=body).json()["results"] == expected
        info = restored.get("/v1/collections/items").json()["changes"]
        assert (info["pending_deletes"], info["pending_upserts"], info["pending_attribute_changes"]) == (1, 2, 1)
    code, out = cli(capsys, root, "restore", "--snapshot", str(snapshot))
    assert code == 0 and "4 pending changes set aside (positions" in out
    assert standing_ids(client, root, ["item-8", "item-4", "new-1"]) == {"item-8", "new-1"}


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty"])
def test_a_damaged_snapshot_is_refused_with_exit_2_and_publishes_nothing(
    served, tmp_path: Path, capsys, damage: str
) -> None:
    root, _, client = served
    write(client, "delete", {"ids": ["item-4"]})
    snapshot = tmp_path / "items.snap"
    assert cli(capsys, root, "snapshot", "--out", str(snapshot))[0] == 0
    data = bytearray(snapshot.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":
        data[len(data) // 3] ^= 0x01
    else:
        data = bytearray()
    snapshot.write_bytes(bytes(data))
    versions, end = list_versions(root, "items"), standing(root, "items").end
    code = main(["restore", "--name", "items", "--root", str(root), "--snapshot", str(snapshot)])
    err = capsys.readouterr().err
    assert code == 2 and "is truncated or corrupt" in err and len(err.splitlines()) == 1, err
    assert list_versions(root, "items") == versions and standing(root, "items").end == end
    assert not any(p.name.startswith(".staging-") for p in (root / "items").iterdir())


def test_gc_says_what_it_removed_and_keeps_what_a_set_aside_span_needs(served, capsys) -> None:
    root, data, client = served
    journal = Journal(root, "items", segment_bytes=300)
    with journal.locked():
        deleted = [journal.append(Change(0, DELETE, (f"item-{i}",))).position for i in range(20)]
    assert len(journal.segments()) > 3
    assert build_export(capsys, root, data, "--discard-changes")[0] == 0
    assert build_export(capsys, root, data)[0] == 0
    code, out = cli(capsys, root, "gc", "--keep", "1")
    assert code == 0 and "removed 2 version(s)" in out and "kept 1:" in out
    assert (
        "removed 0 journal segment(s)" in out
        and f"(needed by the set-aside changes {deleted[0]}..{deleted[-1]})" in out
    )
    assert cli(capsys, root, "reapply")[0] == 0
    assert cli(capsys, root, "build", "--from-current", "--quiet")[0] == 0
    fold = standing(root, "items").active.journal_position
    code, out = cli(capsys, root, "gc", "--keep", "1")
    assert code == 0 and "removed 1 version(s)" in out and "removed 0 journal segment(s)" not in out
    remaining = Journal(root, "items").read_new()
    assert remaining[0].position <= fold + 1 and all(
        int(p.stem) <= fold + 1 for p in [Journal(root, "items").segments()[0]]
    )
    assert standing_ids(client, root, [f"item-{i}" for i in range(21)]) == {"item-20"}
    code, out = cli(capsys, root, "restore", "--position", str(standing(root, "items").end))
    assert code == 0


LIFECYCLE_CRASH_POINTS = [
    ("restore", "restore.unpacked"),
    ("restore", "publish.before_rename"),
    ("restore", "restore.before_current"),
    ("restore", "publish.before_current"),
    ("snapshot", "snapshot.mid_write"),
    ("snapshot", "snapshot.before_rename"),
]


def _run(root: Path, point: str, *argv: str) -> int:
    args = [sys.executable, "-m", "index_builder", argv[0], "--name", "items", "--root", str(root), *argv[1:]]
    env = {**os.environ, "DOTCOS_CRASH_AT": point}
    return subprocess.run(args, env=env, capture_output=True, check=False, timeout=120).returncode


@pytest.mark.parametrize(("command", "point"), LIFECYCLE_CRASH_POINTS)
def test_a_restore_or_snapshot_killed_at_any_step_leaves_the_collection_as_it_was(
    served, tmp_path: Path, capsys, command: str, point: str
) -> None:
    root, _, client = served
    write(client, "upsert", {"ids": ["new-1"], "vectors": [[0.5] * DIM]})
    snapshot = tmp_path / "items.snap"
    assert cli(capsys, root, "snapshot", "--out", str(snapshot))[0] == 0
    write(client, "delete", {"ids": ["item-9"]})
    current, pending = read_current(root, "items"), standing(root, "items").pending()
    probe = ["new-1", "item-9"]
    assert standing_ids(client, root, probe) == {"new-1"}
    out = tmp_path / "again.snap"
    argv = ["restore", "--snapshot", str(snapshot)] if command == "restore" else ["snapshot", "--out", str(out)]
    assert _run(root, point, *argv) == -9
    assert read_current(root, "items") == current
    assert [c.position for c in standing(root, "items").pending()] == [c.position for c in pending]
    assert standing_ids(client, root, probe) == {"new-1"}
    assert not out.exists()
    assert _run(root, "", *argv) == 0
    assert standing_ids(client, root, probe) == ({"new-1", "item-9"} if command == "restore" else {"new-1"})


def test_a_restore_killed_right_after_it_activates_is_completed_by_the_next_writer(served, capsys) -> None:
    root, _, client = served
    keep = write(client, "upsert", {"ids": ["new-1"], "vectors": [[0.5] * DIM]})
    write(client, "delete", {"ids": ["item-9"]})
    assert _run(root, "publish.after_current", "restore", "--position", str(keep)) == -9
    assert standing_ids(client, root, ["new-1", "item-9"]) == {"new-1", "item-9"}
    write(client, "delete", {"ids": ["item-10"]})
    ops = [c.op for c in Journal(root, "items").read_new()]
    assert ops[-5:] == ["upsert", "set_aside", "set_aside", "activate", "delete"]
    assert standing_ids(client, root, ["new-1", "item-9", "item-10"]) == {"new-1", "item-9"}


def test_an_export_of_another_dimension_does_not_silently_drop_pending_upserts(served, tmp_path: Path, capsys) -> None:
    root, _, client = served
    write(client, "upsert", {"ids": ["new-1"], "vectors": [[0.5] * DIM]})
    wider = tmp_path / "wider.npy"
    np.save(wider, np.random.default_rng(3).standard_normal((50, DIM + 4)).astype(np.float32))
    code = main(["build", "--input", str(wider), "--name", "items", "--root", str(root), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "upserts pending on the active version have dimension 8" in err
    code = main(
        ["build", "--input", str(wider), "--name", "items", "--root", str(root), "--quiet", "--discard-changes"]
    )
    assert code == 0
