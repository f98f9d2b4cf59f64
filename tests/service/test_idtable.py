"""Ids to rows in bulk equal a dict lookup, for held, missing and repeated ids, on the hash path
and on the dict path a part with colliding hashes keeps; sorted_unique equals np.unique."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from index_builder.retrieval.rowsets import sorted_unique
from service.core.idtable import MISSING_ROW, IdTable, LazyIdTable

ids = st.lists(st.text(min_size=1, max_size=12), unique=True, max_size=200)


@given(stored=ids, asked=st.lists(st.text(min_size=1, max_size=12), max_size=100), pick=st.data())
def test_lookup_equals_a_dict(stored: list[str], asked: list[str], pick: st.DataObject) -> None:
    if stored:
        asked = asked + pick.draw(st.lists(st.sampled_from(stored), max_size=50))
    array = np.array(stored, dtype=object)
    by_id = {doc_id: row for row, doc_id in enumerate(stored)}
    want = [by_id.get(doc_id, MISSING_ROW) for doc_id in asked]
    for table in (IdTable.of(array, by_id), IdTable(array, by_id)):
        assert table.lookup(asked).tolist() == want


def test_an_id_whose_hash_matches_a_stored_one_is_still_checked() -> None:
    """A forged table whose row 1 carries the hash of "zzz" but holds "b": the hash matches, the id does not."""
    by_id = {"a": 0, "b": 1, "c": 2}
    hashed = IdTable.of(np.array(["a", "zzz", "c"], dtype=object), by_id)
    forged = replace(hashed, ids=np.array(["a", "b", "c"], dtype=object))
    assert forged.starts is not None
    assert forged.lookup(["zzz", "a", "c", "b"]).tolist() == [MISSING_ROW, 0, 2, MISSING_ROW]


def test_buckets_holding_several_hashes_are_read_to_their_end() -> None:
    stored = [f"item-{i}" for i in range(5000)]
    by_id = {doc_id: row for row, doc_id in enumerate(stored)}
    table = IdTable.of(np.array(stored, dtype=object), by_id)
    assert table.starts is not None and int(np.diff(table.starts).max()) >= 3
    asked = stored[::-1] + ["nope", "item-5000"]
    assert table.lookup(asked).tolist() == [by_id.get(doc_id, MISSING_ROW) for doc_id in asked]


@given(st.lists(st.integers(0, 50), max_size=100))
def test_sorted_unique_equals_numpy(rows: list[int]) -> None:
    array = np.array(rows, dtype=np.int64)
    assert sorted_unique(array).tolist() == np.unique(array).tolist()


def test_the_lazy_table_answers_short_and_long_lists_alike() -> None:
    stored = [f"d{i}" for i in range(500)]
    by_id = {doc_id: row for row, doc_id in enumerate(stored)}
    lazy = LazyIdTable(np.array(stored, dtype=object), by_id)
    for asked in (["d3", "nope"], [f"d{i}" for i in range(0, 1000, 7)]):
        want = [by_id.get(doc_id, MISSING_ROW) for doc_id in asked]
        assert lazy.lookup(asked).tolist() == want
