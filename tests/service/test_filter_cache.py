"""Evaluated filters kept per part: the same rows as a fresh evaluation, shared read-only, id lists
never kept, and the cache bounded by what its sets weigh."""

from __future__ import annotations

import numpy as np
import pytest

from index_builder.artifact.layout import read_current, version_dir
from index_builder.artifact.manifest import read_manifest
from index_builder.retrieval.rowsets import Mask, Rows, listed, nbytes
from service.core.filters import HasId, Match, Tree, evaluate
from service.core.lru import Lru
from service.core.part import Part, load_parts
from tests.conftest import build_branded


@pytest.fixture(scope="module")
def part(tmp_path_factory: pytest.TempPathFactory) -> Part:
    tmp = tmp_path_factory.mktemp("filter-cache")
    vectors = np.random.default_rng(3).standard_normal((600, 8)).astype(np.float32)
    root = build_branded(tmp, "d", vectors)
    path = version_dir(root, "items", read_current(root, "items"))
    return load_parts(read_manifest(path), path, mmap=False)[0]


def test_a_tree_is_evaluated_once_and_shared_read_only(part: Part) -> None:
    tree = Tree(must=(Match("brand", ("b1",)),), must_not=(Match("brand", ("b2",)),))
    first = part.passing(tree)
    again = part.passing(Tree(must=(Match("brand", ("b1",)),), must_not=(Match("brand", ("b2",)),)))
    assert again is first
    fresh = evaluate(tree, part.columns, part.known_rows, len(part.ids))
    assert np.array_equal(listed(first, len(part.ids)), listed(fresh, len(part.ids)))
    assert np.array_equal(listed(first, len(part.ids)), np.arange(1, 600, 3))
    held = first.mask if isinstance(first, Mask) else first.rows
    with pytest.raises(ValueError, match="read-only"):
        held[0] = 0


def test_trees_naming_ids_are_evaluated_each_time(part: Part) -> None:
    tree = Tree(must=(Match("brand", ("b0",)),), must_not=(HasId(("d0", "d3")),))
    first, again = part.passing(tree), part.passing(tree)
    assert first is not again
    assert np.array_equal(listed(first, len(part.ids)), np.arange(6, 600, 3))


def test_the_cache_drops_the_least_recently_used_past_its_budget() -> None:
    sets = {name: Rows(np.arange(size, dtype=np.int64)) for name, size in (("a", 4), ("b", 4), ("c", 4), ("big", 9))}
    cache: Lru[Rows] = Lru(nbytes(sets["a"]) * 2, nbytes)
    cache.put("a", sets["a"])
    cache.put("b", sets["b"])
    assert cache.get("a") is sets["a"]
    cache.put("c", sets["c"])
    assert cache.get("b") is None
    assert cache.get("a") is sets["a"] and cache.get("c") is sets["c"]
    cache.put("big", sets["big"])
    assert cache.get("big") is None
    assert cache.get("a") is sets["a"]
    cache.put("a", sets["c"])
    assert cache.get("a") is sets["c"] and cache.get("c") is sets["c"]
