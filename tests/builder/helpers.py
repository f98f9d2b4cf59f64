"""Reading back what a build published, for assertions."""

from __future__ import annotations

from pathlib import Path

from index_builder.artifact.layout import read_current, version_dir
from index_builder.artifact.manifest import Manifest, read_manifest


def active_manifest(root: Path, name: str) -> tuple[Path, Manifest]:
    path = version_dir(root, name, read_current(root, name))
    return path, read_manifest(path)
