"""Sets of a part's rows, as a filter selects them, in the form that keeps each cheap.

A filter's conditions each select rows (an inverted list, a slice of a sorted column); the
boolean tree combines them. Small sets stay sorted row arrays (`Rows`), "everything but a few"
stays the few (`AllBut`, as an exclusion list is), and large sets become one boolean per row
(`Mask`), so no combination costs more than the rows it names or one pass over the part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import faiss
import numpy as np

DENSE_FRACTION = 1 / 32
"""Sets naming more than this share of a part's rows are held as a mask (a byte per row)."""
BITMAP_FRACTION = 1 / 1024
"""Listed rows (a `Rows` or an `AllBut`) naming more than this share of a part's rows are handed to
FAISS as a bitmap rather than a hash set: over a million rows a bitmap costs ~50 us to make, a
hash set of 10,000 rows ~0.5 ms, and it makes each check an HNSW search does several times
slower (an HNSW search excluding 10,000 of 200,000 rows: 740 us with the set, 134 us with a bitmap)."""


@dataclass(frozen=True)
class Rows:
    """Exactly these rows (sorted, unique int64)."""

    rows: np.ndarray


@dataclass(frozen=True)
class AllBut:
    """Every row except these (sorted, unique int64)."""

    rows: np.ndarray


@dataclass(frozen=True)
class Mask:
    """The rows whose flag is set (bool, one per row of the part)."""

    mask: np.ndarray
    held: dict[int, tuple[np.ndarray, Mask]] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def bits(self) -> np.ndarray:
        """The flags packed as FAISS's bitmap selector reads them, made once per mask (the mask of
        the rows changes hide serves every search of a snapshot; a cached filter serves many)."""
        return np.packbits(self.mask, bitorder="little")

    def within(self, indexed: np.ndarray) -> Mask:
        """The rows also set in `indexed`, made once per mask and index (with its bits), so a kept
        mask costs a cosine search no new mask; the index's mask is held, keeping its id unique."""
        found = self.held.get(id(indexed))
        if found is None:
            found = self.held[id(indexed)] = (indexed, Mask(self.mask & indexed))
        return found[1]


RowSet = Rows | AllBut | Mask


def sorted_unique(rows: np.ndarray) -> np.ndarray:
    """The rows sorted, each once: a sort and one comparison of neighbours (several times faster
    than np.unique's hash table on the 10^4-row lists an exclusion names)."""
    out = np.sort(np.asarray(rows, dtype=np.int64))
    if len(out) < 2:
        return out
    keep = np.empty(len(out), dtype=bool)
    keep[0] = True
    np.not_equal(out[1:], out[:-1], out=keep[1:])
    return out[keep]


def rows_of(rows: np.ndarray, total: int) -> RowSet:
    """A set of (unsorted, possibly repeated) rows in its cheap form."""
    if len(rows) > total * DENSE_FRACTION:
        mask = np.zeros(total, dtype=bool)
        mask[rows] = True
        return Mask(mask)
    return Rows(sorted_unique(rows))


def _mask(s: RowSet, total: int) -> np.ndarray:
    if isinstance(s, Mask):
        return s.mask
    mask = np.zeros(total, dtype=bool) if isinstance(s, Rows) else np.ones(total, dtype=bool)
    mask[s.rows] = isinstance(s, Rows)
    return mask


def _compact(mask: np.ndarray) -> RowSet:
    """A mask kept as one, or as rows when few are set."""
    count = int(np.count_nonzero(mask))
    if count > len(mask) * DENSE_FRACTION:
        return Mask(mask)
    return Rows(np.flatnonzero(mask).astype(np.int64))


def negate(s: RowSet, total: int) -> RowSet:
    if isinstance(s, Rows):
        return AllBut(s.rows)
    if isinstance(s, AllBut):
        return Rows(s.rows)
    return _compact(~s.mask)


def intersect(a: RowSet, b: RowSet, total: int) -> RowSet:
    if isinstance(a, AllBut) and not len(a.rows):
        return b
    if isinstance(b, AllBut) and not len(b.rows):
        return a
    if isinstance(a, Rows) and isinstance(b, Rows):
        return Rows(np.intersect1d(a.rows, b.rows, assume_unique=True))
    if isinstance(a, AllBut) and isinstance(b, AllBut):
        return AllBut(np.union1d(a.rows, b.rows))
    if isinstance(a, AllBut):
        a, b = b, a
    if isinstance(b, AllBut) and isinstance(a, Rows):
        return Rows(np.setdiff1d(a.rows, b.rows, assume_unique=True))
    if isinstance(b, AllBut):
        mask = _mask(a, total).copy()
        mask[b.rows] = False
        return _compact(mask)
    if isinstance(a, Rows):
        a, b = b, a
    if isinstance(b, Rows):
        return Rows(b.rows[_mask(a, total)[b.rows]])
    return _compact(_mask(a, total) & _mask(b, total))


def union(a: RowSet, b: RowSet, total: int) -> RowSet:
    return negate(intersect(negate(a, total), negate(b, total), total), total)


def count(s: RowSet, total: int) -> int:
    if isinstance(s, Rows):
        return len(s.rows)
    if isinstance(s, AllBut):
        return total - len(s.rows)
    return int(np.count_nonzero(s.mask))


def restrict(s: RowSet, indexed: np.ndarray | None) -> RowSet:
    """The set within the rows an index holds (`indexed` as a mask; None when it holds all); an
    AllBut keeps only the excluded rows the index holds, so its count is against the index's size."""
    if indexed is None:
        return s
    if isinstance(s, Mask):
        return s.within(indexed)
    return type(s)(s.rows[indexed[s.rows]])


def nbytes(s: RowSet) -> int:
    """Memory the set holds (what a cache of sets weighs): a mask with its packed bits and the
    restriction a cosine index's searches keep beside it (Mask.within), with its bits too."""
    if isinstance(s, Mask):
        return s.mask.nbytes * 9 // 4
    return int(s.rows.nbytes)


def read_only(s: RowSet) -> RowSet:
    """The set with its array frozen, as a cache shares it among requests (no operation here
    writes into a set it is given; this makes any that did fail instead of corrupting others)."""
    (s.mask if isinstance(s, Mask) else s.rows).flags.writeable = False
    return s


def listed(s: RowSet, total: int) -> np.ndarray:
    """The set's rows, sorted (for an exact scan over them)."""
    if isinstance(s, Rows):
        return s.rows
    return np.flatnonzero(_mask(s, total)).astype(np.int64)


def contains(s: RowSet, rows: np.ndarray) -> np.ndarray:
    """Whether each of `rows` is in the set (bool per row)."""
    if isinstance(s, Mask):
        return np.asarray(s.mask[rows])
    found = np.isin(rows, s.rows)
    return found if isinstance(s, Rows) else ~found


def selector(s: RowSet, total: int) -> list[Any]:
    """FAISS's selector chain for the set of a part of `total` rows, outermost last; the list keeps
    what the selector points to (inner selectors, the bitmap) alive during the call."""
    if not isinstance(s, Mask) and len(s.rows) > total * BITMAP_FRACTION:
        s = Mask(_mask(s, total))
    if isinstance(s, Rows):
        return [faiss.IDSelectorBatch(s.rows)]
    if isinstance(s, AllBut):
        inner = faiss.IDSelectorBatch(s.rows)
        return [inner, faiss.IDSelectorNot(inner)]
    return [s.bits, faiss.IDSelectorBitmap(len(s.mask), faiss.swig_ptr(s.bits))]
