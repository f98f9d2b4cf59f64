"""The row-set algebra filters are evaluated with, against Python sets."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from index_builder.retrieval.ann import FILTER_BANDS, filter_band, filtered_knob
from index_builder.retrieval.faiss_params import EF_SEARCH, NPROBE
from index_builder.retrieval.rowsets import (
    BITMAP_FRACTION,
    AllBut,
    Mask,
    Rows,
    RowSet,
    contains,
    count,
    intersect,
    listed,
    negate,
    restrict,
    rows_of,
    selector,
    union,
)

TOTAL = 200


def as_set(s: RowSet) -> set[int]:
    return set(listed(s, TOTAL).tolist())


@st.composite
def rowsets(draw: st.DrawFn) -> tuple[RowSet, set[int]]:
    chosen = draw(st.sets(st.integers(0, TOTAL - 1), max_size=TOTAL))
    rows = np.array(sorted(chosen), dtype=np.int64)
    kind = draw(st.sampled_from(["rows", "allbut", "mask", "auto"]))
    if kind == "rows":
        return Rows(rows), chosen
    if kind == "allbut":
        return AllBut(np.array(sorted(set(range(TOTAL)) - chosen), dtype=np.int64)), chosen
    if kind == "mask":
        mask = np.zeros(TOTAL, bool)
        mask[rows] = True
        return Mask(mask), chosen
    return rows_of(np.concatenate([rows, rows]), TOTAL), chosen


@given(rowsets(), rowsets())
def test_set_operations_agree_with_python_sets(a: tuple[RowSet, set[int]], b: tuple[RowSet, set[int]]) -> None:
    (x, xs), (y, ys) = a, b
    everything = set(range(TOTAL))
    assert as_set(x) == xs and count(x, TOTAL) == len(xs)
    assert as_set(intersect(x, y, TOTAL)) == xs & ys
    assert as_set(union(x, y, TOTAL)) == xs | ys
    assert as_set(negate(x, TOTAL)) == everything - xs
    probe = np.arange(TOTAL)
    assert set(probe[contains(x, probe)].tolist()) == xs


@given(rowsets(), st.sets(st.integers(0, TOTAL - 1)))
def test_restrict_keeps_the_indexed_rows(a: tuple[RowSet, set[int]], held: set[int]) -> None:
    s, members = a
    indexed = np.zeros(TOTAL, bool)
    indexed[sorted(held)] = True
    restricted = restrict(s, indexed)
    if isinstance(s, AllBut):
        assert set(restricted.rows.tolist()) == (set(range(TOTAL)) - members) & held
    else:
        assert as_set(restricted) == members & held


def test_a_mask_is_restricted_once_per_index() -> None:
    """A kept mask (a cached filter, the rows a snapshot hides) serves every cosine search with one
    restricted mask and its packed bits, per index it is restricted to."""
    mask = Mask(np.arange(TOTAL) % 3 == 0)
    indexed, other = np.arange(TOTAL) % 2 == 0, np.arange(TOTAL) % 5 != 0
    first = restrict(mask, indexed)
    assert restrict(mask, indexed) is first
    assert as_set(first) == {row for row in range(TOTAL) if row % 6 == 0}
    assert as_set(restrict(mask, other)) == {row for row in range(TOTAL) if row % 3 == 0 and row % 5}
    assert restrict(mask, indexed) is first


@pytest.mark.parametrize("chosen", [2, 1000])
def test_selectors_admit_exactly_the_set(chosen: int) -> None:
    """Listed rows go to FAISS as a hash set while few (2 of 5,000), as a bitmap once many."""
    total = 5000
    rng = np.random.default_rng(0)
    data = rng.standard_normal((total, 4)).astype(np.float32)
    index = faiss.IndexFlatIP(4)
    index.add(data)
    picked = np.isin(np.arange(total), rng.choice(total, chosen, replace=False))
    for mask in (picked, ~picked):
        for s in (Rows(np.flatnonzero(mask)), AllBut(np.flatnonzero(~mask)), Mask(mask)):
            chain = selector(s, total)
            bitmap = isinstance(s, Mask) or len(s.rows) > total * BITMAP_FRACTION
            assert isinstance(chain[-1], faiss.IDSelectorBitmap) == bitmap
            params = faiss.SearchParameters()
            params.sel = chain[-1]
            _, found = index.search(data[:2], total, params=params)
            assert set(found[0][found[0] >= 0].tolist()) == set(np.flatnonzero(mask).tolist())


def test_bands_speak_for_the_more_selective_neighbour() -> None:
    assert filter_band(0.9) is None
    assert filter_band(0.5) == "0.5"
    assert filter_band(0.3) == "0.2"
    assert filter_band(0.001) == str(FILTER_BANDS[-1])


def test_filtered_knob_grows_with_selectivity_and_boost() -> None:
    assert filtered_knob(EF_SEARCH, 64, 10, 0.5) == 128
    assert filtered_knob(EF_SEARCH, 64, 10, 0.5, boost=2) == 256
    assert filtered_knob(EF_SEARCH, 4, 10, 1.0) == 10
    assert filtered_knob(NPROBE, 16, 10, 0.25) == 32
    assert filtered_knob(None, None, 10, 0.1) is None
