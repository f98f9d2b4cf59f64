"""The overlay's changed documents in log-structured chunks, against the same changes made from
scratch into one chunk (with the chunks merged as the service merges them, and never merged):
after every write of a random sequence (upserts new and stored, deletes,
attribute changes, in batches), the live snapshot holds the same documents, hides the same stored
rows, counts the same, and an exact search over it returns the same ids and scores."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index_builder.artifact.journal import ATTRIBUTES, DELETE, UPSERT, Change, Journal
from index_builder.retrieval.faiss_params import EF_SEARCH
from index_builder.retrieval.scoring import Prepared
from service.core.chunks import scanned
from service.core.config import OverlaySettings
from service.core.loader import spaces_of
from service.core.overlay import MERGE_RATIO, Overlay, Snapshot
from service.core.part import Part, load_parts, search_parts
from service.core.query import Answer, Hidden, Query, SearchOptions
from service.settings import ServiceSettings
from tests.builder.helpers import active_manifest
from tests.conftest import build_branded

DIM = 6
STORED = 40
ROOM = OverlaySettings(max_entries=10**6, max_bytes=10**9, max_ids=10**4, segment_bytes=1 << 20, index_rows=60)
LIMITS = ServiceSettings().limits


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, list[Part]]:
    tmp = tmp_path_factory.mktemp("chunks")
    docs = np.random.default_rng(3).standard_normal((STORED, DIM)).astype(np.float32)
    root = build_branded(tmp, "s", docs, "--shards", "2", "--index", "flat")
    path, manifest = active_manifest(root, "items")
    return path, manifest, load_parts(manifest, path, mmap=False)


ids = st.sampled_from([f"s{i}" for i in range(STORED)] + [f"n{i}" for i in range(12)])
op = st.tuples(
    st.sampled_from([UPSERT, UPSERT, DELETE, ATTRIBUTES]), st.lists(ids, min_size=1, max_size=4, unique=True)
)
writes = st.lists(st.lists(op, min_size=1, max_size=3), min_size=1, max_size=25)


def change(kind: str, doc_ids: list[str], rng: np.random.Generator) -> Change:
    if kind == UPSERT:
        vectors = rng.standard_normal((len(doc_ids), DIM)).astype(np.float32)
        attributes = tuple({"brand": f"b{rng.integers(5)}"} for _ in doc_ids)
        return Change(0, UPSERT, tuple(doc_ids), vectors, attributes)
    if kind == DELETE:
        return Change(0, DELETE, tuple(doc_ids))
    return Change(0, ATTRIBUTES, tuple(doc_ids), detail={"set": {"brand": f"b{rng.integers(5)}"}})


def standing(snapshot: Snapshot) -> dict[str, tuple[list[float], object]]:
    """Each changed document standing in the snapshot: its vector and attributes."""
    out = {}
    for chunk in snapshot.chunks:
        for row, doc_id in enumerate(chunk.ids):
            if not snapshot.hidden.hides(chunk.offset + row):
                assert doc_id not in out, f"{doc_id} stands twice"
                out[doc_id] = (chunk.vectors[row].tolist(), chunk.columns["brand"].value(row))
    return out


def exact(parts: list[Part], snapshot: Snapshot, metric: str, vector: np.ndarray, exact_search: bool = True) -> Answer:
    queries = Prepared.of(parts[0].indexes[metric].space, vector[None, :])
    knobs = {EF_SEARCH: 64}
    query = Query(metric, queries, SearchOptions(k=10, exact=exact_search), knobs, LIMITS, overlay=snapshot)
    return search_parts([*parts, *snapshot.chunks], query)


@pytest.mark.parametrize("ratio", [0, MERGE_RATIO], ids=["never-merged", "merged"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=writes, seed=st.integers(0, 2**16))
def test_live_chunks_hold_what_the_changes_made_from_scratch_hold(
    built: tuple[Path, object, list[Part]],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    ratio: int,
    batches: list,
    seed: int,
) -> None:
    monkeypatch.setattr("service.core.overlay.MERGE_RATIO", ratio)
    path, manifest, parts = built
    rng = np.random.default_rng(seed)
    root = tmp_path_factory.mktemp("journal")
    overlay = Overlay(Journal(root, "items"), manifest, path, spaces_of(manifest, path), parts, ROOM)  # type: ignore[arg-type]
    writer = Journal(root, "items")
    for batch in batches:
        for kind, doc_ids in batch:
            writer.append(change(kind, doc_ids, rng))
        overlay.refresh()
        assert overlay.position == writer.position
        live, whole = overlay.snapshot, overlay.view(overlay.position)
        assert len(whole.chunks) <= 1
        assert standing(live) == standing(whole)
        count = manifest.count  # type: ignore[attr-defined]
        assert live.hidden.rows[live.hidden.rows < count].tolist() == whole.hidden.rows.tolist()
        assert live.visible(count) == whole.visible(count)
        sizes = [len(chunk.ids) for chunk in live.chunks]
        assert all(older > ratio * newer for older, newer in zip(sizes, sizes[1:], strict=False))
        for metric in ("dot", "cosine"):
            query = rng.standard_normal(DIM).astype(np.float32)
            got, want = exact(parts, live, metric, query), exact(parts, whole, metric, query)
            assert got.labels.tolist() == want.labels.tolist()
            assert np.allclose(got.scores, want.scores)


@pytest.mark.parametrize("codes", ["float32", "sq8"])
def test_a_big_chunk_is_indexed_like_the_stored_parts_in_the_background(tmp_path: Path, codes: str) -> None:
    """Against an HNSW build, a chunk of at least index_rows changed documents gets an HNSW index
    of its own (the smaller one stays scanned), its rows and answers unchanged: exact searches
    equal, approximate ones find the exact top-10."""
    rng = np.random.default_rng(8)
    docs = rng.standard_normal((STORED, DIM)).astype(np.float32)
    root = build_branded(tmp_path, "s", docs, "--index", "hnsw", "--hnsw-codes", codes)
    path, manifest = active_manifest(root, "items")
    parts = load_parts(manifest, path, mmap=False)
    overlay = Overlay(Journal(root, "items"), manifest, path, spaces_of(manifest, path), parts, ROOM)
    for count in (400, 30):
        fresh = [f"n{len(overlay.pending.upserts) + i}" for i in range(count)]
        overlay.write(Change(0, UPSERT, tuple(fresh), rng.standard_normal((count, DIM)).astype(np.float32)))
    deadline = time.monotonic() + 60
    while scanned(overlay.snapshot.chunks[0], manifest):
        assert time.monotonic() < deadline, "the big chunk was not indexed"
        time.sleep(0.05)
    live, whole = overlay.snapshot, overlay.view(overlay.position)
    assert [len(c.ids) for c in live.chunks] == [400, 30] and scanned(live.chunks[1], manifest)
    described = live.describe(manifest.count)
    assert (described["chunks"], described["scanned_rows"], described["indexing_rows"]) == (2, 30, 0)
    assert standing(live) == standing(whole)
    for metric in ("dot", "cosine"):
        assert not live.chunks[0].indexes[metric].exact
        for query in rng.standard_normal((10, DIM)).astype(np.float32):
            got, want = exact(parts, live, metric, query), exact(parts, whole, metric, query)
            assert got.labels.tolist() == want.labels.tolist()
            approximate = exact(parts, live, metric, query, exact_search=False)
            assert approximate.labels.tolist() == want.labels.tolist()


def test_hidden_rows_answer_membership() -> None:
    hidden = Hidden(np.array([2, 5, 9], dtype=np.int64))
    assert [row for row in range(11) if hidden.hides(row)] == [2, 5, 9]
