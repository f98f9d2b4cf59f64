"""Readers for document embeddings (.npy, .parquet, .fvecs), one file or many shards.

A reader only describes its input up front (row count, dimension) and then streams
float32 blocks; validation that needs the values (NaN/Inf) happens in `staging`.
Every problem with the input raises InputError with one line a person can act on.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from index_builder.artifact.errors import InputError

FORMATS = {".npy": "npy", ".parquet": "parquet", ".fvecs": "fvecs"}


@dataclass(frozen=True)
class ParquetColumns:
    """Which parquet columns hold the id and the vector."""

    id_column: str = "id"
    vector_column: str = "vector"
    id_column_required: bool = False


def resolve_paths(spec: str, what: str = "input") -> list[Path]:
    """Expand a file, a directory or a glob into a sorted list of existing files."""
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not found:
            raise InputError(f"{what} directory {spec} holds no files")
        return found
    if any(ch in spec for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
        if not found:
            raise InputError(f"{what} pattern {spec!r} matches no file")
        return found
    if not path.exists():
        raise InputError(f"{what} file {spec} does not exist")
    if not path.is_file():
        raise InputError(f"{what} {spec} is not a regular file")
    return [path]


def input_format(paths: list[Path]) -> str:
    """The single format of a set of input files, by extension."""
    kinds = set()
    for path in paths:
        kind = FORMATS.get(path.suffix.lower())
        if kind is None:
            raise InputError(
                f"{path}: unknown format {path.suffix or '(no extension)'!r}; expected one of {', '.join(FORMATS)}"
            )
        kinds.add(kind)
    if len(kinds) > 1:
        raise InputError(f"input mixes formats {sorted(kinds)}; give files of one format")
    return kinds.pop()


def _check_numeric(path: Path, dtype: np.dtype) -> None:
    if dtype.kind not in "fiu" or dtype.itemsize > 8:
        raise InputError(f"{path}: non-numeric dtype {dtype}; expected float16, float32 or float64")


class NpyFile:
    """A .npy file, validated from its header; blocks are read through short-lived memory maps."""

    MAGIC = b"\x93NUMPY"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as handle:
                if handle.read(len(self.MAGIC)) != self.MAGIC:
                    raise InputError(f"{path}: not a readable .npy file (no NUMPY header)")
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except PermissionError:
            raise InputError(f"{path}: permission denied") from None
        except ValueError as exc:
            if "object" in str(exc).lower():
                raise InputError(f"{path}: non-numeric dtype (object); expected floats") from None
            raise InputError(f"{path}: not a readable .npy file ({exc})") from None
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npy file ({exc})") from None
        if array.dtype.names is not None:
            raise InputError(f"{path}: non-numeric dtype (structured); expected floats")
        _check_numeric(path, array.dtype)
        if array.ndim != 2:
            raise InputError(f"{path}: expected a 2-D array (rows, dim), got shape {array.shape}")
        self.count, self.dim = int(array.shape[0]), int(array.shape[1])

    def blocks(self, rows: int) -> Iterator[tuple[np.ndarray, list[str] | None]]:
        """float32 copies of consecutive rows; each block maps the file afresh so pages already
        read leave this process's resident set instead of accumulating."""
        for start in range(0, self.count, rows):
            mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
            yield np.array(mapped[start : start + rows], dtype=np.float32), None
            del mapped


class FvecsFile:
    """A .fvecs file: each row is an int32 dimension followed by that many float32 values."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            size = path.stat().st_size
            with open(path, "rb") as handle:
                head = handle.read(4)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
        if size == 0:
            raise InputError(f"{path}: file is empty")
        if len(head) < 4 or size % 4:
            raise InputError(f"{path}: not an .fvecs file (size {size} is not a multiple of 4)")
        dim = int(np.frombuffer(head, dtype="<i4")[0])
        if dim <= 0 or size % (4 * (dim + 1)):
            raise InputError(
                f"{path}: ragged or inconsistent dimensions (first row says {dim}, "
                f"file size {size} is not a whole number of rows)"
            )
        self.dim = dim
        self.count = size // (4 * (dim + 1))

    def blocks(self, rows: int) -> Iterator[tuple[np.ndarray, list[str] | None]]:
        for start in range(0, self.count, rows):
            n = min(rows, self.count - start)
            chunk = np.fromfile(
                self.path, dtype="<i4", count=n * (self.dim + 1), offset=4 * start * (self.dim + 1)
            ).reshape(n, self.dim + 1)
            bad = np.flatnonzero(chunk[:, 0] != self.dim)
            if len(bad):
                row = start + int(bad[0])
                raise InputError(
                    f"{self.path}: ragged or inconsistent dimensions: row {row} has "
                    f"{int(chunk[bad[0], 0])}, expected {self.dim}"
                )
            yield np.ascontiguousarray(chunk[:, 1:]).view("<f4").astype(np.float32), None


class ParquetFile:
    """A parquet file with an id column and a list-of-float vector column, read by batches."""

    def __init__(self, path: Path, columns: ParquetColumns) -> None:
        self.path = path
        self.columns = columns
        try:
            self.file = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{path}: not a readable parquet file ({exc})") from None
        schema = self.file.schema_arrow
        if columns.vector_column not in schema.names:
            raise InputError(
                f"{path}: no vector column {columns.vector_column!r} (columns: {schema.names}); set --vector-column"
            )
        self.has_ids = columns.id_column in schema.names
        if columns.id_column_required and not self.has_ids:
            raise InputError(f"{path}: no id column {columns.id_column!r} (columns: {schema.names})")
        vtype = schema.field(columns.vector_column).type
        if not (pa.types.is_list(vtype) or pa.types.is_large_list(vtype) or pa.types.is_fixed_size_list(vtype)):
            raise InputError(f"{path}: column {columns.vector_column!r} is {vtype}, expected a list of floats")
        value_type = vtype.value_type
        if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
            raise InputError(f"{path}: non-numeric dtype {value_type} in {columns.vector_column!r}")
        self.count = int(self.file.metadata.num_rows)
        self.dim = self._first_dim()

    def _first_dim(self) -> int:
        if self.count == 0:
            raise InputError(f"{self.path}: input is empty (0 rows)")
        first = next(self.file.iter_batches(batch_size=1, columns=[self.columns.vector_column]))
        value = first.column(0)[0].as_py()
        if value is None:
            raise InputError(f"{self.path}: row 0 has a null vector")
        return len(value)

    def blocks(self, rows: int) -> Iterator[tuple[np.ndarray, list[str] | None]]:
        wanted = [self.columns.vector_column] + ([self.columns.id_column] if self.has_ids else [])
        start = 0
        for batch in self.file.iter_batches(batch_size=rows, columns=wanted):
            vectors = self._vectors(batch.column(self.columns.vector_column), start)
            ids = None
            if self.has_ids:
                id_col = batch.column(self.columns.id_column)
                if id_col.null_count:
                    bad = start + int(np.flatnonzero(id_col.is_null().to_numpy(zero_copy_only=False))[0])
                    raise InputError(f"{self.path}: row {bad} has a null id")
                ids = [str(v) for v in id_col.to_pylist()]
            yield vectors, ids
            start += batch.num_rows

    def _vectors(self, column: pa.Array, start: int) -> np.ndarray:
        if column.null_count:
            bad = start + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{self.path}: row {bad} has a null vector")
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(lengths != self.dim)
        if len(wrong):
            row = start + int(wrong[0])
            raise InputError(
                f"{self.path}: ragged or inconsistent dimensions: row {row} has "
                f"{int(lengths[wrong[0]])} values, expected {self.dim}"
            )
        values = pc.list_flatten(column)
        if values.null_count:
            raise InputError(f"{self.path}: a vector near row {start} holds a null value")
        flat = values.to_numpy(zero_copy_only=False)
        return np.asarray(flat.astype(np.float32, copy=False).reshape(len(column), self.dim))


Reader = NpyFile | FvecsFile | ParquetFile


def open_input(path: Path, fmt: str, columns: ParquetColumns) -> Reader:
    """Open one input file of a known format."""
    if not path.exists():
        raise InputError(f"input file {path} does not exist")
    if fmt == "npy":
        return NpyFile(path)
    if fmt == "fvecs":
        return FvecsFile(path)
    return ParquetFile(path, columns)


def read_id_files(paths: list[Path]) -> list[list[str]]:
    """Ids from text files, one per line (trailing newline optional), one list per file."""
    lists = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError(f"ids file {path} is not UTF-8 text") from None
        except OSError as exc:
            raise InputError(f"ids file {path}: cannot read ({exc.strerror})") from None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        lists.append([line.rstrip("\r") for line in lines])
    return lists
