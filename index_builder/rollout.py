"""`alias` and `route`: which versions the service serves besides the active one, and how requests
with a route key are split over them and shadowed (index_builder.artifact.serving)."""

from __future__ import annotations

import argparse
from pathlib import Path

from index_builder.artifact.errors import InputError
from index_builder.artifact.integrity import verify_checksums
from index_builder.artifact.layout import read_current, version_dir
from index_builder.artifact.manifest import read_manifest
from index_builder.artifact.serving import (
    CURRENT_ARM,
    Route,
    Shadow,
    check_alias,
    parse_split,
    read_aliases,
    read_route,
    write_aliases,
    write_route,
)
from index_builder.commands import manifest_for


def alias(root: Path, name: str, given: str | None, removed: str | None) -> int:
    """Name a published version so that the service serves it beside the active one (or stop)."""
    aliases = read_aliases(root, name)
    if removed is not None:
        if removed not in aliases:
            raise InputError(f"--remove: {name!r} has no alias {removed!r} (aliases: {', '.join(aliases) or 'none'})")
        used = read_route(root, name)
        if used is not None and (removed in used.split or (used.shadow and used.shadow.arm == removed)):
            raise InputError(f"--remove: the route of {name!r} uses {removed!r}; change it first (`route --clear`)")
        version = aliases.pop(removed)
        write_aliases(root, name, aliases)
        print(f"{name}: alias {removed} removed (was version {version})")
        return 0
    assert given is not None
    label, sep, version = given.partition("=")
    if not sep or not version:
        raise InputError(f"--set: expected ALIAS=VERSION, got {given!r}")
    check_alias(label)
    path, manifest = manifest_for(root, name, version)
    verify_checksums(manifest, path)
    write_aliases(root, name, {**aliases, label: version})
    model = f" (model {manifest.model})" if manifest.model else ""
    print(f"{name}: alias {label} -> version {version}{model}")
    return 0


def route(root: Path, name: str, args: argparse.Namespace) -> int:
    """Write the collection's route (split and shadow), or clear it, checked against what is served."""
    if args.clear:
        write_route(root, name, None)
        print(f"{name}: route cleared; every request goes to the active version")
        return 0
    current = read_route(root, name) or Route()
    split = parse_split(args.split) if args.split else dict(current.split)
    shadow = None if args.no_shadow else current.shadow
    if args.shadow is not None:
        shadow = Shadow(arm=args.shadow, sample=args.sample)
    chosen = Route(split=split, shadow=shadow)
    served = _arm_models(root, name)
    for arm in [*chosen.split, *([chosen.shadow.arm] if chosen.shadow else [])]:
        if arm not in served:
            raise InputError(f"{name!r} serves no arm {arm!r}; arms: {', '.join(served)} (add one with `alias --set`)")
    if chosen.split and not any(chosen.split.values()):
        raise InputError("--split: give at least one arm a positive weight")
    if chosen.shadow is not None and served[chosen.shadow.arm] != served[CURRENT_ARM]:
        raise InputError(
            f"--shadow {chosen.shadow.arm}: its model {served[chosen.shadow.arm]!r} is not the active version's "
            f"{served[CURRENT_ARM]!r}; a shadow runs the same query vector, which only one tower made"
        )
    write_route(root, name, chosen)
    print(f"{name}: route {chosen.model_dump_json(exclude_none=True)}")
    return 0


def _arm_models(root: Path, name: str) -> dict[str, str | None]:
    """The model of every arm: the active version and each alias."""
    arms = {CURRENT_ARM: read_current(root, name), **read_aliases(root, name)}
    return {arm: read_manifest(version_dir(root, name, version)).model for arm, version in arms.items()}
