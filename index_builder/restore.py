"""Going back: point-in-time restore, restore from a snapshot, and re-applying set-aside changes.

A restore publishes a new version made of an existing version's files (hard links when they are
on the same filesystem) and the changes that stood on it, carried in its own file; the changes
that came later are set aside, not deleted. It is one commit: nothing changes for readers until
CURRENT names the new version (artifact.lifecycle), so a restore killed at any earlier moment
leaves the collection as it was.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from index_builder.artifact.errors import InputError, NotFoundError
from index_builder.artifact.faults import crash_point
from index_builder.artifact.journal import ACTIVATE, Change
from index_builder.artifact.layout import MANIFEST_FILE, list_versions, version_dir
from index_builder.artifact.lifecycle import (
    applicable,
    carried_changes,
    flip,
    recorded_spans,
    span_of,
    write_carried,
)
from index_builder.artifact.manifest import ChangeSpan, Manifest, read_manifest
from index_builder.pending import Standing, settled
from index_builder.publish import file_entry, new_staging_dir, new_version_name, place
from index_builder.snapshot import unpack_snapshot


@dataclass(frozen=True)
class Restored:
    """The version a restore published and what it did with the changes."""

    manifest: Manifest
    carried: ChangeSpan | None
    set_aside: ChangeSpan | None


def restore_position(root: Path, collection: str, position: int) -> Restored:
    """Publish the collection as it stood at `position` (the version active then, with the changes
    through it that applied then); the changes after it are set aside."""
    version = new_version_name()
    staging = new_staging_dir(root, collection, version)
    try:
        with settled(root, collection) as now:
            source, path = _source_at(now, root, collection, position)
            spans = sorted({(s.first, s.last) for s in source.set_aside} | set(recorded_spans(now.changes, position)))
            journal = applicable(now.changes, source.journal_position, spans, through=position)
            carried = [*carried_changes(source, path), *journal]
            for name in _shared_files(source):
                _link(path / name, staging / name)
            later = span_of(now.after(position), f"restore to position {position}")
            origin: dict[str, str | int] = {"version": source.version, "position": position}
            return _commit(now, staging, source, version, carried, later, origin)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def restore_snapshot(root: Path, collection: str, file: Path) -> Restored:
    """Publish a snapshot's version with its pending changes into `root` (any root); the changes
    pending there before are set aside."""
    version = new_version_name()
    staging = new_staging_dir(root, collection, version)
    try:
        snapshot = unpack_snapshot(file, staging)
        (staging / MANIFEST_FILE).unlink()
        if snapshot.manifest.carried is not None:
            (staging / snapshot.manifest.carried.file).unlink()
        crash_point("restore.unpacked")
        with settled(root, collection) as now:
            source = snapshot.manifest.model_copy(update={"collection": collection})
            origin: dict[str, str | int] = {
                "snapshot": file.name,
                "version": snapshot.manifest.version,
                "position": snapshot.position,
            }
            fold = now.active.journal_position if now.active else now.end
            replaced = span_of(now.after(fold), f"restore of snapshot {file.name}")
            return _commit(now, staging, source, version, snapshot.changes, replaced, origin)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _source_at(now: Standing, root: Path, collection: str, position: int) -> tuple[Manifest, Path]:
    """The version that was active at `position` (the last activation at or before it)."""
    if now.active is None:
        raise NotFoundError(f"collection {collection!r} has no active version under {root}")
    if not 0 <= position <= now.end:
        raise InputError(f"--position: {position} is not in the journal of {collection!r} (0..{now.end})")
    activations = [c for c in now.changes if c.op == ACTIVATE and c.position <= position]
    if not activations:
        recorded = [c.position for c in now.changes if c.op == ACTIVATE]
        since = f"from position {recorded[0]} on" if recorded else "nowhere yet"
        raise InputError(
            f"--position {position}: the journal of {collection!r} records the active version {since} "
            "(older records predate this dotcos or were removed by gc)"
        )
    name = str(activations[-1].detail["version"])
    path = version_dir(root, collection, name)
    if not path.is_dir():
        kept = ", ".join(list_versions(root, collection))
        raise InputError(
            f"--position {position}: version {name}, active then, was removed by gc; kept versions: {kept}"
        )
    source = read_manifest(path)
    first = now.changes[0].position if now.changes else now.end + 1
    if first > source.journal_position + 1:
        raise InputError(
            f"--position {position}: the journal of {collection!r} starts at position {first}; the changes on "
            f"version {name} from position {source.journal_position + 1} were removed by gc"
        )
    return source, path


def _shared_files(source: Manifest) -> list[str]:
    """The files a restored version takes over from its source: all but the changes it carried
    (the restored version writes its own)."""
    carried = None if source.carried is None else source.carried.file
    return [name for name in source.files if name != carried]


def _link(source: Path, target: Path) -> None:
    """A version file shared with its source (version files never change), or a copy across filesystems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _commit(
    now: Standing,
    staging: Path,
    source: Manifest,
    version: str,
    carried: list[Change],
    aside: ChangeSpan | None,
    origin: dict[str, str | int],
) -> Restored:
    """Write the carried changes and the manifest, place the version and activate it, setting
    `aside` aside (with the journal's lock held, so the positions its records take are known)."""
    copies = [replace(c, position=now.end + 1 + at) for at, c in enumerate(c.copied() for c in carried)]
    parked = span_of(copies, f"carried by version {version}")
    carried_entry = write_carried(staging, copies)
    files = {name: entry for name, entry in source.files.items() if name in _shared_files(source)}
    if carried_entry is not None:
        files[carried_entry.file] = file_entry(staging / carried_entry.file)
    update: dict[str, Any] = {
        "version": version,
        "created_at": datetime.now(UTC),
        "journal_position": now.end + len(copies),
        "carried": carried_entry,
        "set_aside": [span for span in (parked, aside) if span is not None],
        "changes": {name: s for name, s in (("carried", span_of(copies)), ("set_aside", aside)) if s is not None},
        "restored_from": origin,
    }
    manifest = source.model_copy(update={**update, "files": files})
    place(staging, manifest, now.journal.root)
    crash_point("restore.before_current")
    flip(now.journal, version)
    return Restored(manifest, span_of(copies), aside)


def reapply(root: Path, collection: str, first: int | None, last: int | None) -> list[Change]:
    """Append copies of the set-aside changes (those between `first` and `last`, when given) as
    new changes, in their order: they apply on top of the active version again."""
    with settled(root, collection) as now:
        if now.active is None:
            raise NotFoundError(f"collection {collection!r} has no active version under {root}")
        todo = [
            c
            for c in now.set_aside_changes()
            if (first is None or c.position >= first) and (last is None or c.position <= last)
        ]
        foreign = [c.position for c in todo if c.vectors is not None and c.vectors.shape[1] != now.active.dim]
        if foreign:
            raise InputError(
                f"the set-aside upserts at positions {', '.join(map(str, foreign[:5]))} do not have the active "
                f"version's dimension {now.active.dim}; re-apply the others with --positions"
            )
        return [now.journal.append(c.copied(reapplied=c.position)) for c in todo]
