"""The change journal: deletes and upserts accepted between rebuilds, durable before they are
acknowledged, beside the versions (never inside an immutable one).

    ROOT/<collection>/journal/<first position, 16 digits>.log    append-only segments
    ROOT/<collection>/journal/.lock                              one writer at a time (flock)

A record is `MAGIC | position u64 | length u32 | crc32 u32 | payload`, the crc over the position
and the payload; the payload is `header length u32 | JSON header | float32 vectors`. Positions
count records from 1 across segments. A writer appends one record with one write and fsyncs it
before the caller answers; a crash leaves the whole record or a torn tail, which readers stop at
and the next writer (or `repair` at start-up) truncates to the last good record.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index_builder.artifact.faults import crash_point
from index_builder.artifact.layout import collection_dir, fsync_path

log = logging.getLogger(__name__)

JOURNAL_DIR = "journal"
MAGIC = b"DCJ1"
HEAD = struct.Struct("<4sQII")
DELETE, UPSERT = "delete", "upsert"


@dataclass(frozen=True)
class Change:
    """One accepted call: ids deleted, or ids upserted with their vectors and attributes."""

    position: int
    op: str
    ids: tuple[str, ...]
    vectors: np.ndarray | None = None
    attributes: tuple[dict[str, Any] | None, ...] | None = None

    def payload(self) -> bytes:
        header: dict[str, Any] = {"op": self.op, "ids": list(self.ids)}
        if self.vectors is not None:
            header["dim"] = int(self.vectors.shape[1])
        if self.attributes is not None:
            header["attributes"] = list(self.attributes)
        text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
        body = b"" if self.vectors is None else np.ascontiguousarray(self.vectors, "<f4").tobytes()
        return struct.pack("<I", len(text)) + text + body


def encode(change: Change) -> bytes:
    payload = change.payload()
    crc = zlib.crc32(struct.pack("<Q", change.position) + payload)
    return HEAD.pack(MAGIC, change.position, len(payload), crc) + payload


def _decode_payload(position: int, payload: bytes) -> Change:
    (size,) = struct.unpack_from("<I", payload)
    header = json.loads(payload[4 : 4 + size])
    vectors = None
    if "dim" in header:
        flat = np.frombuffer(payload, dtype="<f4", offset=4 + size).astype(np.float32)
        vectors = flat.reshape(len(header["ids"]), header["dim"])
    attributes = tuple(header["attributes"]) if "attributes" in header else None
    return Change(position, header["op"], tuple(header["ids"]), vectors, attributes)


def decode(data: bytes, offset: int) -> tuple[Change, int] | None:
    """The record at `offset` and the offset after it, or None where no whole, intact record starts."""
    if len(data) - offset < HEAD.size:
        return None
    magic, position, length, crc = HEAD.unpack_from(data, offset)
    end = offset + HEAD.size + length
    if magic != MAGIC or end > len(data):
        return None
    payload = data[offset + HEAD.size : end]
    if zlib.crc32(struct.pack("<Q", position) + payload) != crc:
        return None
    try:
        return _decode_payload(position, payload), end
    except (ValueError, KeyError, struct.error):
        return None


def journal_dir(root: Path, collection: str) -> Path:
    return collection_dir(root, collection) / JOURNAL_DIR


def segment_name(first: int) -> str:
    return f"{first:016d}.log"


class Journal:
    """One collection's journal: tailing reads (any process), locked appends, repair, compaction."""

    def __init__(self, root: Path, collection: str, segment_bytes: int = 64 << 20) -> None:
        self.root, self.collection = root, collection
        self.path = journal_dir(root, collection)
        self.segment_bytes = segment_bytes
        self._segment: Path | None = None
        self._offset = 0
        self.position = 0
        """The last position read (or written) by this handle."""

    def segments(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.suffix == ".log" and p.stem.isdigit())

    def read_new(self) -> list[Change]:
        """Every whole record after the last one this handle read, in order (a torn tail waits)."""
        out: list[Change] = []
        segments = self.segments()
        if self._segment is not None and self._segment not in segments:
            self._segment, self._offset = None, 0
        todo = segments if self._segment is None else segments[segments.index(self._segment) :]
        for segment in todo:
            if segment != self._segment:
                self._segment, self._offset = segment, 0
            data = segment.read_bytes()
            while (found := decode(data, self._offset)) is not None:
                change, self._offset = found
                if change.position > self.position:
                    out.append(change)
                    self.position = change.position
            if self._offset < len(data):
                break
        return out

    @contextmanager
    def locked(self) -> Iterator[list[Change]]:
        """The one writer across processes. Yields the records this handle had not read yet; the
        torn tail of a crashed writer, if any, is cut off first."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield self._repair()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _repair(self) -> list[Change]:
        """Read to the end; truncate what follows the last good record (call with the lock held)."""
        changes = self.read_new()
        if self._segment is None:
            return changes
        size = self._segment.stat().st_size
        if size > self._offset:
            log.warning(
                "journal %s: %d bytes after position %d are not a whole record (a write cut short); truncated",
                self._segment,
                size - self._offset,
                self.position,
            )
            with open(self._segment, "r+b") as handle:
                handle.truncate(self._offset)
                os.fsync(handle.fileno())
        return changes

    def append(self, op: str, ids: list[str], vectors: np.ndarray | None, attributes: list[Any] | None) -> int:
        """Write one record durably and return its position (call inside `locked`)."""
        change = Change(self.position + 1, op, tuple(ids), vectors, None if attributes is None else tuple(attributes))
        record = encode(change)
        segment = self._segment
        if segment is None or self._offset + len(record) > self.segment_bytes and self._offset > 0:
            segment = self.path / segment_name(change.position)
        crash_point("journal.before_write")
        fd = os.open(segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            half = len(record) // 2
            os.write(fd, record[:half])
            crash_point("journal.mid_write")
            os.write(fd, record[half:])
            crash_point("journal.before_fsync")
            os.fsync(fd)
        finally:
            os.close(fd)
        if segment != self._segment:
            fsync_path(self.path)
            self._segment, self._offset = segment, 0
        crash_point("journal.after_fsync")
        self._offset += len(record)
        self.position = change.position
        return change.position

    def compact(self, included: int) -> list[Path]:
        """Delete the segments whose every record is at or before `included` (never the newest,
        which carries the position count on)."""
        removed = []
        with self.locked():
            segments = self.segments()
            for segment, following in zip(segments, segments[1:], strict=False):
                if int(following.stem) - 1 <= included:
                    segment.unlink()
                    removed.append(segment)
            if removed:
                fsync_path(self.path)
        return removed


def end_position(root: Path, collection: str) -> int:
    """The position of the journal's last whole record (0 when there is none)."""
    journal = Journal(root, collection)
    journal.read_new()
    return journal.position


@dataclass
class Pending:
    """The net effect of changes applied in order: per id its last upsert (vector, attributes)
    or its deletion. What the service overlays on a version and what a rebuild folds in."""

    upserts: dict[str, tuple[np.ndarray, dict[str, Any] | None]]
    deletes: set[str]
    position: int = 0

    @classmethod
    def of(cls, changes: list[Change]) -> Pending:
        pending = cls({}, set())
        for change in changes:
            pending.apply(change)
        return pending

    def apply(self, change: Change) -> None:
        if change.op == DELETE:
            for doc_id in change.ids:
                self.upserts.pop(doc_id, None)
                self.deletes.add(doc_id)
        else:
            assert change.vectors is not None
            attributes = change.attributes or (None,) * len(change.ids)
            for doc_id, vector, attrs in zip(change.ids, change.vectors, attributes, strict=True):
                self.deletes.discard(doc_id)
                self.upserts[doc_id] = (vector, attrs)
        self.position = change.position

    def touched(self) -> set[str]:
        """Ids whose stored document no longer stands: deleted or replaced."""
        return self.deletes | self.upserts.keys()
