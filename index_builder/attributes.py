"""Reading document attributes for a build: columns of the input parquet or a side file keyed by
id, checked, typed, and put in the version's row order (the parts store their own rows).

The driver holds the attribute columns of the whole corpus (as Arrow arrays) while it builds;
vectors never pass through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from index_builder.artifact.attributes import AttributeType
from index_builder.artifact.errors import InputError
from index_builder.artifact.manifest import AttributeEntry
from index_builder.staging import InputSpec

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
SIDE_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".ndjson": "json"}
MIXED = re.compile(r"Column\(/([^/)]*)[^)]*\) changed from (\w+) to (\w+) in row (\d+)")


@dataclass(frozen=True)
class AttributeSpec:
    """Where attributes come from: input parquet columns, or a side file (all its columns but the
    id unless `columns` names some)."""

    columns: list[str] | None
    side_file: Path | None


@dataclass(frozen=True)
class Attributes:
    """The corpus's attributes in the version's row order, with their keyword dictionaries."""

    table: pa.Table
    types: dict[str, AttributeType]
    dictionaries: dict[str, list[str]]

    def entries(self) -> dict[str, AttributeEntry]:
        return {
            name: AttributeEntry(
                type=kind,
                null_count=self.table.column(name).null_count,
                distinct=len(self.dictionaries[name]) if name in self.dictionaries else None,
            )
            for name, kind in self.types.items()
        }


def attribute_type(name: str, kind: pa.DataType) -> AttributeType:
    """The attribute type of an Arrow column, or an InputError saying which types are supported."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return AttributeType.KEYWORD
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        value = kind.value_type
        if pa.types.is_string(value) or pa.types.is_large_string(value) or pa.types.is_null(value):
            return AttributeType.KEYWORDS
        raise InputError(f"attribute {name!r}: a list of {value}; only lists of strings (keyword lists) are supported")
    if pa.types.is_boolean(kind):
        return AttributeType.BOOLEAN
    if pa.types.is_integer(kind):
        return AttributeType.INTEGER
    if pa.types.is_floating(kind):
        return AttributeType.FLOAT
    if pa.types.is_null(kind):
        raise InputError(f"attribute {name!r} holds only nulls: its type cannot be read")
    raise InputError(
        f"attribute {name!r} has type {kind}; attributes are keyword (string), keyword list "
        "(list of strings), integer, float or boolean"
    )


ARROW_TYPES = {
    AttributeType.KEYWORD: pa.large_string(),
    AttributeType.KEYWORDS: pa.large_list(pa.large_string()),
    AttributeType.INTEGER: pa.int64(),
    AttributeType.FLOAT: pa.float64(),
    AttributeType.BOOLEAN: pa.bool_(),
}
"""The Arrow type each attribute type's arrays are made from."""


def _normalized(name: str, column: pa.ChunkedArray, kind: AttributeType, ids: list[str]) -> pa.ChunkedArray:
    """The column in the type its arrays are made from (strings, lists of strings, int64, float64);
    a bad value is named by its row and id."""
    target = ARROW_TYPES[kind]
    try:
        column = column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"attribute {name!r}: cannot be read as {kind} ({exc})") from None
    if kind is AttributeType.KEYWORDS and pc.any(pc.is_null(pc.list_flatten(column))).as_py():
        raise InputError(f"attribute {name!r} holds a null inside a list; leave it out of the list")
    if kind is AttributeType.FLOAT and pc.any(pc.is_nan(column)).as_py():
        row = int(np.flatnonzero(np.asarray(pc.fill_null(pc.is_nan(column), False)))[0])
        raise InputError(f"attribute {name!r} holds NaN at row {row} (id {ids[row]!r}); leave a missing value null")
    return column


def _check_names(names: list[str], reserved: set[str]) -> None:
    for name in names:
        if not NAME.fullmatch(name):
            raise InputError(f"attribute name {name!r}: use up to 64 letters, digits, '_', '-' or '.'")
        if name in reserved:
            raise InputError(f"attribute {name!r} is the input's id or vector column; ids are filtered with has_id")
    if len(set(names)) != len(names):
        raise InputError(f"--attributes names a column twice: {', '.join(names)}")


def _from_inputs(columns: list[str], inputs: InputSpec) -> pa.Table:
    if inputs.fmt != "parquet":
        raise InputError("--attributes reads columns of parquet input; for other input give --attributes-file")
    tables = []
    for path in inputs.paths:
        present = pq.read_schema(path).names
        missing = [c for c in columns if c not in present]
        if missing:
            raise InputError(f"{path}: no column {missing[0]!r} for --attributes (columns: {', '.join(present)})")
        tables.append(pq.read_table(path, columns=columns))
    try:
        return pa.concat_tables(tables)
    except pa.ArrowInvalid as exc:
        raise InputError(f"--attributes: the input files disagree on a column's type ({exc})") from None


def _read_side(path: Path) -> pa.Table:
    fmt = SIDE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"--attributes-file {path}: expected .parquet or .jsonl (JSON lines)")
    try:
        return pq.read_table(path) if fmt == "parquet" else pj.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        text = str(exc).splitlines()[0]
        mixed = MIXED.search(text)
        if mixed:
            column, was, now, row = mixed.groups()
            raise InputError(
                f"--attributes-file {path}: attribute {column!r} mixes {was} and {now} (row {row})"
            ) from None
        raise InputError(f"--attributes-file {path}: unreadable ({text})") from None


def _from_side_file(path: Path, columns: list[str] | None, id_column: str, ids: list[str]) -> pa.Table:
    """The side file's attribute columns reordered to the collection's ids (every id exactly once)."""
    table = _read_side(path)
    if id_column not in table.column_names:
        raise InputError(
            f"--attributes-file {path}: no id column {id_column!r} (columns: {', '.join(table.column_names)})"
        )
    names = columns if columns is not None else [c for c in table.column_names if c != id_column]
    missing_columns = [c for c in names if c not in table.column_names]
    if missing_columns:
        listed = ", ".join(c for c in table.column_names if c != id_column)
        raise InputError(f"--attributes-file {path}: no column {missing_columns[0]!r} (columns: {listed})")
    side_ids = [str(i) for i in table.column(id_column).to_pylist()]
    position = {doc_id: row for row, doc_id in enumerate(side_ids)}
    if len(position) != len(side_ids):
        seen: set[str] = set()
        again = next(i for i in side_ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise InputError(f"--attributes-file {path}: id {again!r} appears more than once")
    missing = [i for i in ids if i not in position]
    extra = len(side_ids) - (len(ids) - len(missing))
    if missing or extra:
        first = f" (first missing: {missing[0]!r})" if missing else ""
        raise InputError(
            f"--attributes-file {path}: ids do not match the collection: {len(missing)} of its "
            f"{len(ids)} ids missing{first}, {extra} ids not in it"
        )
    order = pa.array([position[i] for i in ids], type=pa.int64())
    return table.select(names).take(order)


def read_attributes(spec: AttributeSpec, inputs: InputSpec, ids: list[str], reserved: set[str]) -> Attributes:
    """Every attribute of the corpus, in row order, typed and checked; InputError names the problem."""
    if spec.side_file is not None:
        table = _from_side_file(spec.side_file, spec.columns, inputs.columns.id_column, ids)
    else:
        assert spec.columns is not None
        table = _from_inputs(spec.columns, inputs)
    _check_names(table.column_names, reserved)
    if not table.column_names:
        raise InputError("no attribute columns to store")
    if len(table) != len(ids):
        raise InputError(f"attribute columns hold {len(table)} rows for {len(ids)} documents")
    types = {name: attribute_type(name, table.schema.field(name).type) for name in table.column_names}
    columns = [_normalized(name, table.column(name), kind, ids) for name, kind in types.items()]
    table = pa.table(dict(zip(types, columns, strict=True)))
    dictionaries = {name: _dictionary(table.column(name), kind) for name, kind in types.items() if kind.coded}
    return Attributes(table, types, {k: v for k, v in dictionaries.items() if v is not None})


def _dictionary(column: pa.ChunkedArray, kind: AttributeType) -> list[str] | None:
    if kind is AttributeType.BOOLEAN:
        return None
    values = pc.list_flatten(column) if kind is AttributeType.KEYWORDS else column
    return sorted(v for v in pc.unique(values).to_pylist() if v is not None)


def part_columns(attributes: Attributes, rows: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """The arrays one part stores for its `rows` (global row numbers, in the part's order)."""
    part = attributes.table.take(pa.array(rows, type=pa.int64()))
    out = {}
    for name, kind in attributes.types.items():
        column = part.column(name).combine_chunks()
        nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if kind.numeric:
            filled = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
            out[name] = {
                "values": np.asarray(filled, np.int64 if kind is AttributeType.INTEGER else np.float64),
                "nulls": nulls,
            }
        elif kind is AttributeType.BOOLEAN:
            codes = np.where(nulls, -1, pc.fill_null(column, False).to_numpy(zero_copy_only=False)).astype(np.int32)
            out[name] = {"codes": codes}
        else:
            out[name] = _coded(column, kind, attributes.dictionaries[name], nulls)
    return out


def _coded(column: pa.Array, kind: AttributeType, dictionary: list[str], nulls: np.ndarray) -> dict[str, np.ndarray]:
    value_set = pa.array(dictionary, type=pa.large_string())
    if kind is AttributeType.KEYWORD:
        codes = pc.fill_null(pc.index_in(column, value_set=value_set), -1)
        return {"codes": np.asarray(codes.to_numpy(zero_copy_only=False), np.int32)}
    lists = pc.fill_null(column, pa.scalar([], type=column.type))
    offsets = np.asarray(lists.offsets.to_numpy(zero_copy_only=False), np.int64)
    flat = pc.index_in(lists.values[offsets[0] : offsets[-1]], value_set=value_set)
    codes = np.asarray(pc.fill_null(flat, -1).to_numpy(zero_copy_only=False), np.int32)
    return {"offsets": offsets - offsets[0], "codes": codes, "nulls": nulls}
