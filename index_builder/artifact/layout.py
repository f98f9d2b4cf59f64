"""Where things live under the index root, how names are checked, and durable file writes.

ROOT/<collection>/versions/<version>/manifest.json
ROOT/<collection>/versions/<version>/...      (files listed in the manifest)
ROOT/<collection>/CURRENT                      name of the active version
ROOT/<collection>/.staging-*/                  builds in progress (never loaded)
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from index_builder.artifact.errors import ArtifactError, InputError, NotFoundError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CURRENT_FILE = "CURRENT"
VERSIONS_DIR = "versions"
MANIFEST_FILE = "manifest.json"
STAGING_PREFIX = ".staging-"


def check_name(kind: str, name: str) -> str:
    """Accept collection/version names that are safe as one path component."""
    if not NAME_PATTERN.match(name) or ".." in name:
        raise InputError(
            f"{kind} name {name!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def id_problem(value: str) -> str | None:
    """What makes a document id unusable (ids are stored one per line), or None."""
    if not value.strip():
        return "is empty"
    if "\n" in value or "\r" in value:
        return "contains a line break"
    return None


def first_bad_id(ids: list[str]) -> tuple[int, str, str | None] | None:
    """The first id that is unusable (its position, the id, what is wrong: `id_problem`) or that
    repeats an earlier one (what is wrong: None); None when every id is usable and once."""
    seen: set[str] = set()
    for position, value in enumerate(ids):
        problem = id_problem(value)
        if problem or value in seen:
            return position, value, problem
        seen.add(value)
    return None


def collection_dir(root: Path, collection: str) -> Path:
    return root / check_name("collection", collection)


def version_dir(root: Path, collection: str, version: str) -> Path:
    return collection_dir(root, collection) / VERSIONS_DIR / check_name("version", version)


def list_collections(root: Path) -> list[str]:
    """Collections under root that have a CURRENT pointer, sorted."""
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and NAME_PATTERN.match(p.name) and (p / CURRENT_FILE).is_file()
    )


def list_versions(root: Path, collection: str) -> list[str]:
    """Published versions of a collection, oldest first (names sort by creation time)."""
    base = collection_dir(root, collection) / VERSIONS_DIR
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if NAME_PATTERN.match(p.name) and (p / MANIFEST_FILE).is_file())


def read_current(root: Path, collection: str) -> str:
    """The active version's name, validated; NotFoundError when the collection has none."""
    pointer = collection_dir(root, collection) / CURRENT_FILE
    try:
        text = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise NotFoundError(f"collection {collection!r} has no active version under {root}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {pointer}: {exc.strerror}") from None
    try:
        return check_name("version", text)
    except InputError as exc:
        raise ArtifactError(f"{pointer} is corrupt: {exc}") from None


def fsync_path(path: Path) -> None:
    """Flush a file or directory entry to stable storage."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Replace a small file atomically: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def sha256_file(path: Path, block_size: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block_size):
            digest.update(chunk)
    return digest.hexdigest()
