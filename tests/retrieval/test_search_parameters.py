"""Per-call SearchParameters: shared only while read-only, fresh whenever a filter rides along."""

from __future__ import annotations

import faiss
import numpy as np

from index_builder.retrieval.faiss_params import EF_SEARCH, NPROBE, search_parameters


def test_unfiltered_parameters_are_shared_per_knob_value() -> None:
    first, again, other = (
        search_parameters(EF_SEARCH, 64),
        search_parameters(EF_SEARCH, 64),
        search_parameters(EF_SEARCH, 128),
    )
    assert first is again and first is not other
    assert (first.efSearch, other.efSearch) == (64, 128)
    assert search_parameters(NPROBE, 8).nprobe == 8
    assert search_parameters(None, None) is None


def test_filtered_parameters_are_fresh_and_leave_the_shared_ones_alone() -> None:
    selector = faiss.IDSelectorBatch(np.arange(3, dtype=np.int64))
    filtered = search_parameters(EF_SEARCH, 64, selector)
    assert filtered is not search_parameters(EF_SEARCH, 64)
    assert filtered.efSearch == 64 and filtered.sel is not None
    assert search_parameters(EF_SEARCH, 64).sel is None
    flat = search_parameters(None, None, selector)
    assert flat is not None and flat.sel is not None
