"""What each `dotcos-build` subcommand does and prints (stdout is for people and scripts)."""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from index_builder.artifact.errors import InputError, NotFoundError
from index_builder.artifact.integrity import verify_version
from index_builder.artifact.layout import list_collections, list_versions, read_current, version_dir
from index_builder.artifact.lifecycle import span_of
from index_builder.artifact.manifest import Manifest, read_manifest
from index_builder.artifact.querylog import log_path, read_sample
from index_builder.artifact.serving import read_aliases
from index_builder.demo import ensure_demo
from index_builder.fold import export_current
from index_builder.parts import build as build_version
from index_builder.pending import fold_line, restorable_from, said, standing
from index_builder.pipeline import BuildRequest, Sharding
from index_builder.progress import Progress
from index_builder.publish import activate, gc, new_staging_dir, new_version_name
from index_builder.restore import reapply as reapply_changes
from index_builder.restore import restore_position, restore_snapshot
from index_builder.retrieval.spaces import Metric
from index_builder.snapshot import write_snapshot
from index_builder.synthetic import TwoTowerSpec

log = logging.getLogger(__name__)


def _recall_line(manifest: Manifest) -> list[str]:
    lines = []
    for name, entry in manifest.metrics.items():
        index, check = entry.index, entry.index.self_check
        knob = ", ".join(f"{k}={v}" for k, v in index.search_params.items()) or "exact"
        recall = f"recall@10 {check.recall_at_10:.3f}" if check else "recall@10 n/a"
        source = f" ({check.queries} queries from {check.query_source})" if check else ""
        lines.append(f"  {name:<14} {index.kind:<7} {index.factory:<18} {index.layout:<13} {recall} at {knob}{source}")
    return lines


def _print_recall(manifest: Manifest) -> None:
    """Each metric's index and self-check, its attributes, and the estimate warning when it applies."""
    print("\n".join(_recall_line(manifest)))
    if manifest.attributes:
        described = (
            f"{name} {a.type}{f' ({a.distinct} values)' if a.distinct is not None else ''}, {a.null_count} null"
            for name, a in manifest.attributes.items()
        )
        print(f"  attributes: {'; '.join(described)}")
    warning = _estimate_warning(manifest)
    if warning:
        log.warning("%s", warning)


def _estimate_warning(manifest: Manifest) -> str | None:
    """A warning when user-facing metrics were tuned without user queries: the knob was chosen on
    proxies drawn from the documents' distribution (conservative, but an estimate)."""
    guessed = [
        name
        for name, entry in manifest.metrics.items()
        if entry.index.self_check is not None
        and entry.index.self_check.query_source == "documents"
        and not entry.index.exact
        and not Metric.parse(name).rule.whitened
    ]
    if not guessed:
        return None
    return (
        f"recall@10 of {', '.join(guessed)} is an estimate from queries drawn from the documents' distribution, "
        "not from user queries (the default knob is chosen conservatively and the service retunes it on live "
        "traffic): pass --queries with a sample of user vectors, or rebuild once the service has recorded traffic"
    )


def build(request: BuildRequest, progress: Progress) -> int:
    start = time.perf_counter()
    manifest = build_version(request, progress)
    elapsed = time.perf_counter() - start
    shards = f", {len(manifest.shards)} shards" if manifest.sharded else ""
    model = f", model {manifest.model}" if manifest.model else ""
    print(
        f"published {manifest.collection} version {manifest.version}: {manifest.count} vectors, "
        f"dim {manifest.dim}{shards}{model}, in {elapsed:.1f}s"
    )
    print(f"  {fold_line(manifest.changes)}")
    _print_recall(manifest)
    for name, reason in manifest.not_built.items():
        print(f"  {name:<14} not built: {reason}")
    profile = manifest.norm_profile
    bias = (
        ""
        if manifest.norm_bias_top5pct is None
        else f"; top-5% norms hold {manifest.norm_bias_top5pct:.0%} of exact dot top-10"
    )
    print(
        f"  norms: min {profile.min:.4g}, median {profile.median:.4g}, p99 {profile.p99:.4g}, "
        f"max {profile.max:.4g}, zero {profile.zero_count}{bias}"
    )
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in progress.timings.items())
    print(f"  stages: {stages}")
    return 0


def build_from_current(
    args: argparse.Namespace, root: Path, request_of: Callable[[], BuildRequest], progress: Progress
) -> int:
    """Build from the active version plus the change journal, written as an ordinary input first
    (in a staging directory of the collection, removed afterwards)."""
    flags = (
        ("--input", args.input),
        ("--ids", args.ids),
        ("--attributes-file", args.attributes_file),
        ("--changes-included-through", args.changes_included_through),
        ("--discard-changes", args.discard_changes),
    )
    given = [flag for flag, value in flags if value is not None and value is not False]
    if given:
        raise InputError(f"--from-current builds from the active version; leave out {', '.join(given)}")
    _, current = manifest_for(root, args.name, None)
    work = new_staging_dir(root, args.name, f"export-{new_version_name()}")
    try:
        folded = export_current(root, args.name, work)
        args.input, args.ids = str(folded.inputs.paths[0]), str((folded.inputs.id_paths or [])[0])
        args.attributes_file = str(folded.attributes.side_file) if folded.attributes else None
        args.metrics = args.metrics or ",".join(current.metrics)
        args.index = args.index or str(current.build_params.get("index", "flat"))
        args.hnsw_codes = args.hnsw_codes or current.build_params.get("hnsw_codes")
        args.filter_index = args.filter_index or current.build_params.get("filter_index")
        args.model = args.model or current.model
        request = request_of()
        extra = {**request.extra_params, "from_current": folded.source}
        return build(replace(request, fold=folded.fold, extra_params=extra), progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def demo(root: Path, spec: TwoTowerSpec, sharding: Sharding, progress: Progress) -> int:
    built = ensure_demo(root, spec, progress, sharding)
    print(f"demo collection {'built' if built else 'already present'} under {root}")
    return 0


def list_all(root: Path) -> int:
    collections = list_collections(root)
    if not collections:
        print(f"no collections under {root}")
    for name in collections:
        active = read_current(root, name)
        aliases = read_aliases(root, name)
        print(name)
        for version in list_versions(root, name):
            manifest = read_manifest(version_dir(root, name, version))
            mark = "*" if version == active else " "
            names = (["active"] if version == active else []) + [a for a, v in aliases.items() if v == version]
            model = f"  model {manifest.model}" if manifest.model else ""
            print(
                f"  {mark} {version}  {manifest.count} x {manifest.dim}  "
                f"{','.join(manifest.metrics)}{model}{'  (' + ', '.join(names) + ')' if names else ''}"
            )
    return 0


def manifest_for(root: Path, name: str, version: str | None) -> tuple[Path, Manifest]:
    version = version or read_current(root, name)
    path = version_dir(root, name, version)
    if not path.is_dir():
        known = ", ".join(list_versions(root, name)) or "none"
        raise NotFoundError(f"version {version!r} of {name!r} not found (published: {known})")
    return path, read_manifest(path)


def _query_log_lines(root: Path, manifest: Manifest) -> list[str]:
    """The size and age of each metric's query log (recorded traffic of the service)."""
    lines = []
    for metric in manifest.metrics:
        path = log_path(root, manifest.collection, metric)
        try:
            sample = read_sample(path)
        except ValueError as exc:
            lines.append(f"  query log {metric}: {exc}")
            continue
        if sample is not None:
            age = time.time() - sample.updated
            lines.append(
                f"  query log {metric}: {len(sample.vectors)} vectors sampled from {sample.seen} queries, "
                f"updated {age:.0f}s ago ({path})"
            )
    return lines


def _lifecycle_lines(root: Path, manifest: Manifest, active: bool) -> list[str]:
    """What the version did with pending changes and, for the active one, what is pending, set
    aside and restorable now."""
    carried = manifest.changes.get("carried")
    lines = [
        f"  fold point: journal position {manifest.journal_position}"
        + ("" if carried is None else f"; carries {said(carried)}"),
        f"  when built: {fold_line(manifest.changes)}",
    ]
    if manifest.restored_from:
        origin = ", ".join(f"{key} {value}" for key, value in manifest.restored_from.items())
        lines.append(f"  restored from: {origin}")
    if not active:
        return lines
    now = standing(root, manifest.collection)
    lines.append(f"  pending now: {said(span_of(now.pending()))}")
    for span in now.set_aside_now():
        lines.append(
            f"  set aside: {said(span)} by {span.reason} (`dotcos-build reapply --name {manifest.collection}`)"
        )
    first = restorable_from(now, root, manifest.collection)
    journal = f"positions {now.changes[0].position}..{now.end}" if now.changes else "empty"
    restore = "none" if first is None else f"positions {first}..{now.end}"
    lines.append(f"  journal: {journal}; restore points: {restore}")
    return lines


def inspect(root: Path, name: str, version: str | None, as_json: bool) -> int:
    _, manifest = manifest_for(root, name, version)
    if as_json:
        print(manifest.to_json(), end="")
        return 0
    active = read_current(root, name)
    print(
        f"collection {manifest.collection}, version {manifest.version}"
        f"{' (active)' if manifest.version == active else ''}"
    )
    print(
        f"  created {manifest.created_at.isoformat()}, {manifest.count} vectors, dim {manifest.dim}, "
        f"faiss {manifest.faiss_version}, schema {manifest.schema_version}"
        + (f", model {manifest.model}" if manifest.model else "")
    )
    for line in _lifecycle_lines(root, manifest, manifest.version == active):
        print(line)
    _print_recall(manifest)
    for line in _query_log_lines(root, manifest):
        print(line)
    for name_, entry in manifest.metrics.items():
        check = entry.index.self_check
        if check and check.sweep:
            points = ", ".join(f"{p.value}:{p.recall_at_10:.3f}" for p in check.sweep)
            print(f"  {name_} sweep of {check.param} (value:recall@10): {points}")
    profile = manifest.norm_profile
    print(
        f"  norms: min {profile.min:.4g}, median {profile.median:.4g}, p99 {profile.p99:.4g}, "
        f"max {profile.max:.4g}, zero {profile.zero_count}, norm bias {manifest.norm_bias_top5pct}"
    )
    if manifest.sharded:
        counts = ", ".join(f"{s.name} {s.count}" for s in manifest.shards)
        print(f"  {len(manifest.shards)} shards by {manifest.shard_key}: {counts}")
    for file, checksum in manifest.files.items():
        print(f"  {file:<24} {checksum.bytes:>12} bytes  sha256 {checksum.sha256[:16]}…")
    return 0


def verify(root: Path, name: str | None, version: str | None) -> int:
    targets = [(name, version)] if name else [(c, None) for c in list_collections(root)]
    for collection, wanted in targets:
        path, manifest = manifest_for(root, collection, wanted)
        verify_version(manifest, path)
        print(f"ok {collection} {manifest.version}: {len(manifest.files)} files, {len(manifest.metrics)} indexes")
    return 0


def activate_version(root: Path, name: str, version: str) -> int:
    previous = read_current(root, name)
    activate(root, name, version)
    now = standing(root, name)
    kept = span_of(now.pending())
    stay = "no pending changes on top of it" if kept is None else f"{said(kept)} stay on top of it"
    print(f"{name}: active version {previous} -> {version}; {stay}")
    return 0


def restore(root: Path, name: str, position: int | None, file: Path | None) -> int:
    """Point-in-time restore or restore from a snapshot; says what was carried and set aside."""
    done = restore_snapshot(root, name, file) if file is not None else restore_position(root, name, position or 0)
    source = done.manifest.restored_from or {}
    where = f"snapshot {file}" if file is not None else f"position {position}"
    print(f"{name}: restored {where} as version {done.manifest.version} (from version {source.get('version')})")
    print(f"  {said(done.carried, 'carried')}")
    if done.set_aside is not None:
        print(f"  {said(done.set_aside, 'set aside')}: `dotcos-build reapply --name {name}` applies them again")
    return 0


def snapshot(root: Path, name: str, out: Path) -> int:
    written = write_snapshot(root, name, out)
    print(
        f"{name}: snapshot of version {written.version} cut at position {written.position} "
        f"({said(written.pending)}), {written.bytes} bytes -> {written.path}"
    )
    return 0


def reapply(root: Path, name: str, positions: tuple[int, int] | None) -> int:
    first, last = positions if positions is not None else (None, None)
    appended = reapply_changes(root, name, first, last)
    if not appended:
        print(f"{name}: no set-aside changes{'' if positions is None else f' in {first}..{last}'}; nothing re-applied")
        return 0
    originals = [int(c.detail["reapplied"]) for c in appended]
    print(
        f"{name}: re-applied {len(appended)} set-aside change(s) (positions {originals[0]}..{originals[-1]}) "
        f"as positions {appended[0].position}..{appended[-1].position}"
    )
    return 0


def collect(root: Path, name: str, keep: int) -> int:
    done = gc(root, name, keep)
    removed = f": {', '.join(done.removed)}" if done.removed else ""
    print(f"{name}: removed {len(done.removed)} version(s){removed}; kept {len(done.kept)}: {', '.join(done.kept)}")
    print(
        f"{name}: removed {len(done.segments_removed)} journal segment(s)"
        f"{': ' + ', '.join(p.name for p in done.segments_removed) if done.segments_removed else ''}; "
        f"kept {len(done.segments_kept)} from position {done.needed_from} on (needed by {done.needed_by})"
    )
    return 0
