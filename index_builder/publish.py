"""Publishing versions atomically, switching the active one, and collecting old ones.

A build writes into ROOT/<collection>/.staging-<version>-<pid>/, fsyncs every file and
the directory, renames it into versions/ (atomic on one filesystem), and only then
replaces CURRENT (temp file + rename, under the journal's lock: artifact.lifecycle.commit).
A crash at any point leaves the old CURRENT and every published version untouched; a
leftover staging directory is invisible to readers and removed by `gc`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from index_builder.artifact.errors import InputError, NotFoundError
from index_builder.artifact.faults import crash_point
from index_builder.artifact.integrity import verify_checksums
from index_builder.artifact.layout import (
    MANIFEST_FILE,
    STAGING_PREFIX,
    VERSIONS_DIR,
    check_name,
    collection_dir,
    fsync_path,
    list_versions,
    read_current,
    sha256_file,
    version_dir,
)
from index_builder.artifact.lifecycle import commit
from index_builder.artifact.manifest import FileEntry, Manifest, read_manifest
from index_builder.artifact.serving import read_aliases
from index_builder.pending import settled

log = logging.getLogger(__name__)


def new_version_name(now: datetime | None = None) -> str:
    """A version name that sorts by creation time, e.g. 20261121T061300123456Z."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond:06d}Z"


def check_writable(root: Path) -> None:
    """Fail early, with what to do, when the index root cannot be written by this user.

    A bind-mounted host directory or a fresh volume is often owned by root while the image runs
    as an unprivileged user; FAISS and numpy would otherwise fail deep inside a build.
    """
    with contextlib.suppress(PermissionError):
        root.mkdir(parents=True, exist_ok=True)
    if not (root.is_dir() and os.access(root, os.W_OK | os.X_OK)):
        uid, gid = os.getuid(), os.getgid()
        raise InputError(
            f"index root {root} is not writable by uid {uid} (gid {gid}): chown it to {uid}:{gid}, "
            f"or run as its owner (docker --user, Kubernetes securityContext.fsGroup: {gid}), "
            "or pick another --root"
        )


def new_staging_dir(root: Path, collection: str, version: str) -> Path:
    """A private directory on the same filesystem as versions/, for one build."""
    base = collection_dir(root, collection)
    if (base / VERSIONS_DIR / check_name("version", version)).exists():
        raise InputError(f"version {version!r} of {collection!r} already exists")
    (base / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
    staging = base / f"{STAGING_PREFIX}{version}-{os.getpid()}"
    staging.mkdir()
    return staging


def file_entry(path: Path) -> FileEntry:
    """A file's sha256 and size, as the manifest lists it."""
    return FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)


def file_entries(staging: Path) -> dict[str, FileEntry]:
    """sha256 and size of every file in a staging directory (the manifest excepted)."""
    return {p.name: file_entry(p) for p in sorted(staging.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}


def publish(staging: Path, manifest: Manifest, root: Path) -> Path:
    """Make a fully written staging directory the collection's active version."""
    target = place(staging, manifest, root)
    commit(root, manifest.collection, manifest.version)
    return target


def place(staging: Path, manifest: Manifest, root: Path) -> Path:
    """Write the manifest and move a fully written staging directory into versions/, durably; it
    serves nothing until CURRENT names it."""
    (staging / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    crash_point("publish.before_fsync")
    for path in staging.iterdir():
        path.chmod(0o444)
        fsync_path(path)
    fsync_path(staging)
    crash_point("publish.before_rename")
    target = version_dir(root, manifest.collection, manifest.version)
    os.rename(staging, target)
    fsync_path(target.parent)
    return target


def activate(root: Path, collection: str, version: str) -> None:
    """Point CURRENT at an already published version (rollback or roll forward)."""
    path = version_dir(root, collection, version)
    if not (path / MANIFEST_FILE).is_file():
        known = ", ".join(list_versions(root, collection)) or "none"
        raise NotFoundError(f"version {version!r} of {collection!r} not found (published: {known})")
    verify_checksums(read_manifest(path), path)
    crash_point("activate.before_current")
    commit(root, collection, version)


def _created(root: Path, collection: str, version: str) -> str:
    return read_manifest(version_dir(root, collection, version)).created_at.isoformat()


@dataclass(frozen=True)
class Collected:
    """What gc removed and kept, and why the journal's oldest kept position is needed."""

    removed: list[str]
    kept: list[str]
    segments_removed: list[Path]
    segments_kept: list[Path]
    needed_from: int
    needed_by: str


def gc(root: Path, collection: str, keep: int) -> Collected:
    """Delete all but the `keep` newest versions (never the active one or an aliased one), dead stagings, and the
    journal segments no kept version, set-aside span or restore needs (under the journal's lock,
    so no restore or activation runs meanwhile)."""
    if keep < 1:
        raise InputError(f"--keep must be at least 1, got {keep}")
    with settled(root, collection) as now:
        active = read_current(root, collection)
        served = {active, *read_aliases(root, collection).values()}
        versions = sorted(list_versions(root, collection), key=lambda v: _created(root, collection, v))
        doomed = [v for v in versions[:-keep] if v not in served]
        for version in doomed:
            crash_point("gc.before_delete")
            trash = collection_dir(root, collection) / f"{STAGING_PREFIX}gc-{version}-{os.getpid()}"
            os.rename(version_dir(root, collection, version), trash)
            shutil.rmtree(trash)
        _drop_dead_stagings(collection_dir(root, collection))
        kept = [v for v in versions if v not in doomed]
        needs = [
            (
                read_manifest(version_dir(root, collection, v)).journal_position + 1,
                f"the changes pending on version {v}",
            )
            for v in kept
        ]
        needs += [(span.first, f"the set-aside changes {span.first}..{span.last}") for span in now.set_aside_now()]
        needed_from, needed_by = min(needs, default=(now.end + 1, "nothing"))
        removed, remaining = now.journal.compact(needed_from)
    return Collected(doomed, kept, removed, remaining, needed_from, needed_by)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_dead_stagings(base: Path) -> None:
    for path in base.iterdir():
        if not path.name.startswith(STAGING_PREFIX):
            continue
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            log.info("removing abandoned %s", path.name)
            shutil.rmtree(path, ignore_errors=True)
