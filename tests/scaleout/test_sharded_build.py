"""Sharded builds without Ray: same answers as unsharded, stable shard assignment, all-or-nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from index_builder.artifact.layout import list_versions, read_current, version_dir
from index_builder.artifact.manifest import read_manifest
from index_builder.cli import main as build_main
from index_builder.scaleout.sharding import shard_of
from tests.builder.test_build import write_parquet
from tests.conftest import Corpus, build
from tests.scaleout.answers import assert_same_answers, load

METRICS = "dot,cosine,norm_pow:0.5,norm_sigmoid,covariance"


@pytest.fixture(scope="module")
def pair(corpus: Corpus, users: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One root holding the same corpus unsharded ('single') and in 3 shards ('sharded')."""
    root = tmp_path_factory.mktemp("pair")
    assert build(root, corpus, "single", "--metrics", METRICS, "--users", str(users)) == 0
    assert build(root, corpus, "sharded", "--metrics", METRICS, "--users", str(users), "--shards", "3") == 0
    return root


@pytest.mark.parametrize("metric", METRICS.split(","))
def test_sharded_flat_answers_equal_unsharded(pair: Path, corpus: Corpus, metric: str) -> None:
    sharded, single = load(pair, "sharded"), load(pair, "single")
    assert len(sharded.parts.parts) == 3 and len(single.parts.parts) == 1
    assert_same_answers(sharded, single, corpus.queries[:16], metric, corpus.ids)


def test_sharded_manifest_lists_shards_with_global_statistics(pair: Path) -> None:
    single = read_manifest(version_dir(pair, "single", read_current(pair, "single")))
    sharded = read_manifest(version_dir(pair, "sharded", read_current(pair, "sharded")))
    assert sharded.schema_version == 2 and single.schema_version == 1
    assert [s.name for s in sharded.shards] == ["s000", "s001", "s002"]
    assert sum(s.count for s in sharded.shards) == sharded.count == single.count
    for name, entry in single.metrics.items():
        assert sharded.metrics[name].norm_min == entry.norm_min
        assert sharded.metrics[name].norm_max == entry.norm_max
        assert sum(s.index_counts[name] for s in sharded.shards) == entry.index.count
    for shard in sharded.shards:
        assert {shard.vectors_file, shard.ids_file, *shard.index_files.values()} <= set(sharded.files)


@pytest.mark.parametrize("mips, layout", [("l2", "l2_augmented"), ("ranged", "l2_ranged")])
def test_mips_augmentation_uses_global_norm_statistics(corpus: Corpus, tmp_path: Path, mips: str, layout: str) -> None:
    assert build(tmp_path, corpus, "plain", "--metrics", "dot") == 0
    assert build(tmp_path, corpus, "single", "--metrics", "dot", "--mips", mips) == 0
    assert build(tmp_path, corpus, "sharded", "--metrics", "dot", "--mips", mips, "--shards", "2") == 0
    single, sharded = load(tmp_path, "single"), load(tmp_path, "sharded")
    ours, theirs = sharded.manifest.metrics["dot"].index, single.manifest.metrics["dot"].index
    assert ours.max_norm == theirs.max_norm and ours.range_bounds == theirs.range_bounds
    assert ours.layout == layout
    assert_same_answers(sharded, single, corpus.queries[:16], "dot", corpus.ids)
    assert_same_answers(single, load(tmp_path, "plain"), corpus.queries[:16], "dot", corpus.ids)


def test_an_id_stays_on_its_shard_whatever_the_input_order(corpus: Corpus, tmp_path: Path) -> None:
    order = np.random.default_rng(1).permutation(len(corpus.ids))
    np.save(tmp_path / "shuffled.npy", corpus.docs[order])
    (tmp_path / "shuffled.txt").write_text("".join(f"{corpus.ids[i]}\n" for i in order))
    for name, docs, ids in (
        ("a", corpus.docs_path, corpus.ids_path),
        ("b", tmp_path / "shuffled.npy", tmp_path / "shuffled.txt"),
    ):
        assert (
            build_main(
                [
                    "build",
                    "--input",
                    str(docs),
                    "--ids",
                    str(ids),
                    "--name",
                    name,
                    "--root",
                    str(tmp_path / "root"),
                    "--metrics",
                    "dot",
                    "--shards",
                    "4",
                    "--quiet",
                ]
            )
            == 0
        )
    root = tmp_path / "root"
    shards = {}
    for name in ("a", "b"):
        path = version_dir(root, name, read_current(root, name))
        shards[name] = [set((path / s.ids_file).read_text().split()) for s in read_manifest(path).shards]
    assert shards["a"] == shards["b"]
    for number, held in enumerate(shards["a"]):
        assert set(np.asarray(sorted(held))[shard_of(sorted(held), 4) == number]) == held


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ray", "local"], "--ray builds shards: add --shards S"),
        (["--shards", "0"], "--shards: must be at least 1"),
        (["--shards", "5000"], "would be empty"),
    ],
)
def test_bad_shard_requests_exit_2_with_one_line(
    corpus: Corpus, tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build(tmp_path, corpus, "items", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert list_versions(tmp_path, "items") == []
    leftovers = list((tmp_path / "items").glob(".staging*")) if (tmp_path / "items").exists() else []
    assert leftovers == []


def test_verify_catches_a_corrupt_shard(pair: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build_main(["verify", "--root", str(pair), "--name", "sharded"]) == 0
    path = version_dir(pair, "sharded", read_current(pair, "sharded"))
    copy = pair.parent / "corrupt-copy"
    shutil.copytree(pair, copy)
    target = version_dir(copy, "sharded", read_current(copy, "sharded")) / read_manifest(path).shards[1].vectors_file
    target.chmod(0o644)
    with open(target, "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x00\x80\x7f")
    capsys.readouterr()
    assert build_main(["verify", "--root", str(copy), "--name", "sharded"]) == 1
    assert "vectors.s001.npy" in capsys.readouterr().err


def test_parquet_parts_with_id_column_shard_like_one_npy(corpus: Corpus, tmp_path: Path) -> None:
    write_parquet(corpus, tmp_path / "parts", parts=4)
    root = tmp_path / "root"
    assert (
        build_main(
            [
                "build",
                "--input",
                str(tmp_path / "parts"),
                "--name",
                "parquet",
                "--root",
                str(root),
                "--metrics",
                "dot,cosine",
                "--shards",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    assert build(root, corpus, "npy", "--metrics", "dot,cosine", "--shards", "3") == 0
    parquet, npy = load(root, "parquet"), load(root, "npy")
    for name in ("parquet", "npy"):
        path = version_dir(root, name, read_current(root, name))
        assert [s.count for s in read_manifest(path).shards] == [s.count for s in npy.manifest.shards]
    for metric in ("dot", "cosine"):
        assert_same_answers(parquet, npy, corpus.queries[:8], metric, corpus.ids)
