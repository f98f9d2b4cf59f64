"""Reading documents back: by id, page by page under a filter (a scroll), and counted.

Every answer is the collection as it stands: the served version's documents with the pending
changes applied (the overlay is brought up to date with the journal first, so a change any
worker acknowledged is seen). A scroll pins the version and the journal position its first page
saw, in its cursor: every later page reads that same state, so each document passing the filter
comes back exactly once however many writes land meanwhile. Documents come in the version's row
order, part after part, then the changed documents.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from functools import partial
from typing import Any

from index_builder.artifact.errors import InputError
from service.core.errors import Gone
from service.core.filters import Node
from service.core.overlay import Snapshot
from service.core.part import Doc, Part, count_of, page_of
from service.core.version import Version

MAX_PAGE = 1000


@dataclass(frozen=True)
class Page:
    """One page of a scroll, and the cursor of the next (None after the last)."""

    documents: list[Doc]
    next_cursor: str | None


def fields(version: Version, with_attributes: bool) -> tuple[str, ...]:
    return tuple(version.manifest.attributes) if with_attributes else ()


async def current(version: Version) -> Snapshot:
    """The changes as they stand now, the overlay first caught up with the journal."""
    await asyncio.to_thread(version.overlay.refresh)
    return version.overlay.snapshot


async def get(
    version: Version, ids: list[str], with_vectors: bool, with_attributes: bool
) -> tuple[list[Doc], list[str]]:
    """The documents of `ids` that stand now, in the order asked, and the ids that do not."""
    changes = await current(version)
    found = await version.documents(ids, changes, fields(version, with_attributes), with_vectors)
    return [found[i] for i in ids if i in found], [i for i in ids if i not in found]


async def count(version: Version, where: Node | None) -> int:
    """How many documents pass the filter now."""
    changes = await current(version)
    stored = sum(await version.parts.each(count_of, where, changes.hidden))
    return stored + await asyncio.to_thread(_changed_count, changes, where)


def _changed_count(changes: Snapshot, where: Node | None) -> int:
    """How many changed documents pass the filter, over every chunk in one trip off the event loop."""
    return sum(count_of(chunk, where, changes.hidden) for chunk in changes.chunks)


@dataclass(frozen=True)
class Cursor:
    """Where a scroll stands: its version, the journal position it pinned, the next version-wide
    row, and which filter it pages through."""

    version: str
    position: int
    row: int
    filter: str

    def encode(self) -> str:
        text = json.dumps({"v": self.version, "p": self.position, "r": self.row, "f": self.filter})
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            return cls(str(raw["v"]), int(raw["p"]), int(raw["r"]), str(raw["f"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise InputError("cursor: not a cursor this service gave; start the scroll without one") from None


def filter_key(raw: Any) -> str:
    """A short name of a filter as given, the same whatever the order of its keys."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


async def scroll(
    version: Version, where: Node | None, raw_filter: Any, cursor: str | None, page: tuple[int, bool, bool]
) -> Page:
    """One page of the documents passing the filter, as the collection stood when the scroll began."""
    limit, with_vectors, with_attributes = page
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit: must be between 1 and {MAX_PAGE}, got {limit}")
    key = filter_key(raw_filter)
    if cursor is None:
        changes = await current(version)
        start = Cursor(version.version, changes.position, 0, key)
    else:
        start = Cursor.decode(cursor)
        _check_pin(version, start, key)
        if start.position > version.overlay.position:
            await asyncio.to_thread(version.overlay.refresh)
    view = version.overlay.view(start.position)
    docs, row = await _collect(version, where, view, start, (limit, fields(version, with_attributes), with_vectors))
    following = None if row is None else Cursor(start.version, start.position, row, key).encode()
    return Page(docs, following)


def _check_pin(version: Version, cursor: Cursor, key: str) -> None:
    if cursor.version != version.version:
        raise Gone(
            f"cursor: the scroll began on version {cursor.version} of {version.collection!r}, which is no longer "
            f"served (now {version.version}); start the scroll again without a cursor"
        )
    if cursor.filter != key:
        raise InputError("cursor: made for another filter; send the filter the scroll began with, or start again")


async def _changed_page(chunk: Part, *args: Any) -> tuple[list[Doc], int | None]:
    """A page of a chunk of changed documents (page_of), off the event loop."""
    return await asyncio.to_thread(page_of, chunk, *args)


async def _collect(
    version: Version, where: Node | None, view: Snapshot, start: Cursor, page: tuple[int, tuple[str, ...], bool]
) -> tuple[list[Doc], int | None]:
    """Documents from the cursor's row on, part after part and then the changed ones, until the
    page is full; and the version-wide row the next page starts at (None: nothing is left)."""
    limit, wanted, with_vectors = page
    hidden = view.hidden
    pin = (where, start.position)
    docs: list[Doc] = []
    offset = 0
    stored = [(entry.count, partial(version.parts.at, i, page_of)) for i, entry in enumerate(version.manifest.parts())]
    changed = [(len(chunk.ids), partial(_changed_page, chunk)) for chunk in view.chunks]
    for size, pages in [*stored, *changed]:
        if start.row < offset + size:
            rest = (limit - len(docs), wanted, with_vectors)
            found, following = await pages(where, hidden, pin, max(0, start.row - offset), rest)
            docs += found
            if following is not None:
                return docs, offset + following
            if len(docs) == limit:
                return docs, offset + size
        offset += size
    return docs, None
