"""The change journal: records round-trip, a write cut at any byte leaves the whole record or
none, a crashed writer's torn tail is cut off by the next lock, segments roll and compact."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from index_builder.artifact.journal import DELETE, UPSERT, Change, Journal, Pending, decode, segment_name

CRASH_POINTS = ["journal.before_write", "journal.mid_write", "journal.before_fsync", "journal.after_fsync"]


def _write_two(root: Path, segment_bytes: int = 64 << 20) -> Journal:
    journal = Journal(root, "items", segment_bytes)
    with journal.locked():
        journal.append(
            Change(0, UPSERT, ("a", "b"), np.arange(8, dtype=np.float32).reshape(2, 4), ({"brand": "x"}, None))
        )
        journal.append(Change(0, DELETE, ("a",)))
    return journal


def test_records_round_trip_and_net_to_the_last_change(tmp_path: Path) -> None:
    _write_two(tmp_path)
    changes = Journal(tmp_path, "items").read_new()
    assert [(c.position, c.op, c.ids) for c in changes] == [(1, UPSERT, ("a", "b")), (2, DELETE, ("a",))]
    assert changes[0].attributes == ({"brand": "x"}, None)
    np.testing.assert_array_equal(changes[0].vectors, np.arange(8, dtype=np.float32).reshape(2, 4))
    pending = Pending.of(changes)
    assert pending.deletes == {"a"} and list(pending.upserts) == ["b"] and pending.position == 2


def test_a_write_cut_at_any_byte_leaves_the_whole_record_or_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_two(tmp_path / "full")
    (segment,) = Journal(tmp_path / "full", "items").segments()
    data = segment.read_bytes()
    first_end = next(i for i in range(len(data) + 1) if len(positions_in(data[:i])) == 1)
    for cut in range(first_end, len(data)):
        root = tmp_path / f"cut{cut}"
        path = root / "items" / "journal" / segment.name
        path.parent.mkdir(parents=True)
        path.write_bytes(data[:cut])
        journal = Journal(root, "items")
        assert [c.position for c in journal.read_new()] == [1]
        with caplog.at_level(logging.WARNING), journal.locked():
            journal.append(Change(0, DELETE, ("b",)))
        if cut > first_end:
            assert "truncated" in caplog.text
        caplog.clear()
        assert [(c.position, c.ids) for c in Journal(root, "items").read_new()] == [(1, ("a", "b")), (2, ("b",))]


def positions_in(data: bytes) -> list[int]:
    out, offset = [], 0
    while (found := decode(data, offset)) is not None:
        change, offset = found
        out.append(change.position)
    return out


def test_a_flipped_byte_is_not_read_as_a_record(tmp_path: Path) -> None:
    journal = _write_two(tmp_path)
    (segment,) = journal.segments()
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert [c.position for c in Journal(tmp_path, "items").read_new()] == [1]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_writer_killed_at_any_step_leaves_whole_records(tmp_path: Path, point: str) -> None:
    _write_two(tmp_path)
    script = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from index_builder.artifact.faults import arm\n"
        "from index_builder.artifact.journal import Change, Journal, UPSERT\n"
        "arm(sys.argv[2])\n"
        "j = Journal(Path(sys.argv[1]), 'items')\n"
        "with j.locked():\n"
        "    j.append(Change(0, UPSERT, ('c',), np.ones((1, 4), np.float32)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path), point], check=False)
    assert done.returncode == -9
    journal = Journal(tmp_path, "items")
    seen = [c.position for c in journal.read_new()]
    assert seen in ([1, 2], [1, 2, 3])
    assert seen == ([1, 2, 3] if point in ("journal.before_fsync", "journal.after_fsync") else [1, 2])
    with journal.locked():
        position = journal.append(Change(0, DELETE, ("b",))).position
    assert position == len(seen) + 1
    assert [c.position for c in Journal(tmp_path, "items").read_new()] == [*seen, position]


def test_segments_roll_and_compact_up_to_what_every_version_includes(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "items", segment_bytes=200)
    with journal.locked():
        for i in range(6):
            journal.append(Change(0, UPSERT, (f"d{i}",), np.ones((1, 8), np.float32)))
    names = [p.name for p in journal.segments()]
    assert len(names) > 2 and names[0] == segment_name(1)
    reader = Journal(tmp_path, "items")
    assert [c.position for c in reader.read_new()] == [1, 2, 3, 4, 5, 6]
    with journal.locked():
        removed, remaining = journal.compact(5)
    assert removed and all(int(p.stem) <= 4 for p in removed) and int(remaining[0].stem) <= 5
    assert [c.position for c in Journal(tmp_path, "items").read_new()][-2:] == [5, 6]
    with journal.locked():
        assert journal.append(Change(0, DELETE, ("d0",))).position == 7
    assert [c.position for c in reader.read_new()] == [7]
