"""The write side of changes between rebuilds: every check a write needs, made once before anything
is written, then the change journaled by the version's overlay (off the event loop: a write waits
for the journal's lock and its fsync)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from index_builder.artifact.attributes import AttributeType
from index_builder.artifact.errors import InputError
from index_builder.artifact.journal import ATTRIBUTES, DELETE, UPSERT, Change
from index_builder.artifact.layout import first_bad_id
from index_builder.artifact.manifest import Manifest
from index_builder.retrieval.spaces import MetricSpace, row_norms
from service.core.config import OverlaySettings
from service.core.errors import TooLarge
from service.core.filters import check_value
from service.core.overlay import Overlay, Written
from service.core.query import check_finite
from service.core.version import Version


def _overlay(version: Version, ids: list[str], settings: OverlaySettings) -> Overlay:
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


def check_ids(ids: list[str], field_name: str = "ids") -> None:
    """Non-empty ids without line breaks, each once."""
    if not ids:
        raise InputError(f"{field_name}: give at least one id")
    bad = first_bad_id(ids)
    if bad is not None:
        i, doc_id, problem = bad
        raise InputError(
            f"{field_name}[{i}]: id {doc_id!r} {problem or 'appears twice in one call; send each id once'}"
        )


def check_upsert(
    manifest: Manifest,
    spaces: dict[str, MetricSpace],
    ids: list[str],
    vectors: np.ndarray,
    attributes: list[Any] | None,
) -> list[dict[str, Any] | None] | None:
    """Every check an upsert needs before anything is written; the attributes in stored form."""
    check_ids(ids)
    if len(vectors) != len(ids):
        raise InputError(f"vectors: {len(ids)} vectors expected (one per id), got {len(vectors)}")
    check_finite(vectors, manifest.dim, manifest.collection, "vectors")
    zero = row_norms(vectors) == 0
    if zero.any() and all(space.normalizes_queries for space in spaces.values()):
        row = int(np.flatnonzero(zero)[0])
        built = ", ".join(spaces)
        raise InputError(f"vectors[{row}]: zero-norm vector has no {built} score; nothing was written")
    if attributes is None:
        return None
    if len(attributes) != len(ids):
        raise InputError(f"attributes: {len(ids)} entries expected (one per id, null for none), got {len(attributes)}")
    return [_checked_attributes(manifest, raw, f"attributes[{i}]") for i, raw in enumerate(attributes)]


def _checked_attributes(manifest: Manifest, raw: Any, where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        raise InputError(f"{where}: expected an object of attribute values or null")
    known = manifest.attributes
    for key, value in raw.items():
        entry = known.get(key)
        if entry is None:
            listed = ", ".join(known) or "none (built without --attributes)"
            raise InputError(f"{where}.{key}: unknown attribute; collection {manifest.collection!r} has: {listed}")
        if value is None:
            continue
        if entry.type is AttributeType.KEYWORDS:
            if type(value) is not list:
                raise InputError(f"{where}.{key}: {key!r} is a keyword list, so the value must be a list of strings")
            for j, item in enumerate(value):
                check_value(key, entry.type, item, f"{where}.{key}[{j}]")
        else:
            check_value(key, entry.type, value, f"{where}.{key}")
    return dict(raw)


def check_patch(manifest: Manifest, values: dict[str, Any], unset: list[str]) -> dict[str, Any]:
    """An attribute change checked whole: known attributes, values of their types, each attribute
    set or unset (not both), at least one of them."""
    if not values and not unset:
        raise InputError("set, unset: give at least one attribute to set or unset")
    checked = _checked_attributes(manifest, values, "set") or {}
    seen: set[str] = set()
    for i, key in enumerate(unset):
        if key not in manifest.attributes:
            listed = ", ".join(manifest.attributes) or "none (built without --attributes)"
            raise InputError(f"unset[{i}]: unknown attribute {key!r}; collection {manifest.collection!r} has: {listed}")
        if key in checked or key in seen:
            raise InputError(f"unset[{i}]: {key!r} is named twice; set or unset each attribute once")
        seen.add(key)
    return {"set": checked, "unset": list(unset)}
