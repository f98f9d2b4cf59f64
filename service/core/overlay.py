"""Changes between rebuilds: a version's view of its collection's change journal.

Every worker tails the journal (index_builder.artifact.journal) and keeps, per served version,
the net effect of the data changes that apply to it (artifact.lifecycle: those it carries, then
the journal's after its fold point, less the spans set aside): the stored rows deleted, replaced
or re-attributed (hidden inside every part's search, so k results still come back) and the
changed documents, held in in-memory chunks searched exactly and merged by true score.
Each batch of changes appends one chunk, numbered on from the last, and hides the rows it
supersedes, so a write costs what it holds rather than what is pending; trailing chunks of
similar size are merged (a log-structured merge), which keeps them few and the cost amortised;
a big chunk is indexed in the background (service.core.chunks).
A request takes one `Snapshot` and keeps it, so it sees the changes all at once or not at all.
Writes (`Overlay.write`) go through the journal's lock: caught up, checked, appended, fsynced.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from index_builder.artifact.journal import DELETE, SET_ASIDE, UPSERT, Change, Journal, Pending
from index_builder.artifact.lifecycle import carried_changes, in_spans, locked
from index_builder.artifact.manifest import Manifest
from index_builder.retrieval.spaces import MetricSpace
from service.core.chunks import Document, entry_bytes, index_later, make_chunk, scanned
from service.core.config import OverlaySettings
from service.core.errors import Unavailable
from service.core.part import Part
from service.core.query import Hidden

log = logging.getLogger(__name__)

NO_ROWS = np.empty(0, dtype=np.int64)
VIEWS_KEPT = 4
"""Earlier views of the changes kept for scrolls pinned to them."""
MERGE_RATIO = 4
"""The last chunk is merged into the one before while that one holds at most this many times its
rows: chunk sizes then fall geometrically (a few dozen chunks at most) and each document is
copied a bounded number of times per size class."""


@dataclass(frozen=True)
class Snapshot:
    """The changes after the version's build, as of journal position `position`."""

    position: int
    hidden: Hidden
    chunks: tuple[Part, ...]
    """The changed documents, oldest first; rows superseded since are in `hidden`."""
    deleted: frozenset[str]
    memory_bytes: int = 0
    upserted: int = 0
    patched: int = 0
    indexing: int = 0
    """Rows of the chunks being indexed in the background."""

    def holder(self, doc_id: str) -> Part | None:
        """The chunk holding the document's standing changed version (None: unchanged, or deleted)."""
        for chunk in reversed(self.chunks):
            row = chunk.rows_by_id.get(doc_id)
            if row is not None:
                return None if self.hidden.hides(chunk.offset + row) else chunk
        return None

    def in_delta(self, doc_id: str) -> bool:
        """Whether the document stands as changed since the build (upserted, or re-attributed)."""
        return self.holder(doc_id) is not None

    def changed(self, doc_id: str) -> bool:
        """Whether the stored document of this id no longer stands as built."""
        return doc_id in self.deleted or self.in_delta(doc_id)

    def vector(self, doc_id: str) -> np.ndarray | None:
        """The vector of a changed document as (1, d) float32, or None."""
        chunk = self.holder(doc_id)
        if chunk is None:
            return None
        row = chunk.rows_by_id[doc_id]
        return np.asarray(chunk.vectors[row : row + 1])

    def by_chunk(self, ids: list[str]) -> list[tuple[Part, list[str]]]:
        """The changed documents among `ids`, grouped by the chunk holding each."""
        held: dict[int, list[str]] = {}
        for doc_id in ids:
            chunk = self.holder(doc_id)
            if chunk is not None:
                held.setdefault(id(chunk), []).append(doc_id)
        return [(chunk, held[id(chunk)]) for chunk in self.chunks if id(chunk) in held]

    def held_by(
        self, chunk: Part | None, ids: list[list[str]], scores: list[list[float | None]]
    ) -> list[list[float | None]]:
        """Scores of candidate lists from `chunk` (None: a stored part), None where that is not
        where the candidate's standing document lives."""

        def standing(doc_id: str) -> bool:
            return not self.changed(doc_id) if chunk is None else self.holder(doc_id) is chunk

        return [
            [v if standing(c) else None for c, v in zip(candidates, values, strict=True)]
            for candidates, values in zip(ids, scores, strict=True)
        ]

    def stored(self) -> Snapshot:
        """What the stored parts need of the changes, and a Ray replica is sent: the stored rows hidden."""
        rows = self.hidden.rows
        if self.chunks:
            rows = rows[: np.searchsorted(rows, self.chunks[0].offset)]
        return Snapshot(self.position, Hidden(rows), (), frozenset())

    def visible(self, built: int) -> int:
        """Documents standing now, of the `built` the version was built with: the stored and changed
        rows less those hidden."""
        return built + sum(len(chunk.ids) for chunk in self.chunks) - len(self.hidden.rows)

    def describe(self, built: int) -> dict[str, int]:
        return {
            "journal_position": self.position,
            "built_position": built,
            "pending_deletes": len(self.deleted),
            "pending_upserts": self.upserted,
            "pending_attribute_changes": self.patched,
            "memory_bytes": self.memory_bytes,
            "chunks": len(self.chunks),
            "scanned_rows": sum(len(c.ids) for c in self.chunks if any(i.exact for i in c.indexes.values())),
            "indexing_rows": self.indexing,
        }


@dataclass
class Written:
    """What one accepted call did: its journal position, and the ids it did not find."""

    position: int
    count: int
    unknown: list[str] = field(default_factory=list)


def changed_document(pending: Pending, parts: list[Part], doc_id: str) -> Document | None:
    """The document of `doc_id` if it stands changed: as upserted, or, with pending attribute
    changes, its stored vector and its stored attributes with the changes merged in."""
    if doc_id in pending.upserts:
        return pending.upserts[doc_id]
    patch = pending.patches.get(doc_id)
    if patch is None:
        return None
    for part in parts:
        row = part.rows_by_id.get(doc_id)
        if row is not None:
            stored = {name: column.value(row) for name, column in part.columns.items()}
            return np.asarray(part.vectors[row], dtype=np.float32), {**stored, **patch}
    return None


def changed_documents(pending: Pending, parts: list[Part]) -> dict[str, Document]:
    """The documents that stand changed: every upserted one, then every re-attributed stored one."""
    found = ((doc_id, changed_document(pending, parts, doc_id)) for doc_id in [*pending.upserts, *pending.patches])
    return {doc_id: document for doc_id, document in found if document is not None}


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
        self.snapshot = Snapshot(self.position, Hidden(NO_ROWS), (), frozenset())
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
        self._chunks: list[Part] = []
        self._standing: dict[str, int] = {}
        """Per changed document, the version-wide row of its standing version in the chunks."""
        self._tail: dict[str, Document] = {}
        """The changed documents of the batch being applied: the next chunk."""
        self._deleted: frozenset[str] | None = None
        self._indexing: dict[int, Part] = {}
        """The chunks being indexed in the background, by id (held, so an id is not reused)."""
        for change in self.carried:
            self._take(change)
        for change in journal:
            self._take(change)
            self._applied.append(change)
        self._publish()

    def refresh(self) -> None:
        """Apply what other workers (or processes) wrote since the last look."""
        with self._lock:
            self._apply(self.journal.read_new())

    def view(self, position: int) -> Snapshot:
        """The changes as they stood at `position` (what a scroll pinned; now when it is later),
        made from the changes applied since the build into one chunk, so that a document's row
        depends on the changes alone, never on how the writes came in."""
        with self._lock:
            position = min(position, self.position)
            found = self._views.get(position)
            if found is None:
                changes = [*self.carried, *(c for c in self._applied if c.position <= position)]
                found = self._views[position] = self._made(position, changes)
                while len(self._views) > VIEWS_KEPT:
                    self._views.popitem(last=False)
            return found

    def _made(self, position: int, changes: list[Change]) -> Snapshot:
        """A snapshot made from scratch out of data changes, its changed documents in one chunk."""
        pending = Pending.of(changes)
        ids = list(pending.touched())
        hidden = np.unique(np.concatenate([NO_ROWS, *(p.known_rows(ids) + p.offset for p in self.parts)]))
        documents = changed_documents(pending, self.parts)
        chunks: tuple[Part, ...] = ()
        memory = 0
        if documents:
            chunks = (make_chunk(documents, self.manifest, self.spaces, self.manifest.count),)
            memory = entry_bytes(chunks[0].vectors, len(self.spaces))
        deleted = frozenset(pending.deletes)
        return Snapshot(position, Hidden(hidden), chunks, deleted, memory, len(pending.upserts), len(pending.patches))

    def _take(self, change: Change) -> None:
        """Apply one data change: hide the stored rows and the changed versions it supersedes, and
        put the documents it leaves changed in the next chunk."""
        if change.op == DELETE or (change.op == UPSERT and not self.pending.deletes.isdisjoint(change.ids)):
            self._deleted = None
        self.pending.apply(change)
        ids = list(change.ids)
        superseded = np.array([self._standing.pop(i) for i in ids if i in self._standing], dtype=np.int64)
        self._hide(np.concatenate([superseded, *(part.known_rows(ids) + part.offset for part in self.parts)]))
        for doc_id in ids:
            self._tail.pop(doc_id, None)
            document = changed_document(self.pending, self.parts, doc_id)
            if document is not None:
                self._tail[doc_id] = document

    def _hide(self, rows: np.ndarray) -> None:
        """Add version-wide rows to the sorted hidden ones, in time linear in those already hidden."""
        rows = np.unique(rows)
        at = np.searchsorted(self._hidden, rows)
        known = np.zeros(len(rows), dtype=bool)
        if len(self._hidden):
            known = self._hidden[np.minimum(at, len(self._hidden) - 1)] == rows
        self._hidden = np.insert(self._hidden, at[~known], rows[~known])

    def _apply(self, changes: list[Change]) -> None:
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
                self._take(change)
                self._applied.append(change)
        self._publish()

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

    def _publish(self) -> None:
        """Make the batch's changed documents the next chunk, merge trailing chunks, and publish."""
        if self._tail:
            self._append(self._tail)
            self._tail = {}
            self._merge()
            self._index_big()
        if self._deleted is None:
            self._deleted = frozenset(self.pending.deletes)
        self.snapshot = Snapshot(
            self.position,
            Hidden(self._hidden),
            tuple(self._chunks),
            self._deleted,
            sum(entry_bytes(chunk.vectors, len(self.spaces)) for chunk in self._chunks),
            len(self.pending.upserts),
            len(self.pending.patches),
            self._indexing_rows(),
        )

    def _append(self, documents: dict[str, Document]) -> None:
        """Changed documents as a new chunk, numbered on from the last one."""
        offset = self._chunks[-1].offset + len(self._chunks[-1].ids) if self._chunks else self.manifest.count
        self._chunks.append(make_chunk(documents, self.manifest, self.spaces, offset))
        self._standing.update((doc_id, offset + row) for row, doc_id in enumerate(documents))

    def _merge(self) -> None:
        """Merge the last two chunks while the older holds at most MERGE_RATIO times the newer's
        rows: their standing documents become one chunk in their place, superseded rows dropped."""
        while len(self._chunks) > 1 and len(self._chunks[-2].ids) <= MERGE_RATIO * len(self._chunks[-1].ids):
            newer, older = self._chunks.pop(), self._chunks.pop()
            self._hidden = self._hidden[: np.searchsorted(self._hidden, older.offset)]
            standing = [
                doc_id
                for chunk in (older, newer)
                for row, doc_id in enumerate(chunk.ids)
                if self._standing.get(doc_id) == chunk.offset + row
            ]
            documents = {i: doc for i in standing if (doc := changed_document(self.pending, self.parts, i)) is not None}
            if documents:
                self._append(documents)

    def _index_big(self) -> None:
        """Have every chunk of at least DOTCOS_OVERLAY_INDEX_ROWS rows indexed like the stored parts."""
        for chunk in self._chunks:
            big = len(chunk.ids) >= self.settings.index_rows
            if big and id(chunk) not in self._indexing and scanned(chunk, self.manifest):
                self._indexing[id(chunk)] = chunk
                index_later(chunk, self.manifest, self._indexed)

    def _indexed(self, chunk: Part, twin: Part) -> None:
        """Serve the indexed twin of a chunk from the next snapshot on, if the chunk was not merged away."""
        with self._lock:
            self._indexing.pop(id(chunk), None)
            if any(held is chunk for held in self._chunks):
                self._chunks = [twin if held is chunk else held for held in self._chunks]
            self.snapshot = replace(self.snapshot, chunks=tuple(self._chunks), indexing=self._indexing_rows())

    def _indexing_rows(self) -> int:
        return sum(len(chunk.ids) for chunk in self._indexing.values())

    def _entries(self) -> int:
        return len(self.pending.deletes) + len(self.pending.upserts) + len(self.pending.patches)

    def _check_room(self, ids: list[str], vectors: np.ndarray | None) -> None:
        """Unavailable (503) once the overlay would pass its caps: a rebuild folds it in."""
        pending = self.pending
        new = sum(1 for i in ids if i not in pending.deletes and i not in pending.upserts and i not in pending.patches)
        entries = self._entries() + new
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
