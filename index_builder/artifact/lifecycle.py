"""One history per collection: its versions, CURRENT and the change journal, kept in one order.

Every version records a fold point (`Manifest.journal_position`): the data changes at or before
it are in its documents or were deliberately left out. What stands at any moment is the active
version's documents, then the changes it carries (a restored version's, in its own file), then
every data change of the journal after its fold point that is not set aside. Nothing else is
state:

- a write appends a data change (delete, upsert, attributes);
- a build chooses its new version's fold point (what it folds, keeps or sets aside);
- activating a version keeps every later change that is not set aside on top of it;
- a `set_aside` record takes a span of data changes out of every version's view, for good
  (re-applying appends copies of them as new changes);
- an `activate` record says which version CURRENT named from that position on, which is how a
  restore finds the version active at any position.

CURRENT is the one commit point. It is replaced under the journal's lock, and the records that
follow from the new version (the copies of changes it carries, the spans it sets aside, its
`activate`) are appended under that same lock; a crash in between is repaired by the next
writer of the journal, service or builder, before it appends anything (`settle`). So no change
is ever recorded against the wrong version, and a version is whole the moment CURRENT names it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from index_builder.artifact.errors import ArtifactError, DotcosError
from index_builder.artifact.faults import crash_point
from index_builder.artifact.journal import ACTIVATE, SET_ASIDE, Change, Journal, decode_all, encode_all
from index_builder.artifact.layout import CURRENT_FILE, collection_dir, read_current, version_dir, write_atomic
from index_builder.artifact.manifest import CarriedEntry, ChangeSpan, Manifest, read_manifest

log = logging.getLogger(__name__)

Spans = list[tuple[int, int]]
CARRIED_FILE = "carried.log"


def recorded_spans(changes: Iterable[Change], through: int | None = None) -> Spans:
    """The spans `set_aside` records among `changes` declare (those at or before `through`)."""
    return [
        (int(c.detail["first"]), int(c.detail["last"]))
        for c in changes
        if c.op == SET_ASIDE and (through is None or c.position <= through)
    ]


def in_spans(position: int, spans: Spans) -> bool:
    return any(first <= position <= last for first, last in spans)


def applicable(changes: Iterable[Change], after: int, spans: Spans, through: int | None = None) -> list[Change]:
    """The data changes after position `after` (and at or before `through`) outside `spans`."""
    return [
        c
        for c in changes
        if c.is_data
        and c.position > after
        and (through is None or c.position <= through)
        and not in_spans(c.position, spans)
    ]


def span_of(changes: list[Change], reason: str | None = None) -> ChangeSpan | None:
    """The span and count of some data changes (None when there are none)."""
    if not changes:
        return None
    return ChangeSpan(first=changes[0].position, last=changes[-1].position, count=len(changes), reason=reason)


def write_carried(directory: Path, changes: list[Change]) -> CarriedEntry | None:
    """Write the changes a new version carries into its directory (None when there are none)."""
    if not changes:
        return None
    path = directory / CARRIED_FILE
    if path.exists():
        raise ArtifactError(f"{path} exists already: a new version's carried changes are written once")
    path.write_bytes(encode_all(changes))
    return CarriedEntry(file=CARRIED_FILE, first=changes[0].position, last=changes[-1].position)


def carried_changes(manifest: Manifest, path: Path) -> list[Change]:
    """The changes a version carries, read from its own (checksummed) file."""
    if manifest.carried is None:
        return []
    changes, _ = decode_all((path / manifest.carried.file).read_bytes())
    return changes


def pending_on(manifest: Manifest, path: Path, changes: Iterable[Change], spans: Spans) -> list[Change]:
    """The data changes pending on a version: those it carries (never set aside for it), then the
    journal's after its fold point outside `spans`."""
    return [*carried_changes(manifest, path), *applicable(changes, manifest.journal_position, spans)]


def spans_of(manifest: Manifest, journal: Journal) -> Spans:
    """Every span set aside for a version: those its manifest declares and those the journal recorded."""
    return sorted({(s.first, s.last) for s in manifest.set_aside} | journal.recorded)


def history(root: Path, collection: str) -> tuple[Journal, list[Change]]:
    """A fresh handle on a collection's journal and every record it holds."""
    journal = Journal(root, collection)
    return journal, journal.read_new()


def settle(journal: Journal) -> list[Change]:
    """Append what CURRENT's version implies and the journal lacks (call with the lock held):
    the copies of the changes it carries, the spans it sets aside, and its `activate` record.
    Returns the records appended (none when the journal already agrees with CURRENT)."""
    try:
        current = read_current(journal.root, journal.collection)
    except DotcosError:
        return []
    if journal.active == current:
        return []
    appended = []
    try:
        path = version_dir(journal.root, journal.collection, current)
        manifest = read_manifest(path)
        appended += _carry(journal, manifest, path)
        for span in manifest.set_aside:
            if (span.first, span.last) not in journal.recorded:
                detail = {"first": span.first, "last": span.last, "reason": span.reason}
                appended.append(journal.append(Change(0, SET_ASIDE, detail=detail)))
    except DotcosError as exc:
        log.error(
            "%s: cannot read the active version %s (%s); recording its activation only", journal.path, current, exc
        )
    appended.append(journal.append(Change(0, ACTIVATE, detail={"version": current})))
    return appended


def _carry(journal: Journal, manifest: Manifest, path: Path) -> list[Change]:
    carried = manifest.carried
    if carried is None or journal.position >= carried.last:
        return []
    if journal.position != carried.first - 1:
        log.error(
            "%s: version %s carries changes for positions %d..%d but the journal ends at %d; "
            "the version serves them from its own file",
            journal.path,
            manifest.version,
            carried.first,
            carried.last,
            journal.position,
        )
        return []
    return [journal.append(change) for change in carried_changes(manifest, path)]


@contextmanager
def locked(journal: Journal) -> Iterator[list[Change]]:
    """The journal's lock, with the journal first brought level with CURRENT (`settle`); yields
    every record this handle had not read, those appended by the settling included."""
    with journal.locked() as fresh:
        yield [*fresh, *settle(journal)]


def flip(journal: Journal, version: str) -> None:
    """Replace CURRENT and append the new version's records (call inside `locked`)."""
    crash_point("publish.before_current")
    write_atomic(collection_dir(journal.root, journal.collection) / CURRENT_FILE, version)
    crash_point("publish.after_current")
    settle(journal)


def commit(root: Path, collection: str, version: str) -> None:
    """Make `version` the active one: CURRENT replaced and its records appended under one lock."""
    journal = Journal(root, collection)
    with locked(journal):
        flip(journal, version)
