"""End-to-end builds through the CLI: every input format, index kind and metric."""

from __future__ import annotations

import hashlib
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index_builder.artifact.integrity import open_vectors
from index_builder.cli import main
from index_builder.indexes import training_size
from index_builder.retrieval.ann import ServedIndex, ann_topk
from index_builder.retrieval.faiss_params import read_index
from index_builder.retrieval.scoring import doc_scales, exact_topk, recall_at_k
from index_builder.retrieval.spaces import Metric, fit_metric_space, row_norms
from tests.builder.helpers import active_manifest
from tests.conftest import Corpus, build


def write_parquet(corpus: Corpus, path: Path, parts: int = 1) -> None:
    chunks = np.array_split(np.arange(len(corpus.docs)), parts)
    path.mkdir(parents=True, exist_ok=True) if parts > 1 else None
    for i, rows in enumerate(chunks):
        table = pa.table(
            {
                "id": [corpus.ids[r] for r in rows],
                "vector": pa.array(list(corpus.docs[rows]), type=pa.list_(pa.float32())),
            }
        )
        pq.write_table(table, path / f"part-{i:03d}.parquet" if parts > 1 else path, row_group_size=500)


def write_fvecs(docs: np.ndarray, path: Path) -> None:
    header = np.full((len(docs), 1), docs.shape[1], dtype="<i4")
    np.hstack([header, docs.view("<i4")]).tofile(path)


def restored(root: Path, name: str) -> tuple[np.ndarray, list[str]]:
    path, manifest = active_manifest(root, name)
    ids = (path / "ids.txt").read_text().splitlines()
    return np.asarray(open_vectors(manifest, path, manifest.parts()[0])), ids


@pytest.mark.parametrize("fmt", ["npy", "parquet", "fvecs", "npy-float16", "npy-float64"])
def test_every_input_format_stores_the_same_corpus(fmt: str, corpus: Corpus, tmp_path: Path) -> None:
    docs = corpus.docs
    argv = ["build", "--name", "c", "--root", str(tmp_path / "root"), "--quiet"]
    if fmt == "parquet":
        write_parquet(corpus, tmp_path / "docs.parquet")
        argv += ["--input", str(tmp_path / "docs.parquet")]
    elif fmt == "fvecs":
        write_fvecs(docs, tmp_path / "docs.fvecs")
        argv += ["--input", str(tmp_path / "docs.fvecs"), "--ids", str(corpus.ids_path)]
    else:
        dtype = {"npy": np.float32, "npy-float16": np.float16, "npy-float64": np.float64}[fmt]
        docs = docs.astype(dtype)
        np.save(tmp_path / "docs.npy", docs)
        argv += ["--input", str(tmp_path / "docs.npy"), "--ids", str(corpus.ids_path)]
    assert main(argv) == 0
    vectors, ids = restored(tmp_path / "root", "c")
    np.testing.assert_array_equal(vectors, docs.astype(np.float32))
    assert ids == corpus.ids


def test_row_numbers_are_the_default_ids(corpus: Corpus, tmp_path: Path) -> None:
    assert main(["build", "--input", str(corpus.docs_path), "--name", "c", "--root", str(tmp_path), "--quiet"]) == 0
    assert restored(tmp_path, "c")[1] == [str(i) for i in range(len(corpus.docs))]


def test_shards_in_a_directory_or_glob_give_the_same_index_as_one_file(corpus: Corpus, tmp_path: Path) -> None:
    write_parquet(corpus, tmp_path / "parts", parts=4)
    split = np.array_split(np.arange(len(corpus.docs)), 3)
    for i, rows in enumerate(split):
        np.save(tmp_path / f"shard-{i}.npy", corpus.docs[rows])
        (tmp_path / f"shard-{i}.ids").write_text("".join(f"{corpus.ids[r]}\n" for r in rows))
    root = tmp_path / "root"
    common = ["--root", str(root), "--quiet", "--index", "hnsw", "--seed", "3"]
    assert (
        main(["build", "--name", "one", "--input", str(corpus.docs_path), "--ids", str(corpus.ids_path), *common]) == 0
    )
    assert main(["build", "--name", "dir", "--input", str(tmp_path / "parts"), *common]) == 0
    assert (
        main(
            [
                "build",
                "--name",
                "glob",
                "--input",
                str(tmp_path / "shard-*.npy"),
                "--ids",
                str(tmp_path / "shard-*.ids"),
                *common,
            ]
        )
        == 0
    )
    digests = set()
    for name in ("one", "dir", "glob"):
        path, manifest = active_manifest(root, name)
        digests.add(tuple(manifest.files[f].sha256 for f in ("vectors.npy", "ids.txt", "dot.faiss", "cosine.faiss")))
    assert len(digests) == 1


KINDS = [
    ("flat", []),
    ("hnsw", ["--hnsw-m", "16"]),
    ("hnsw", ["--hnsw-codes", "sq8"]),
    ("ivf", ["--nlist", "16"]),
    ("ivfpq", ["--nlist", "8"]),
    ("IVF8,SQ8", []),
]


LAYOUT_OF = {"none": "ip", "l2": "l2_augmented", "ranged": "l2_ranged"}


@pytest.mark.parametrize("mips", ["none", "l2", "ranged"])
@pytest.mark.parametrize("kind, flags", KINDS, ids=[" ".join([k, *f]) for k, f in KINDS])
def test_every_index_kind_reports_recall_that_a_recomputation_matches(
    kind: str, flags: list[str], mips: str, corpus: Corpus, tmp_path: Path
) -> None:
    assert build(tmp_path, corpus, "c", "--index", kind, "--mips", mips, "--mips-ranges", "4", *flags) == 0
    path, manifest = active_manifest(tmp_path, "c")
    part = manifest.parts()[0]
    vectors = open_vectors(manifest, path, part)
    for name, entry in manifest.metrics.items():
        check = entry.index.self_check
        assert check is not None and check.query_source == "queries"
        if entry.index.exact:
            assert check.recall_at_10 == 1.0
        space = manifest.metric_space(name, path)
        scales = doc_scales(space, vectors, 1024)
        indexes = [read_index(path / f) for f in manifest.part_index_files(part, name)]
        served = ServedIndex.of(indexes, space, entry.index.layout, entry.index.refine_factor, vectors, scales)
        truth, _ = exact_topk(space, corpus.queries, vectors, scales, 10)
        value = next(iter(entry.index.search_params.values()), None)
        scores, rows = ann_topk(served, corpus.queries, 10, value)
        assert recall_at_k(truth, scores, rows) == pytest.approx(check.recall_at_10, abs=1e-4)
    assert manifest.metrics["dot"].index.layout == LAYOUT_OF[mips]


@pytest.mark.parametrize(("codes", "factory"), [("sq8", "HNSW32_SQ8"), ("fp16", "HNSW32_SQfp16")])
def test_hnsw_codes_are_rescored_from_the_float_vectors(
    codes: str, factory: str, corpus: Corpus, tmp_path: Path
) -> None:
    """Quantized graph storage: 2k candidates rescored exactly, so scores are the true ones and the
    self-check still reaches the target; the choice is kept by a build from the current version."""
    assert build(tmp_path, corpus, "c", "--index", "hnsw", "--hnsw-codes", codes) == 0
    path, manifest = active_manifest(tmp_path, "c")
    for entry in manifest.metrics.values():
        assert entry.index.factory == factory and entry.index.refine_factor == 2
        assert entry.index.self_check.recall_at_10 >= 0.95
    assert manifest.build_params["hnsw_codes"] == codes
    assert main(["build", "--name", "c", "--root", str(tmp_path), "--from-current", "--quiet"]) == 0
    _, rebuilt = active_manifest(tmp_path, "c")
    assert rebuilt.version != manifest.version
    assert {e.index.factory for e in rebuilt.metrics.values()} == {factory}


def test_hnsw_codes_need_an_hnsw_index(corpus: Corpus, tmp_path: Path, capsys) -> None:
    assert build(tmp_path, corpus, "c", "--index", "ivf", "--hnsw-codes", "sq8") == 2
    assert "--hnsw-codes sq8 applies to --index hnsw, not 'ivf'" in capsys.readouterr().err


def test_default_knobs_reach_the_target_recall(corpus: Corpus, tmp_path: Path) -> None:
    assert build(tmp_path, corpus, "c", "--index", "hnsw", "--target-recall", "0.97") == 0
    _, manifest = active_manifest(tmp_path, "c")
    for entry in manifest.metrics.values():
        assert entry.index.self_check.recall_at_10 >= 0.97
        assert entry.index.search_params["efSearch"] >= 16


def test_same_inputs_and_seed_give_the_same_index(corpus: Corpus, tmp_path: Path) -> None:
    digests = []
    for run in range(2):
        root = tmp_path / f"r{run}"
        assert build(root, corpus, "c", "--index", "ivf", "--nlist", "16", "--train-size", "800", "--seed", "5") == 0
        path, manifest = active_manifest(root, "c")
        digests.append(hashlib.sha256((path / "dot.faiss").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_manifest_records_norm_profile_and_bias(corpus: Corpus, tmp_path: Path) -> None:
    assert build(tmp_path, corpus, "c") == 0
    _, manifest = active_manifest(tmp_path, "c")
    norms = row_norms(corpus.docs)
    assert manifest.norm_profile.zero_count == 3
    assert manifest.norm_profile.max == pytest.approx(norms.max(), rel=1e-5)
    assert manifest.norm_profile.median == pytest.approx(np.median(norms), rel=1e-5)
    dot = fit_metric_space(Metric.parse("dot"), norms, None)
    _, rows = exact_topk(dot, corpus.queries, corpus.docs, np.ones(len(norms), np.float32), 10)
    threshold = np.sort(norms)[-int(np.ceil(0.05 * len(norms)))]
    assert manifest.norm_bias_top5pct == pytest.approx(np.mean(norms[rows] >= threshold), abs=1e-4)
    assert manifest.metrics["dot"].index.count == len(norms)
    assert manifest.metrics["cosine"].index.count == len(norms) - 3


def test_mips_auto_measures_every_layout_and_keeps_the_cheapest(corpus: Corpus, tmp_path: Path) -> None:
    assert build(tmp_path, corpus, "c", "--index", "hnsw", "--mips", "auto", "--metrics", "dot,cosine") == 0
    path, manifest = active_manifest(tmp_path, "c")
    dot = manifest.metrics["dot"].index
    assert set(dot.layout_trials) == {"ip", "l2_augmented", "l2_ranged"}
    assert dot.file == "dot.faiss" and (path / "dot.faiss").is_file()
    assert not list(path.glob("*.tmp"))
    assert manifest.metrics["cosine"].index.layout_trials == {
        "ip": manifest.metrics["cosine"].index.layout_trials["ip"]
    }
    assert dot.self_check.recall_at_10 >= 0.95


def test_explicit_l2_warns_when_raw_inner_product_measures_better(corpus: Corpus, tmp_path: Path, caplog) -> None:
    skewed = corpus.docs * np.random.default_rng(0).lognormal(0, 1.2, (len(corpus.docs), 1)).astype(np.float32)
    np.save(tmp_path / "skewed.npy", skewed)
    with caplog.at_level("WARNING"):
        assert (
            main(
                [
                    "build",
                    "--input",
                    str(tmp_path / "skewed.npy"),
                    "--name",
                    "c",
                    "--root",
                    str(tmp_path),
                    "--index",
                    "hnsw",
                    "--mips",
                    "l2",
                    "--metrics",
                    "dot",
                    "--queries",
                    str(corpus.queries_path),
                    "--quiet",
                ]
            )
            == 0
        )
    _, manifest = active_manifest(tmp_path, "c")
    assert manifest.metrics["dot"].index.layout == "l2_augmented"
    assert "--mips l2 measures worse than ip" in caplog.text


def test_norm_ranged_layout_splits_documents_by_norm(corpus: Corpus, tmp_path: Path) -> None:
    assert (
        build(tmp_path, corpus, "c", "--index", "hnsw", "--mips", "ranged", "--mips-ranges", "4", "--metrics", "dot")
        == 0
    )
    path, manifest = active_manifest(tmp_path, "c")
    entry = manifest.metrics["dot"].index
    norms = row_norms(corpus.docs)
    assert entry.range_bounds == sorted(entry.range_bounds) and len(entry.range_bounds) == 4
    assert entry.range_bounds[-1] == pytest.approx(norms.max(), rel=1e-6)
    files = entry.files_for("dot.faiss")
    assert files == ["dot.r00.faiss", "dot.r01.faiss", "dot.r02.faiss", "dot.r03.faiss"]
    counts = [read_index(path / f).ntotal for f in files]
    assert sum(counts) == len(norms) and min(counts) >= len(norms) // 4 - 1
    assert not (path / "dot.faiss").exists() and set(files) <= set(manifest.files)


def test_training_sample_gives_every_ivf_list_its_minimum() -> None:
    ivf = faiss.index_factory(8, "IVF4000,Flat", faiss.METRIC_INNER_PRODUCT)
    assert training_size(ivf, 100_000, 1_000_000) == 156_000
    assert training_size(ivf, 200_000, 1_000_000) == 200_000
    assert training_size(ivf, 100_000, 120_000) == 120_000
    assert training_size(faiss.index_factory(8, "PQ4x8"), 1_000, 50_000) == 1_000


def test_a_self_check_on_documents_is_called_an_estimate(corpus: Corpus, tmp_path: Path, caplog) -> None:
    """Without --queries the recall comes from documents; the build says so and so does the manifest."""
    argv = [
        "build",
        "--input",
        str(corpus.docs_path),
        "--name",
        "c",
        "--root",
        str(tmp_path),
        "--quiet",
        "--index",
        "hnsw",
        "--metrics",
        "dot,cosine",
    ]
    with caplog.at_level("WARNING"):
        assert main(argv) == 0
    assert "recall@10 of dot, cosine is an estimate from queries drawn from the documents' distribution" in caplog.text
    assert "pass --queries" in caplog.text
    _, manifest = active_manifest(tmp_path, "c")
    assert {m.index.self_check.query_source for m in manifest.metrics.values()} == {"documents"}
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert build(tmp_path, corpus, "c", "--index", "hnsw") == 0
    assert "is an estimate" not in caplog.text
    with caplog.at_level("WARNING"):
        assert main([*argv[:8], "--index", "flat"]) == 0
    assert "is an estimate" not in caplog.text, "exact indexes need no estimate"
