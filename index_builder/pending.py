"""The changes pending on a collection as the builder's commands see, plan and report them.

A build from an export keeps them by default (its fold point stays the active version's), folds
those the export already holds with `--changes-included-through`, or sets them aside with
`--discard-changes`; every choice is recorded in the new manifest and printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from index_builder.artifact.errors import InputError, NotFoundError
from index_builder.artifact.journal import ACTIVATE, SET_ASIDE, Change, Journal
from index_builder.artifact.layout import read_current, version_dir
from index_builder.artifact.lifecycle import Spans, applicable, carried_changes, in_spans, locked, span_of, spans_of
from index_builder.artifact.manifest import ChangeSpan, Manifest, read_manifest


@dataclass(frozen=True)
class Fold:
    """A new version's fold point, the changes it carries on (kept from a restored version), and
    what it did with the changes pending before it."""

    position: int
    changes: dict[str, ChangeSpan] = field(default_factory=dict)
    set_aside: list[ChangeSpan] = field(default_factory=list)
    carried: list[Change] = field(default_factory=list)
    dims: frozenset[int] = frozenset()
    """The dimensions of the upserts left pending on the new version (each must be its own)."""

    def check_dim(self, dim: int) -> None:
        """InputError when upserts left pending have another dimension than the new input's."""
        other = sorted(self.dims - {dim})
        if other:
            raise InputError(
                f"the input has dimension {dim} but upserts pending on the active version have dimension "
                f"{', '.join(map(str, other))}: pass --discard-changes to set them aside (`reapply` brings them "
                "back), or --changes-included-through a later position"
            )


@dataclass(frozen=True)
class Standing:
    """A collection's history at one moment: its journal's records and the active version."""

    journal: Journal
    changes: list[Change]
    active: Manifest | None
    path: Path | None

    @property
    def end(self) -> int:
        return self.journal.position

    @property
    def spans(self) -> Spans:
        if self.active is None:
            return sorted(self.journal.recorded)
        return spans_of(self.active, self.journal)

    def carried(self) -> list[Change]:
        """The changes the active version carries."""
        return [] if self.active is None or self.path is None else carried_changes(self.active, self.path)

    def pending(self) -> list[Change]:
        """The data changes pending on the active version: carried, then the journal's."""
        if self.active is None:
            return []
        return [*self.carried(), *applicable(self.changes, self.active.journal_position, self.spans)]

    def after(self, position: int) -> list[Change]:
        """The journal's data changes after `position` that are not set aside."""
        return applicable(self.changes, position, self.spans)

    def set_aside_changes(self) -> list[Change]:
        """The data changes in recorded set-aside spans that were not re-applied since."""
        reapplied = {int(c.detail["reapplied"]) for c in self.changes if "reapplied" in c.detail}
        spans = sorted(self.journal.recorded)
        carried = self.active.carried if self.active is not None else None
        in_effect = [] if carried is None else [(carried.first, carried.last)]
        return [
            c
            for c in self.changes
            if c.is_data
            and in_spans(c.position, spans)
            and c.position not in reapplied
            and not in_spans(c.position, in_effect)
        ]

    def set_aside_now(self) -> list[ChangeSpan]:
        """Each recorded span with the changes in it still set aside, and why it was set aside (the
        copies of the changes the active version carries are in effect, not set aside)."""
        still = self.set_aside_changes()
        out = []
        for change in self.changes:
            if change.op != SET_ASIDE:
                continue
            first, last = int(change.detail["first"]), int(change.detail["last"])
            span = span_of([c for c in still if first <= c.position <= last], change.detail.get("reason"))
            if span is not None:
                out.append(span)
        return out


def _read(journal: Journal, root: Path, collection: str, changes: list[Change]) -> Standing:
    try:
        version = read_current(root, collection)
    except NotFoundError:
        return Standing(journal, changes, None, None)
    path = version_dir(root, collection, version)
    return Standing(journal, changes, read_manifest(path), path)


def standing(root: Path, collection: str) -> Standing:
    """The history as it reads now, without taking the journal's lock (for reports)."""
    journal = Journal(root, collection)
    return _read(journal, root, collection, journal.read_new())


@contextmanager
def settled(root: Path, collection: str) -> Iterator[Standing]:
    """The history under the journal's lock, the journal first brought level with CURRENT: no
    change lands and CURRENT does not move until the block ends."""
    journal = Journal(root, collection)
    with locked(journal) as changes:
        yield _read(journal, root, collection, changes)


def fold_for_export(root: Path, collection: str, through: int | None, discard: bool) -> Fold:
    """What a build from an export does with the pending changes: keep them (default), fold
    those through `through`, or set them all aside (`discard`). A new collection's build touches
    nothing before it publishes."""
    first = standing(root, collection)
    if first.active is None:
        return Fold(first.end)
    with settled(root, collection) as now:
        if now.active is None:
            return Fold(now.end)
        pending, fold = now.pending(), now.active.journal_position
        if discard:
            reason = "discarded by a build from an export (--discard-changes)"
            journal = span_of(now.after(fold), reason)
            discarded = span_of(pending, reason)
            return Fold(now.end, {"discarded": discarded} if discarded else {}, [journal] if journal else [])
        if through is None:
            kept = span_of(pending)
            return Fold(fold, {"kept": kept} if kept else {}, carried=now.carried(), dims=_dims(pending))
        if not 0 <= through <= now.end:
            raise InputError(f"--changes-included-through: position {through} is not in the journal (0..{now.end})")
        if through < fold and now.active.carried is not None:
            raise InputError(
                f"--changes-included-through: the active version carries restored changes at its fold point "
                f"{fold}, which an export through {through} cannot hold; give a position of {fold} or more, "
                "or --discard-changes"
            )
        folded = span_of([c for c in pending if c.position <= through])
        later = now.after(through)
        kept = span_of(later)
        spans = {name: s for name, s in (("folded", folded), ("kept", kept)) if s is not None}
        return Fold(through, spans, dims=_dims(later))


def _dims(changes: list[Change]) -> frozenset[int]:
    return frozenset(c.vectors.shape[1] for c in changes if c.vectors is not None)


def restorable_from(now: Standing, root: Path, collection: str) -> int | None:
    """The earliest position `restore --position` can go back to: the first activation of a
    version still kept whose pending changes the journal still holds (None: none can)."""
    first = now.changes[0].position if now.changes else now.end + 1
    for change in now.changes:
        if change.op != ACTIVATE:
            continue
        path = version_dir(root, collection, str(change.detail["version"]))
        if path.is_dir() and read_manifest(path).journal_position + 1 >= first:
            return change.position
    return None


def said(span: ChangeSpan | None, verb: str = "") -> str:
    """'N pending changes VERB (positions a..b)', or 'no pending changes'."""
    if span is None:
        return "no pending changes"
    plural = "" if span.count == 1 else "s"
    return f"{span.count} pending change{plural}{' ' + verb if verb else ''} (positions {span.first}..{span.last})"


def fold_line(changes: dict[str, ChangeSpan]) -> str:
    """The build's one line on pending changes: what it folded, kept or discarded."""
    verbs = ("folded", "kept", "discarded")
    return ", ".join(said(changes[verb], verb) for verb in verbs if verb in changes) or "no pending changes"
