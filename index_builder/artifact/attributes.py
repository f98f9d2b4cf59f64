"""Document attributes as a version stores them: columnar .npy files per part, with the inverted
lists and sorted orders that make a filter cost what it selects.

Per attribute and part (files `attr.<name>.<array><part suffix>.npy`, all memory-mapped):

- keyword, boolean: `codes` (int32 per row; the value's position in the version's dictionary,
  -1 for null) and `order` (the non-null rows sorted by code, then row: one inverted list per value).
- keyword list: `offsets` (int64, n + 1), `codes` (int32 per listed value), `order` (the row of
  every listed value, sorted by code, then row) and `nulls` (bool per row; an empty list is not null).
- integer, float: `values` (int64 / float64 per row, 0 where null), `nulls` and `order` (the
  non-null rows sorted by value, then row).

Keyword dictionaries (sorted distinct values) are shared by all parts in `attributes.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from index_builder.artifact.errors import ArtifactError
from index_builder.retrieval.rowsets import RowSet, rows_of

DICTIONARY_FILE = "attributes.json"


class AttributeType(StrEnum):
    KEYWORD = "keyword"
    KEYWORDS = "keyword_list"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"

    @property
    def coded(self) -> bool:
        """Values held as codes into a dictionary (match and any select inverted lists)."""
        return self in (AttributeType.KEYWORD, AttributeType.KEYWORDS, AttributeType.BOOLEAN)

    @property
    def numeric(self) -> bool:
        return self in (AttributeType.INTEGER, AttributeType.FLOAT)


ARRAYS = {
    AttributeType.KEYWORD: ("codes", "order"),
    AttributeType.BOOLEAN: ("codes", "order"),
    AttributeType.KEYWORDS: ("offsets", "codes", "order", "nulls"),
    AttributeType.INTEGER: ("values", "nulls", "order"),
    AttributeType.FLOAT: ("values", "nulls", "order"),
}
BOOLEAN_VALUES = [False, True]


def attribute_file(name: str, array: str, part: str) -> str:
    """The file of one array of one attribute in one part ("" for an unsharded version)."""
    return f"attr.{name}.{array}{'.' + part if part else ''}.npy"


def attribute_files(types: dict[str, AttributeType], part: str) -> list[str]:
    return [attribute_file(name, array, part) for name, kind in types.items() for array in ARRAYS[kind]]


def _order(keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`rows` sorted by `keys`, ties by row (a stable sort of rows already in order)."""
    return rows[np.argsort(keys, kind="stable")].astype(np.int32)


def part_arrays(kind: AttributeType, column: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stored arrays of one part's column, from its codes (and offsets) or values and nulls."""
    if kind.numeric:
        rows = np.flatnonzero(~column["nulls"])
        return {**column, "order": _order(column["values"][rows], rows)}
    codes = column["codes"]
    if kind is AttributeType.KEYWORDS:
        owners = np.repeat(np.arange(len(column["offsets"]) - 1), np.diff(column["offsets"]))
        return {**column, "order": _order(codes, owners)}
    rows = np.flatnonzero(codes >= 0)
    return {**column, "order": _order(codes[rows], rows)}


def write_part(staging: Path, part: str, kind: AttributeType, name: str, column: dict[str, np.ndarray]) -> None:
    for array, values in part_arrays(kind, column).items():
        np.save(staging / attribute_file(name, array, part), values, allow_pickle=False)


def write_dictionaries(staging: Path, dictionaries: dict[str, list[str]]) -> None:
    (staging / DICTIONARY_FILE).write_text(json.dumps(dictionaries, ensure_ascii=False), encoding="utf-8")


@dataclass(frozen=True)
class Column:
    """One attribute of one loaded part: answers conditions as row sets and reads values back."""

    kind: AttributeType
    arrays: dict[str, np.ndarray]
    dictionary: list[Any]
    total: int
    lookup: np.ndarray
    """Coded kinds: where each code's inverted list starts in `order`; numeric: the non-null
    values in `order` (both derived once per load)."""

    @property
    def _codes(self) -> np.ndarray:
        return self.arrays["codes"]

    def matching(self, values: list[Any]) -> RowSet:
        """Rows holding any of `values` (coded kinds: their inverted lists; numeric: equal values)."""
        if self.kind.numeric:
            return _union_slices(self, [(v, v, True, True) for v in values])
        positions = {v: i for i, v in enumerate(self.dictionary)}
        starts = self.lookup
        order = self.arrays["order"]
        codes = [positions[v] for v in values if v in positions]
        found = [order[starts[c] : starts[c + 1]] for c in codes]
        return rows_of(np.concatenate([np.empty(0, np.int32), *found]), self.total)

    def within(self, low: float | None, high: float | None, low_open: bool, high_open: bool) -> RowSet:
        """Rows whose (numeric) value lies in the range; None bounds are open-ended."""
        return _union_slices(self, [(low, high, not low_open, not high_open)])

    def nulls(self) -> RowSet:
        if self.kind.coded and self.kind is not AttributeType.KEYWORDS:
            return rows_of(np.flatnonzero(self._codes < 0), self.total)
        return rows_of(np.flatnonzero(self.arrays["nulls"]), self.total)

    def value(self, row: int) -> Any:
        """The attribute of one row as JSON would hold it (None for null)."""
        if self.kind is AttributeType.KEYWORDS:
            if self.arrays["nulls"][row]:
                return None
            start, end = self.arrays["offsets"][row], self.arrays["offsets"][row + 1]
            return [self.dictionary[c] for c in self._codes[start:end]]
        if self.kind.coded:
            code = int(self._codes[row])
            return None if code < 0 else self.dictionary[code]
        if self.arrays["nulls"][row]:
            return None
        return self.arrays["values"][row].item()


def column_of(kind: AttributeType, values: list[Any]) -> Column:
    """An in-memory column of checked JSON values (None for null), with a dictionary of its own:
    how documents upserted between rebuilds are filtered like stored ones."""
    nulls = np.array([v is None for v in values], dtype=bool)
    dictionary: list[Any] = list(BOOLEAN_VALUES)
    if kind.numeric:
        dtype = np.int64 if kind is AttributeType.INTEGER else np.float64
        column = {"values": np.array([0 if v is None else v for v in values], dtype=dtype), "nulls": nulls}
    elif kind is AttributeType.BOOLEAN:
        column = {"codes": np.array([-1 if v is None else int(v) for v in values], dtype=np.int32)}
    else:
        lists = [([] if v is None else [v]) if kind is AttributeType.KEYWORD else (v or []) for v in values]
        dictionary = sorted({x for items in lists for x in items})
        position = {v: i for i, v in enumerate(dictionary)}
        codes = np.array([position[x] for items in lists for x in items], dtype=np.int32)
        if kind is AttributeType.KEYWORD:
            column = {"codes": np.array([position[v] if v is not None else -1 for v in values], dtype=np.int32)}
        else:
            offsets = np.concatenate([[0], np.cumsum([len(items) for items in lists])]).astype(np.int64)
            column = {"offsets": offsets, "codes": codes, "nulls": nulls}
    arrays = part_arrays(kind, column)
    return Column(kind, arrays, dictionary, len(values), _lookup(kind, arrays, len(dictionary)))


def _union_slices(column: Column, ranges: list[tuple[float | None, float | None, bool, bool]]) -> RowSet:
    """Rows whose value lies in any of the ranges (low, high, low inclusive, high inclusive)."""
    ordered, order = column.lookup, column.arrays["order"]
    found = []
    for low, high, low_in, high_in in ranges:
        start = 0 if low is None else int(np.searchsorted(ordered, low, side="left" if low_in else "right"))
        end = len(ordered) if high is None else int(np.searchsorted(ordered, high, side="right" if high_in else "left"))
        found.append(order[start : max(start, end)])
    return rows_of(np.concatenate([np.empty(0, np.int32), *found]), column.total)


def open_part(
    path: Path, part: str, types: dict[str, AttributeType], dictionaries: dict[str, list[Any]], total: int
) -> dict[str, Column]:
    """One part's attribute columns, memory-mapped, with their per-load lookup arrays."""
    columns = {}
    for name, kind in types.items():
        arrays = {a: _load(path / attribute_file(name, a, part), a, kind, total) for a in ARRAYS[kind]}
        dictionary = list(BOOLEAN_VALUES if kind is AttributeType.BOOLEAN else dictionaries.get(name, []))
        columns[name] = Column(kind, arrays, dictionary, total, _lookup(kind, arrays, len(dictionary)))
    return columns


def _load(path: Path, array: str, kind: AttributeType, total: int) -> np.ndarray:
    """One stored array, memory-mapped, refused when its length does not fit the part's rows."""
    try:
        values = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from None
    per_row = array in ("values", "nulls") or (array == "codes" and kind is not AttributeType.KEYWORDS)
    expected = total + 1 if array == "offsets" else total if per_row else None
    if values.ndim != 1 or (expected is not None and len(values) != expected):
        raise ArtifactError(f"{path}: {expected} values expected, got shape {values.shape}")
    return np.asarray(values)


def _lookup(kind: AttributeType, arrays: dict[str, np.ndarray], values: int) -> np.ndarray:
    if kind.numeric:
        return np.asarray(np.asarray(arrays["values"])[arrays["order"]])
    codes = np.asarray(arrays["codes"])
    counts = np.bincount(codes[codes >= 0], minlength=values)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def read_dictionaries(path: Path) -> dict[str, list[Any]]:
    file = path / DICTIONARY_FILE
    return dict(json.loads(file.read_text(encoding="utf-8"))) if file.is_file() else {}
