"""Backups: one checksummed file holding a collection's active version and its pending changes,
cut at one journal position.

The file is a plain tar (the standard library reads and writes it; vectors do not compress):

    version/<file>             every file of the active version, its manifest included
    pending.log                the changes pending on it, as journal records
    dotcos-snapshot.json       what the snapshot holds and the sha256 and size of every member
    dotcos-snapshot.sha256     the sha256 of dotcos-snapshot.json

Reading checks every member against the index and the index against its checksum before anything
is used, so a truncated or altered file is refused whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from index_builder.artifact.errors import InputError
from index_builder.artifact.faults import crash_point
from index_builder.artifact.journal import Change, decode_all, encode_all
from index_builder.artifact.layout import MANIFEST_FILE, fsync_path
from index_builder.artifact.lifecycle import span_of
from index_builder.artifact.manifest import ChangeSpan, Manifest, read_manifest
from index_builder.pending import settled

FORMAT = 1
INDEX = "dotcos-snapshot.json"
CHECK = "dotcos-snapshot.sha256"
PENDING = "pending.log"
VERSION_PREFIX = "version/"
BLOCK = 1 << 22


@dataclass(frozen=True)
class Written:
    """What a snapshot holds: the version, the journal position it was cut at, its pending changes."""

    path: Path
    collection: str
    version: str
    position: int
    pending: ChangeSpan | None
    bytes: int


def write_snapshot(root: Path, collection: str, out: Path) -> Written:
    """Cut the active version and its pending changes at one journal position (under the lock,
    with every file opened there) and write them to `out` atomically (temp file + rename)."""
    with settled(root, collection) as now:
        if now.active is None or now.path is None:
            raise InputError(f"snapshot: collection {collection!r} has no active version under {root}")
        manifest, position, changes = now.active, now.end, now.pending()
        names = sorted(p.name for p in now.path.iterdir() if p.is_file())
        handles = {name: open(now.path / name, "rb") for name in names}  # noqa: SIM115 - closed below
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        members = _write_tar(tmp, handles, encode_all(changes), manifest, position, changes)
        crash_point("snapshot.before_rename")
        os.replace(tmp, out)
        fsync_path(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for handle in handles.values():
            handle.close()
    return Written(out, collection, manifest.version, position, span_of(changes), members)


def _write_tar(
    tmp: Path,
    handles: Mapping[str, BinaryIO],
    pending: bytes,
    manifest: Manifest,
    position: int,
    changes: list[Change],
) -> int:
    members: dict[str, dict[str, Any]] = {}
    with open(tmp, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, handle in handles.items():
            size = os.fstat(handle.fileno()).st_size
            members[VERSION_PREFIX + name] = _add(tar, VERSION_PREFIX + name, _Hashing(handle), size)
            crash_point("snapshot.mid_write")
        members[PENDING] = _add(tar, PENDING, _Hashing(io.BytesIO(pending)), len(pending))
        span = span_of(changes)
        index = {
            "format": FORMAT,
            "collection": manifest.collection,
            "version": manifest.version,
            "position": position,
            "pending": None if span is None else span.model_dump(mode="json"),
            "created_at": datetime.now(UTC).isoformat(),
            "members": members,
        }
        text = json.dumps(index, indent=2).encode()
        _add(tar, INDEX, _Hashing(io.BytesIO(text)), len(text))
        digest = hashlib.sha256(text).hexdigest().encode()
        _add(tar, CHECK, _Hashing(io.BytesIO(digest)), len(digest))
        tar.close()
        raw.flush()
        os.fsync(raw.fileno())
        return raw.tell()


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner, self.digest = inner, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.digest.update(data)
        return data


def _add(tar: tarfile.TarFile, name: str, source: _Hashing, size: int) -> dict[str, Any]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o444, int(datetime.now(UTC).timestamp())
    tar.addfile(info, source)
    return {"sha256": source.digest.hexdigest(), "bytes": size}


@dataclass(frozen=True)
class Snapshot:
    """A verified snapshot unpacked into a directory: the version's files, its manifest and the
    pending changes, and where it was cut."""

    directory: Path
    manifest: Manifest
    changes: list[Change]
    position: int


def unpack_snapshot(file: Path, into: Path) -> Snapshot:
    """Check every member of a snapshot and unpack the version's files into `into` (pending.log
    stays out of it); InputError naming the problem when any check fails."""
    try:
        with tarfile.open(file, mode="r:") as tar:
            index = _index(tar)
            pending = io.BytesIO()
            for name, entry in index["members"].items():
                file_name = name[len(VERSION_PREFIX) :]
                if name == PENDING:
                    _copy(tar, name, entry, pending)
                elif name.startswith(VERSION_PREFIX) and file_name and Path(file_name).name == file_name:
                    with open(into / file_name, "wb") as target:
                        _copy(tar, name, entry, target)
                else:
                    raise ValueError(f"unexpected member {name!r}")
        changes, used = decode_all(pending.getvalue())
        if used != len(pending.getvalue()):
            raise ValueError(f"{PENDING} holds bytes that are not whole records")
        manifest = read_manifest(into)
    except (tarfile.TarError, EOFError, OSError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"snapshot {file} is truncated or corrupt ({exc}); nothing was restored") from None
    return Snapshot(into, manifest, changes, int(index["position"]))


def _index(tar: tarfile.TarFile) -> dict[str, Any]:
    text = _read(tar, INDEX)
    if _read(tar, CHECK).decode() != hashlib.sha256(text).hexdigest():
        raise ValueError(f"{INDEX} does not match its checksum")
    index: dict[str, Any] = json.loads(text)
    if index.get("format") != FORMAT:
        raise ValueError(f"format {index.get('format')!r}; this dotcos reads format {FORMAT}")
    if VERSION_PREFIX + MANIFEST_FILE not in index["members"]:
        raise ValueError("it holds no version manifest")
    return index


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    handle = tar.extractfile(name)
    if handle is None:
        raise ValueError(f"{name} is not a file")
    return handle.read()


def _copy(tar: tarfile.TarFile, name: str, entry: dict[str, Any], target: IO[bytes]) -> None:
    """Copy a member to `target` in blocks, checking its size and sha256."""
    handle = tar.extractfile(name)
    if handle is None:
        raise ValueError(f"{name} is not a file")
    digest, size = hashlib.sha256(), 0
    while block := handle.read(BLOCK):
        digest.update(block)
        target.write(block)
        size += len(block)
    if size != entry["bytes"] or digest.hexdigest() != entry["sha256"]:
        raise ValueError(f"{name} does not match its checksum")
