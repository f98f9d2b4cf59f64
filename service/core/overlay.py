"""Changes between rebuilds: a version's view of its collection's change journal.

Every worker tails the journal (index_builder.artifact.journal) and keeps, per served version,
the net effect of the data changes that apply to it (artifact.lifecycle: those it carries, then
the journal's after its fold point, less the spans set aside): the stored rows deleted, replaced
or re-attributed (hidden inside every part's search, so k results still come back) and the
changed documents, held as one more, in-memory part searched exactly and merged by true score.
A request takes one `Snapshot` and keeps it, so it sees the changes all at once or not at all.
Writes (`Overlay.write`) go through the journal's lock: caught up, checked, appended, fsynced.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from index_builder.artifact.attributes import Column, column_of
from index_builder.artifact.journal import DELETE, SET_ASIDE, UPSERT, Change, Journal, Pending
from index_builder.artifact.lifecycle import carried_changes, in_spans, locked
from index_builder.artifact.manifest import Manifest
from index_builder.retrieval.ann import ServedIndex
from index_builder.retrieval.scoring import doc_scales, indexed_rows
from index_builder.retrieval.spaces import Layout, MetricSpace
from service.core.config import OverlaySettings
from service.core.errors import Unavailable
from service.core.part import Part
from service.core.query import Hidden

log = logging.getLogger(__name__)

NO_ROWS = np.empty(0, dtype=np.int64)
VIEWS_KEPT = 4
"""Earlier views of the changes kept for scrolls pinned to them."""
ENTRY_OVERHEAD = 200
"""Bytes an overlay entry costs beyond its vector: dict slots, the id, index and row bookkeeping."""


@dataclass(frozen=True)
class Snapshot:
    """The changes after the version's build, as of journal position `position`."""

    position: int
    hidden: Hidden
    delta: Part | None
    deleted: frozenset[str]
    memory_bytes: int = 0
    upserted: int = 0
    patched: int = 0

    def in_delta(self, doc_id: str) -> bool:
        """Whether the document stands as changed since the build (upserted, or re-attributed)."""
        return self.delta is not None and doc_id in self.delta.rows_by_id

    def changed(self, doc_id: str) -> bool:
        """Whether the stored document of this id no longer stands as built."""
        return doc_id in self.deleted or self.in_delta(doc_id)

    def vector(self, doc_id: str) -> np.ndarray | None:
        """The vector of a changed document as (1, d) float32, or None."""
        if self.delta is None or not self.in_delta(doc_id):
            return None
        row = self.delta.rows_by_id[doc_id]
        return np.asarray(self.delta.vectors[row : row + 1])

    def without_changed(self, ids: list[list[str]], scores: list[list[float | None]]) -> list[list[float | None]]:
        """A stored part's scores of candidate lists, None where the stored document no longer stands."""
        return [
            [None if self.changed(c) else v for c, v in zip(candidates, values, strict=True)]
            for candidates, values in zip(ids, scores, strict=True)
        ]

    def stored(self) -> Snapshot:
        """What the stored parts need of the changes, and a Ray replica is sent: the rows hidden."""
        return Snapshot(self.position, self.hidden, None, frozenset())

    def visible(self, built: int) -> int:
        """Documents standing now, of the `built` the version was built with."""
        return built - len(self.hidden.rows) + (0 if self.delta is None else len(self.delta.ids))

    def describe(self, built: int) -> dict[str, int]:
        return {
            "journal_position": self.position,
            "built_position": built,
            "pending_deletes": len(self.deleted),
            "pending_upserts": self.upserted,
            "pending_attribute_changes": self.patched,
            "memory_bytes": self.memory_bytes,
        }


@dataclass
class Written:
    """What one accepted call did: its journal position, and the ids it did not find."""

    position: int
    count: int
    unknown: list[str] = field(default_factory=list)


Document = tuple[np.ndarray, dict[str, Any] | None]


def changed_documents(pending: Pending, parts: list[Part]) -> dict[str, Document]:
    """The documents that stand changed: every upserted one, then every stored one with pending
    attribute changes (its stored vector, its stored attributes with the changes merged in)."""
    out = dict(pending.upserts)
    for part in parts:
        for doc_id in pending.patches:
            row = part.rows_by_id.get(doc_id)
            if row is None:
                continue
            stored = {name: column.value(row) for name, column in part.columns.items()}
            out[doc_id] = (np.asarray(part.vectors[row], dtype=np.float32), {**stored, **pending.patches[doc_id]})
    return out


def delta_part(
    documents: dict[str, Document], manifest: Manifest, spaces: dict[str, MetricSpace], offset: int
) -> tuple[Part | None, int]:
    """The changed documents as an exactly searched part numbered from `offset`, and its bytes."""
    if not documents:
        return None, 0
    ids = list(documents)
    vectors = np.stack([documents[i][0] for i in ids]).astype(np.float32)
    indexes = {}
    for name, space in spaces.items():
        scales = doc_scales(space, vectors, len(vectors))
        rows = indexed_rows(space, scales)
        flat = faiss.IndexIDMap(faiss.IndexFlatIP(manifest.dim))
        if len(rows):
            flat.add_with_ids(space.prepare_documents(vectors[rows]), rows)
        indexes[name] = ServedIndex.of([flat], space, Layout.IP, 1, vectors, scales)
    values = [documents[i][1] or {} for i in ids]
    columns: dict[str, Column] = {
        key: column_of(entry.type, [v.get(key) for v in values]) for key, entry in manifest.attributes.items()
    }
    part = Part(
        ids=np.array(ids, dtype=object),
        vectors=vectors,
        indexes=indexes,
        offset=offset,
        columns=columns,
    )
    return part, entry_bytes(vectors, len(spaces))


def entry_bytes(vectors: np.ndarray, metrics: int) -> int:
    """Memory the upserted documents `vectors` take: raw, one prepared copy per metric, bookkeeping."""
    return vectors.nbytes * (1 + metrics) + len(vectors) * ENTRY_OVERHEAD


class Overlay:
    """One version's overlay: the changes it carries, then the journal after its fold point minus
    the spans set aside (artifact.lifecycle), refreshed and written."""

    def __init__(
        self,
        journal: Journal,
        manifest: Manifest,
        path: Path,
        spaces: dict[str, MetricSpace],
        parts: list[Part],
        settings: OverlaySettings,
    ) -> None:
        self.journal, self.manifest, self.spaces = journal, manifest, spaces
        self.parts = parts
        self.settings = settings
        self.spans = {(s.first, s.last) for s in manifest.set_aside}
        self.carried = carried_changes(manifest, path)
        self._lock = threading.Lock()
        self._views: OrderedDict[int, Snapshot] = OrderedDict()
        self.position = manifest.journal_position
        self.snapshot = Snapshot(self.position, Hidden(NO_ROWS), None, frozenset())
        self._restart([])
        try:
            with self._lock, locked(journal) as caught_up:
                self._apply(caught_up)
        except OSError as exc:
            log.warning("change journal %s cannot be locked (%s): changes are read, not written", journal.path, exc)
            self.refresh()

    def _restart(self, journal: list[Change]) -> None:
        """The overlay made anew: the carried changes (never set aside for this version), then the
        journal's data changes that apply (after a span was set aside, those outside it)."""
        self.pending = Pending(position=self.manifest.journal_position)
        self._applied: list[Change] = []
        self._views.clear()
        self._hidden = NO_ROWS
        for change in self.carried:
            self._take(change)
        for change in journal:
            self._take(change)
            self._applied.append(change)
        self._publish(reshaped=True)

    def refresh(self) -> None:
        """Apply what other workers (or processes) wrote since the last look."""
        with self._lock:
            self._apply(self.journal.read_new())

    def view(self, position: int) -> Snapshot:
        """The changes as they stood at an earlier `position` (what a scroll pinned), made from the
        changes applied since the build; the current ones when it is now or later."""
        with self._lock:
            if position >= self.position:
                return self.snapshot
            found = self._views.get(position)
            if found is None:
                changes = [*self.carried, *(c for c in self._applied if c.position <= position)]
                found = self._views[position] = self._made(position, changes)
                while len(self._views) > VIEWS_KEPT:
                    self._views.popitem(last=False)
            return found

    def _made(self, position: int, changes: list[Change]) -> Snapshot:
        """A snapshot made from scratch out of data changes."""
        pending = Pending.of(changes)
        ids = list(pending.touched())
        hidden = np.unique(np.concatenate([NO_ROWS, *(p.known_rows(ids) + p.offset for p in self.parts)]))
        delta, memory = delta_part(
            changed_documents(pending, self.parts), self.manifest, self.spaces, self.manifest.count
        )
        deleted = frozenset(pending.deletes)
        return Snapshot(position, Hidden(hidden), delta, deleted, memory, len(pending.upserts), len(pending.patches))

    def _take(self, change: Change) -> bool:
        """Apply one data change; whether it may change the changed documents (a delete only does
        when it removes one of them)."""
        changed = self.pending.upserts.keys() | self.pending.patches.keys()
        reshaped = change.op != DELETE or bool(changed & set(change.ids))
        self.pending.apply(change)
        found = [part.known_rows(list(change.ids)) + part.offset for part in self.parts]
        self._hidden = np.union1d(self._hidden, np.concatenate(found))
        return reshaped

    def _apply(self, changes: list[Change]) -> None:
        reshaped = False
        for change in changes:
            if change.position <= self.position:
                continue
            self.position = change.position
            if change.op == SET_ASIDE:
                span = (int(change.detail["first"]), int(change.detail["last"]))
                self.spans.add(span)
                if any(in_spans(c.position, [span]) for c in self._applied):
                    self._restart([c for c in self._applied if not in_spans(c.position, [span])])
            elif change.is_data and not in_spans(change.position, sorted(self.spans)) and self._fits(change):
                reshaped = self._take(change) or reshaped
                self._applied.append(change)
        self._publish(reshaped)

    def _fits(self, change: Change) -> bool:
        """Whether an upsert's vectors have this version's dimension: another dimension belongs to
        another embedding model, and its documents are not this version's to serve."""
        if change.vectors is None or change.vectors.shape[1] == self.manifest.dim:
            return True
        log.warning(
            "%s version %s (dimension %d): upsert at journal position %d has dimension %d; not applied here",
            self.manifest.collection,
            self.manifest.version,
            self.manifest.dim,
            change.position,
            change.vectors.shape[1],
        )
        return False

    def _publish(self, reshaped: bool) -> None:
        delta, memory = self.snapshot.delta, self.snapshot.memory_bytes
        if reshaped:
            documents = changed_documents(self.pending, self.parts)
            delta, memory = delta_part(documents, self.manifest, self.spaces, self.manifest.count)
        deleted = frozenset(self.pending.deletes)
        upserted, patched = len(self.pending.upserts), len(self.pending.patches)
        hidden = Hidden(self._hidden)
        self.snapshot = Snapshot(self.position, hidden, delta, deleted, memory, upserted, patched)

    def _entries(self) -> int:
        return len(self.pending.deletes) + len(self.pending.upserts) + len(self.pending.patches)

    def _check_room(self, ids: list[str], vectors: np.ndarray | None) -> None:
        """Unavailable (503) once the overlay would pass its caps: a rebuild folds it in."""
        touched = self.pending.touched()
        entries = self._entries() + sum(1 for i in ids if i not in touched)
        added = 0 if vectors is None else entry_bytes(vectors, len(self.spaces))
        memory = self.snapshot.memory_bytes + added
        if entries > self.settings.max_entries or memory > self.settings.max_bytes:
            raise Unavailable(
                f"the change overlay of {self.manifest.collection!r} is full ({self._entries()} pending changes, "
                f"{self.snapshot.memory_bytes} bytes; limits DOTCOS_OVERLAY_MAX_ENTRIES={self.settings.max_entries}, "
                f"DOTCOS_OVERLAY_MAX_BYTES={self.settings.max_bytes}): run `dotcos-build build --name "
                f"{self.manifest.collection} --from-current` to fold the changes into a new version"
            )

    def standing(self, ids: list[str]) -> set[str]:
        """The ids the collection holds now: stored and not deleted, or upserted."""
        stored = {i for part in self.parts for i in ids if i in part.rows_by_id}
        return {i for i in ids if i in self.pending.upserts or (i in stored and i not in self.pending.deletes)}

    def write(self, draft: Change) -> Written:
        """Append one change durably (blocking: call off the event loop) and apply it here at once.
        A delete or an attribute change applies to the ids the collection holds; the others are
        reported as unknown and nothing is written for them."""
        with self._lock, locked(self.journal) as caught_up:
            self._apply(caught_up)
            unknown: list[str] = []
            if draft.op != UPSERT:
                standing = self.standing(list(draft.ids))
                unknown = [i for i in draft.ids if i not in standing]
                draft = replace(draft, ids=tuple(i for i in draft.ids if i in standing))
                if not draft.ids:
                    return Written(self.position, 0, unknown)
            self._check_room(list(draft.ids), draft.vectors)
            try:
                change = self.journal.append(draft)
            except OSError as exc:
                raise Unavailable(f"the change journal {self.journal.path} cannot be written: {exc}") from None
            self._apply([change])
            return Written(change.position, len(change.ids), unknown)


def refresh_all(overlays: list[Overlay]) -> None:
    """Apply what the journal gained to every served version's overlay (one that fails retries next round)."""
    for overlay in overlays:
        try:
            overlay.refresh()
        except Exception:
            log.exception("reading the change journal of %s failed; retrying", overlay.manifest.collection)
