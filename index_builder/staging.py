"""Reading the input for a build: what it is, its ids, row checks, and the float32 writer.

A part's vectors file, written once by VectorWriter, is both the artifact's raw-vector file and
the memory-mapped source every later stage reads, so no stage holds a second full copy of the
corpus.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index_builder.artifact.errors import InputError
from index_builder.artifact.layout import first_bad_id
from index_builder.readers import ParquetColumns, Reader, open_input, read_id_files


@dataclass(frozen=True)
class InputSpec:
    """Everything that says where the documents and their ids come from."""

    paths: list[Path]
    fmt: str
    columns: ParquetColumns
    id_paths: list[Path] | None = None


@dataclass
class StagedCorpus:
    """The validated corpus on disk: raw float32 vectors (memory-mapped), ids and norms."""

    vectors: np.ndarray
    ids: list[str]
    norms: np.ndarray

    @property
    def count(self) -> int:
        return int(self.vectors.shape[0])

    def rows(self, chunk: np.ndarray) -> np.ndarray:
        """Vectors of sorted row numbers: a memory-mapped view when they are consecutive."""
        if len(chunk) and int(chunk[-1]) - int(chunk[0]) + 1 == len(chunk):
            return self.vectors[int(chunk[0]) : int(chunk[-1]) + 1]
        return np.asarray(self.vectors[chunk])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


class VectorWriter:
    """Writes a float32 (n, d) .npy file block by block with plain writes (no mapping, so the
    written pages stay in the page cache rather than in this process's resident set)."""

    def __init__(self, path: Path, count: int, dim: int) -> None:
        self.path, self.count, self.dim = path, count, dim
        self.written = 0

    def __enter__(self) -> VectorWriter:
        self.handle = open(self.path, "wb")
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
            "fortran_order": False,
            "shape": (self.count, self.dim),
        }
        np.lib.format.write_array_header_1_0(self.handle, header)
        return self

    def write(self, block: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
        self.written += len(block)

    def __exit__(self, *exc: object) -> None:
        self.handle.close()
        if exc[0] is None and self.written != self.count:
            raise InputError(f"input changed while reading: {self.written} rows read, {self.count} announced")


def check_finite(block: np.ndarray, start: int, source: Path) -> None:
    """InputError naming the first row (counted from `start` in `source`) that holds NaN or Inf."""
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        value = block[row][~np.isfinite(block[row])][0]
        raise InputError(f"{source}: row {start + row} holds {value} (NaN or Inf is not allowed)")


def stream_vectors(spec: InputSpec, dim: int, what: str, rows: int) -> Iterator[np.ndarray]:
    """float32 blocks of auxiliary vectors (--queries, --users), checked for dimension and finiteness."""
    for path in spec.paths:
        reader = open_input(path, spec.fmt, spec.columns)
        if reader.dim != dim:
            raise InputError(f"{what} {path}: dimension {dim} expected, got {reader.dim}")
        start = 0
        for block, _ in reader.blocks(rows):
            check_finite(block, start, path)
            start += len(block)
            yield block


def check_ids(ids: list[str], count: int, source: str) -> None:
    if len(ids) != count:
        raise InputError(f"{source} holds {len(ids)} ids but the input has {count} vectors")
    bad = first_bad_id(ids)
    if bad is not None:
        line, value, problem = bad
        if problem:
            raise InputError(f"{source}: id at position {line} {problem}")
        raise InputError(f"{source}: duplicate id {value!r} (again at position {line})")


def explicit_ids(spec: InputSpec, counts: list[int]) -> list[str] | None:
    if not spec.id_paths:
        return None
    lists = read_id_files(spec.id_paths)
    if len(lists) == len(counts) and len(lists) > 1:
        for path, ids, count in zip(spec.id_paths, lists, counts, strict=True):
            if len(ids) != count:
                raise InputError(f"ids file {path} holds {len(ids)} ids but its shard has {count} vectors")
    return [i for ids in lists for i in ids]


def open_inputs(spec: InputSpec) -> tuple[list[Reader], list[int], int]:
    """The input files' readers, row counts and common dimension (headers only, no values read)."""
    readers = [open_input(path, spec.fmt, spec.columns) for path in spec.paths]
    dims = {r.dim for r in readers}
    if len(dims) > 1:
        detail = ", ".join(f"{r.path.name}: {r.dim}" for r in readers)
        raise InputError(f"inconsistent dimensions across input files ({detail})")
    counts = [r.count for r in readers]
    total, dim = sum(counts), dims.pop()
    if total == 0 or dim == 0:
        raise InputError(f"input is empty ({total} rows of dimension {dim})")
    return readers, counts, dim


def choose_ids(
    explicit: list[str] | None, parquet_ids: list[str], total: int, spec: InputSpec
) -> tuple[list[str], str]:
    if explicit is not None:
        return explicit, f"ids file {spec.id_paths[0] if spec.id_paths else ''}"
    if parquet_ids:
        if len(parquet_ids) != total:
            raise InputError(
                f"column {spec.columns.id_column!r} is present in only some input files "
                f"({len(parquet_ids)} ids for {total} vectors)"
            )
        return parquet_ids, f"column {spec.columns.id_column!r}"
    return [str(i) for i in range(total)], "row numbers"
