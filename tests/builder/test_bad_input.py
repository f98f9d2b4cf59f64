"""Every bad input of the builder exits 2 with one clear line on stderr, and publishes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index_builder.cli import main


def run(capsys: pytest.CaptureFixture[str], root: Path, *argv: str) -> tuple[int, str]:
    code = main(["build", "--name", "c", "--root", str(root), "--quiet", *argv])
    err = capsys.readouterr().err.strip()
    return code, err


def npy(tmp: Path, array: np.ndarray, name: str = "x.npy") -> str:
    np.save(tmp / name, array)
    return str(tmp / name)


def good(n: int = 50, d: int = 4) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)


def parquet(tmp: Path, table: pa.Table, name: str = "x.parquet") -> str:
    pq.write_table(table, tmp / name)
    return str(tmp / name)


def fvecs(tmp: Path, rows: list[list[float]], name: str = "x.fvecs") -> str:
    with open(tmp / name, "wb") as handle:
        for row in rows:
            np.array([len(row)], dtype="<i4").tofile(handle)
            np.array(row, dtype="<f4").tofile(handle)
    return str(tmp / name)


def with_nan_price() -> pa.Table:
    vectors = good(4, 3)
    return pa.table({"id": list("abcd"), "vector": list(vectors), "price": [1.0, None, float("nan"), 2.0]})


def cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    nan = good()
    nan[7, 2] = np.nan
    inf = good()
    inf[9, 0] = -np.inf
    (tmp / "text.csv").write_text("1,2\n")
    (tmp / "broken.npy").write_bytes(b"not numpy at all")
    (tmp / "dupes.txt").write_text("a\nb\na\n" + "".join(f"x{i}\n" for i in range(47)))
    (tmp / "short.txt").write_text("a\nb\n")
    ragged = pa.table({"id": ["a", "b"], "vector": [[1.0, 2.0], [1.0, 2.0, 3.0]]})
    return {
        "missing file": (["--input", str(tmp / "nope.npy")], "does not exist"),
        "unknown format": (["--input", str(tmp / "text.csv")], "unknown format '.csv'"),
        "unreadable npy": (["--input", str(tmp / "broken.npy")], "not a readable .npy file"),
        "not 2-D": (["--input", npy(tmp, np.zeros(10, np.float32), "1d.npy")], "expected a 2-D array"),
        "empty": (["--input", npy(tmp, np.zeros((0, 4), np.float32), "empty.npy")], "input is empty"),
        "non-numeric": (["--input", npy(tmp, np.array([["a", "b"]]), "str.npy")], "non-numeric dtype"),
        "complex": (["--input", npy(tmp, np.ones((3, 2), np.complex64), "cplx.npy")], "non-numeric dtype"),
        "NaN": (["--input", npy(tmp, nan, "nan.npy")], "row 7 holds nan"),
        "Inf": (["--input", npy(tmp, inf, "inf.npy")], "row 9 holds -inf"),
        "ragged parquet": (["--input", parquet(tmp, ragged)], "row 1 has 3 values, expected 2"),
        "ragged fvecs": (["--input", fvecs(tmp, [[1, 2], [1, 2, 3], [1, 2]])], "ragged or inconsistent"),
        "duplicate ids": (["--input", npy(tmp, good()), "--ids", str(tmp / "dupes.txt")], "duplicate id 'a'"),
        "id count": (
            ["--input", npy(tmp, good()), "--ids", str(tmp / "short.txt")],
            "holds 2 ids but the input has 50 vectors",
        ),
        "all zero cosine": (
            ["--input", npy(tmp, np.zeros((5, 3), np.float32), "z.npy")],
            "all 5 documents have zero norm",
        ),
        "bad metric": (["--input", npy(tmp, good()), "--metrics", "dot,l1"], "unknown metric 'l1'"),
        "covariance without users": (
            ["--input", npy(tmp, good()), "--metrics", "covariance"],
            "metric 'covariance' needs --users FILE",
        ),
        "bad factory": (
            ["--input", npy(tmp, good()), "--index", "NotAnIndex"],
            "--index 'NotAnIndex' is none of the kinds flat, hnsw, ivf, ivfpq, nor a FAISS index_factory string",
        ),
        "NaN attribute": (
            ["--input", parquet(tmp, with_nan_price(), "nanattr.parquet"), "--attributes", "price"],
            "attribute 'price' holds NaN at row 2 (id 'c')",
        ),
        "pq-m not dividing": (
            ["--input", npy(tmp, good(400, 6), "pq.npy"), "--index", "ivfpq", "--nlist", "2", "--pq-m", "4"],
            "--pq-m 4 must divide",
        ),
        "nlist too big": (
            ["--input", npy(tmp, good()), "--index", "ivf", "--nlist", "500"],
            "--nlist 500 is larger than",
        ),
        "mixed dims": (["--input", str(tmp / "mixed")], "inconsistent dimensions across input files"),
        "bad name": (["--input", npy(tmp, good()), "--name", "../evil"], "name '../evil' is invalid"),
    }


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, dict[str, tuple[list[str], str]]]:
    (tmp_path / "mixed").mkdir()
    np.save(tmp_path / "mixed" / "a.npy", good(10, 4))
    np.save(tmp_path / "mixed" / "b.npy", good(10, 5))
    return tmp_path, cases(tmp_path)


CASE_NAMES = [
    "missing file",
    "unknown format",
    "unreadable npy",
    "not 2-D",
    "empty",
    "non-numeric",
    "complex",
    "NaN",
    "Inf",
    "ragged parquet",
    "ragged fvecs",
    "duplicate ids",
    "id count",
    "all zero cosine",
    "bad metric",
    "covariance without users",
    "bad factory",
    "NaN attribute",
    "pq-m not dividing",
    "nlist too big",
    "mixed dims",
    "bad name",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_exits_2_with_one_line(case: str, inputs: tuple[Path, dict], capsys) -> None:
    tmp, table = inputs
    argv, message = table[case]
    root = tmp / "root"
    code, err = run(capsys, root, *argv)
    assert code == 2, err
    assert message in err
    assert len(err.splitlines()) == 1, err
    assert not (root / "c" / "CURRENT").exists()
    leftovers = list((root / "c").iterdir()) if (root / "c").exists() else []
    assert [p for p in leftovers if p.name != "versions"] == []


def test_zero_norm_documents_are_kept_for_dot_and_counted(tmp_path: Path, capsys) -> None:
    docs = good(100, 4)
    docs[[3, 30]] = 0
    code, err = run(capsys, tmp_path, "--input", npy(tmp_path, docs))
    assert code == 0, err
    from index_builder.artifact.layout import read_current, version_dir
    from index_builder.artifact.manifest import read_manifest

    manifest = read_manifest(version_dir(tmp_path, "c", read_current(tmp_path, "c")))
    assert manifest.norm_profile.zero_count == 2
    assert manifest.metrics["dot"].index.count == 100
    assert manifest.metrics["cosine"].index.count == 98


@pytest.mark.parametrize("command", [["demo"], ["gc", "--name", "demo", "--keep", "1"]])
def test_an_index_root_the_user_cannot_write_exits_2_saying_what_to_do(
    tmp_path: Path, command: list[str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """As root every directory is writable, so the refusal a non-root user gets is simulated here
    (the container test meets the real one: uid 10001 on a root-owned bind mount)."""
    root = tmp_path / "indexes"
    root.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == root else real_access(path, mode))
    assert main([*command, "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"error: index root {root} is not writable by uid {os.getuid()}" in err
    assert "fsGroup" in err and not any(root.iterdir())
