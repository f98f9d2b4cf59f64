"""FAISS helpers both programs need: the query-time knob of an index and per-call parameters.

Query-time knobs always travel in a SearchParameters object passed to the call, never by
mutating the shared index, so concurrent requests cannot race on efSearch or nprobe.
"""

from __future__ import annotations

import functools
from pathlib import Path

import faiss

from index_builder.artifact.errors import ArtifactError

EF_SEARCH = "efSearch"
NPROBE = "nprobe"


def inner_index(index: faiss.Index) -> faiss.Index:
    """The index under an IDMap wrapper, as its concrete class."""
    if isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2):
        index = index.index
    return faiss.downcast_index(index)


def tuning_param(index: faiss.Index) -> str | None:
    """The knob trading recall for speed: efSearch (HNSW), nprobe (IVF) or None (exact)."""
    inner = inner_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        return EF_SEARCH
    if faiss.try_extract_index_ivf(inner) is not None:
        return NPROBE
    return None


def distances_per_search(index: faiss.Index, value: int | None) -> float:
    """About how many vectors one search compares the query with at this knob: efSearch times
    the graph's base-layer neighbours for HNSW, nprobe lists of average size for IVF, every
    vector otherwise (the planner weighs it against an exact scan of the passing documents)."""
    inner = inner_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        return float((value or inner.hnsw.efSearch) * inner.hnsw.nb_neighbors(0))  # type: ignore[attr-defined]
    ivf = faiss.try_extract_index_ivf(inner)
    if ivf is not None:
        return float(min(value or ivf.nprobe, ivf.nlist) * ivf.ntotal / max(ivf.nlist, 1))
    return float(index.ntotal)


def search_parameters(
    param: str | None, value: int | None, selector: faiss.IDSelector | None = None
) -> faiss.SearchParameters | None:
    """SearchParameters for one call, with the knob value and an optional id filter.

    Without a filter the object is shared by every call with the same knob (FAISS only reads
    it, and nothing here writes to it after creation), which saves its construction per query.
    """
    if selector is None:
        return _knob_parameters(param, value)
    params = _new_parameters(param, value)
    params.sel = selector
    return params


@functools.lru_cache(maxsize=256)
def _knob_parameters(param: str | None, value: int | None) -> faiss.SearchParameters | None:
    return _new_parameters(param, value) if param is not None else None


def _new_parameters(param: str | None, value: int | None) -> faiss.SearchParameters:
    if param == EF_SEARCH:
        hnsw = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        if value is not None:
            hnsw.efSearch = int(value)
        return hnsw  # type: ignore[no-any-return]
    if param == NPROBE:
        params = faiss.SearchParametersIVF()
        if value is not None:
            params.nprobe = int(value)
        return params
    return faiss.SearchParameters()


def read_index(path: Path, mmap: bool = True) -> faiss.Index:
    """Read an index file, memory-mapped where FAISS supports it for this index type."""
    try:
        if mmap:
            try:
                return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            except RuntimeError:
                pass
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise ArtifactError(f"cannot load FAISS index {path.name}: {message}") from None
