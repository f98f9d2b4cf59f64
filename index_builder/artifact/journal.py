"""The change journal: one ordered log per collection of the writes accepted between rebuilds and
of the lifecycle events around them, durable before they are acknowledged, beside the versions
(never inside an immutable one).

    ROOT/<collection>/journal/<first position, 16 digits>.log    append-only segments
    ROOT/<collection>/journal/.lock                              one writer at a time (flock)

A record is `MAGIC | position u64 | length u32 | crc32 u32 | payload`, the crc over the position
and the payload; the payload is `header length u32 | JSON header | float32 vectors`. Positions
count records from 1 across segments (a segment's name is its first position). A writer appends
one record with one write and fsyncs it before the caller answers; a crash leaves the whole record or a torn tail, which
readers stop at and the next writer (or `repair` at start-up) truncates to the last good record.

Records are data changes (`delete`, `upsert`, `attributes`: what a user wrote) or lifecycle
records (`set_aside`: data changes in a span of positions no longer apply; `activate`: CURRENT
named a version from here on). Their meaning is index_builder.artifact.lifecycle's.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from index_builder.artifact.faults import crash_point
from index_builder.artifact.layout import collection_dir, fsync_path

log = logging.getLogger(__name__)

JOURNAL_DIR = "journal"
MAGIC = b"DCJ1"
HEAD = struct.Struct("<4sQII")
DELETE, UPSERT, ATTRIBUTES = "delete", "upsert", "attributes"
SET_ASIDE, ACTIVATE = "set_aside", "activate"
DATA_OPS = frozenset({DELETE, UPSERT, ATTRIBUTES})
HEADER_FIELDS = frozenset({"op", "ids", "dim", "attributes"})


@dataclass(frozen=True)
class Change:
    """One record: ids deleted; ids upserted with their vectors and attributes; an attribute
    change of ids (`detail`: set, unset); or a lifecycle record (`detail`: its fields)."""

    position: int
    op: str
    ids: tuple[str, ...] = ()
    vectors: np.ndarray | None = None
    attributes: tuple[dict[str, Any] | None, ...] | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_data(self) -> bool:
        return self.op in DATA_OPS

    @property
    def patch(self) -> dict[str, Any]:
        """An attribute change as one mapping: the values set, None for the attributes unset."""
        return {**{key: None for key in self.detail.get("unset", ())}, **self.detail.get("set", {})}

    def copied(self, **detail: Any) -> Change:
        """This record to be appended again (at a new position), with `detail` added."""
        return replace(self, position=0, detail={**self.detail, **detail})

    def payload(self) -> bytes:
        header: dict[str, Any] = {"op": self.op, "ids": list(self.ids), **self.detail}
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
    detail = {key: value for key, value in header.items() if key not in HEADER_FIELDS}
    return Change(position, header["op"], tuple(header["ids"]), vectors, attributes, detail)


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


def decode_all(data: bytes) -> tuple[list[Change], int]:
    """Every whole record from the start of `data`, and the offset where they end."""
    out, offset = [], 0
    while (found := decode(data, offset)) is not None:
        change, offset = found
        out.append(change)
    return out, offset


def encode_all(changes: list[Change]) -> bytes:
    """Records as one journal-format byte string (a snapshot's or a restored version's changes)."""
    return b"".join(encode(change) for change in changes)


def journal_dir(root: Path, collection: str) -> Path:
    return collection_dir(root, collection) / JOURNAL_DIR


def segment_name(first: int) -> str:
    return f"{first:016d}.log"


class Journal:
    """One collection's journal: tailing reads (any process), locked appends, repair, compaction.

    While it reads, a handle also keeps what the lifecycle records said: the version the last
    `activate` named and the spans `set_aside` records declared."""

    def __init__(self, root: Path, collection: str, segment_bytes: int = 64 << 20) -> None:
        self.root, self.collection = root, collection
        self.path = journal_dir(root, collection)
        self.segment_bytes = segment_bytes
        self._segment: Path | None = None
        self._offset = 0
        self.position = 0
        """The last position read (or written) by this handle."""
        self.active: str | None = None
        self.recorded: set[tuple[int, int]] = set()

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
                self.position = max(self.position, int(segment.stem) - 1)
            with open(segment, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
            changes, used = decode_all(data)
            self._offset += used
            for change in changes:
                if change.position > self.position:
                    out.append(change)
                    self._note(change)
            if used < len(data):
                break
        return out

    def _note(self, change: Change) -> None:
        self.position = change.position
        if change.op == ACTIVATE:
            self.active = str(change.detail["version"])
        elif change.op == SET_ASIDE:
            self.recorded.add((int(change.detail["first"]), int(change.detail["last"])))

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

    def append(self, draft: Change) -> Change:
        """Write one record durably at the next position and return it (call inside `locked`)."""
        change = replace(draft, position=self.position + 1)
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
        self._note(change)
        return change

    def compact(self, needed_from: int) -> tuple[list[Path], list[Path]]:
        """Delete the segments holding only records before position `needed_from` (call inside
        `locked`; the newest is always kept: it carries the position count on). Returns the
        segments removed and those kept."""
        segments = self.segments()
        removed = []
        for segment, following in zip(segments, segments[1:], strict=False):
            if int(following.stem) <= needed_from:
                segment.unlink()
                removed.append(segment)
        if removed:
            fsync_path(self.path)
        return removed, [s for s in segments if s not in removed]


@dataclass
class Pending:
    """The net effect of data changes applied in order: per id its last upsert (vector,
    attributes), its deletion, or the attribute changes made to its stored document since. What
    the service overlays on a version and what a rebuild folds in."""

    upserts: dict[str, tuple[np.ndarray, dict[str, Any] | None]] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    patches: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per stored document, attribute values set since (None: unset); an id the version does not
    hold is left alone, like a delete of an unknown id."""
    position: int = 0

    @classmethod
    def of(cls, changes: list[Change]) -> Pending:
        pending = cls()
        for change in changes:
            pending.apply(change)
        return pending

    def apply(self, change: Change) -> None:
        if change.op == DELETE:
            for doc_id in change.ids:
                self.upserts.pop(doc_id, None)
                self.patches.pop(doc_id, None)
                self.deletes.add(doc_id)
        elif change.op == UPSERT:
            assert change.vectors is not None
            attributes = change.attributes or (None,) * len(change.ids)
            for doc_id, vector, attrs in zip(change.ids, change.vectors, attributes, strict=True):
                self.deletes.discard(doc_id)
                self.patches.pop(doc_id, None)
                self.upserts[doc_id] = (vector, attrs)
        elif change.op == ATTRIBUTES:
            self._patch(change.ids, change.patch)
        self.position = max(self.position, change.position)

    def _patch(self, ids: tuple[str, ...], patch: dict[str, Any]) -> None:
        for doc_id in ids:
            if doc_id in self.upserts:
                vector, attrs = self.upserts[doc_id]
                self.upserts[doc_id] = (vector, {**(attrs or {}), **patch})
            elif doc_id not in self.deletes:
                self.patches[doc_id] = {**self.patches.get(doc_id, {}), **patch}

    def touched(self) -> set[str]:
        """Ids whose stored document no longer stands as built: deleted, replaced or re-attributed."""
        return self.deletes | self.upserts.keys() | self.patches.keys()
