"""The write side of changes between rebuilds: checked once, then journaled by the version's overlay
(off the event loop: a write waits for the journal's lock and its fsync)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from index_builder.artifact.errors import InputError
from index_builder.artifact.journal import ATTRIBUTES, DELETE, UPSERT, Change
from service.core.config import OverlaySettings
from service.core.errors import TooLarge, Unavailable
from service.core.overlay import Overlay, Written, check_ids, check_patch, check_upsert
from service.core.version import Version


def _overlay(version: Version, ids: list[str], settings: OverlaySettings) -> Overlay:
    if version.overlay is None:
        raise Unavailable(
            f"collection {version.collection!r} takes no changes in this deployment (parts on Ray Serve); "
            "rebuild it to change its documents"
        )
    if len(ids) > settings.max_ids:
        raise TooLarge(f"ids: {len(ids)} ids exceed the limit of {settings.max_ids} per call (DOTCOS_MAX_CHANGE_IDS)")
    return version.overlay


async def delete(version: Version, ids: list[str], settings: OverlaySettings) -> Written:
    """Delete the ids the collection holds; the others are reported, not an error."""
    overlay = _overlay(version, ids, settings)
    check_ids(ids)
    return await asyncio.to_thread(overlay.write, Change(0, DELETE, tuple(ids)))


async def set_attributes(
    version: Version, ids: list[str], values: dict[str, Any], unset: list[str], settings: OverlaySettings
) -> Written:
    """Merge attribute values into the documents the collection holds (the others are reported),
    leaving their vectors and other attributes as they stand."""
    overlay = _overlay(version, ids, settings)
    check_ids(ids)
    detail = check_patch(version.manifest, values, unset)
    return await asyncio.to_thread(overlay.write, Change(0, ATTRIBUTES, tuple(ids), detail=detail))


async def upsert(
    version: Version,
    ids: list[str],
    vectors: np.ndarray | None,
    attributes: list[Any] | None,
    settings: OverlaySettings,
) -> Written:
    """Insert or replace documents; every check passes before anything is written."""
    overlay = _overlay(version, ids, settings)
    if vectors is None:
        raise InputError(f"vectors: {len(ids)} vectors expected (one per id), got 0")
    checked = check_upsert(version.manifest, version.spaces, ids, vectors, attributes)
    draft = Change(0, UPSERT, tuple(ids), vectors, None if checked is None else tuple(checked))
    return await asyncio.to_thread(overlay.write, draft)
