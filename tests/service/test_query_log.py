"""The query log: a uniform, bounded sample of served query vectors, shared by workers, surviving
restarts, read by the next build's self-check; a broken log never stops serving or building."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from index_builder.artifact.querylog import Sample, log_path, merge, merge_into, read_sample
from index_builder.cli import main as build_main
from service.core.querylog import QueryLog, Reservoir
from tests.builder.helpers import active_manifest
from tests.conftest import Corpus, build, in_process, make_corpus, start_server, stop_server


def test_a_reservoir_keeps_a_uniform_sample_of_what_it_saw() -> None:
    reservoir = Reservoir(500, 1, np.random.default_rng(0))
    for start in range(0, 20_000, 7):
        reservoir.offer(np.arange(start, min(start + 7, 20_000), dtype=np.float32)[:, None])
    sample = reservoir.sample()
    assert sample.seen == 20_000 and sample.vectors.shape == (500, 1)
    values = sample.vectors[:, 0]
    assert len(set(values.tolist())) == 500
    histogram = np.histogram(values, bins=4, range=(0, 20_000))[0]
    assert histogram.min() > 90, histogram


def test_merging_weighs_each_sample_by_the_queries_it_stands_for() -> None:
    rng = np.random.default_rng(1)
    a = Sample(np.zeros((100, 2), np.float32), 9000)
    b = Sample(np.ones((100, 2), np.float32), 1000)
    merged = merge(a, b, 100, rng)
    assert merged.seen == 10_000 and len(merged.vectors) == 100
    assert 80 <= int((merged.vectors[:, 0] == 0).sum()) <= 97
    small = merge(Sample(np.zeros((3, 2), np.float32), 3), Sample(np.ones((2, 2), np.float32), 2), 100, rng)
    assert len(small.vectors) == 5 and small.seen == 5


def _merge_many(path: str, worker: int) -> None:
    rng = np.random.default_rng(worker)
    for _ in range(15):
        merge_into(Path(path), Sample(np.full((4, 3), worker, np.float32), 4), 50, rng)


def test_workers_merging_into_one_log_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "c" / "querylog" / "dot.npz"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_merge_many, args=(str(path), w)) for w in (1, 2, 3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    sample = read_sample(path)
    assert sample is not None and sample.seen == 3 * 15 * 4 and len(sample.vectors) == 50
    assert set(np.unique(sample.vectors[:, 0]).tolist()) == {1.0, 2.0, 3.0}


def test_a_corrupt_log_is_replaced_by_the_service_and_skipped_by_the_builder(
    corpus: Corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = log_path(tmp_path, "c", "dot")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a log")
    with pytest.raises(ValueError, match="unreadable"):
        read_sample(path)
    assert build(tmp_path, corpus, "c", "--index", "hnsw", "--metrics", "dot") == 0
    assert "query log" not in caplog.text, "with --queries the log is not read"
    caplog.clear()
    argv = ["build", "--input", str(corpus.docs_path), "--name", "c", "--root", str(tmp_path), "--quiet"]
    with caplog.at_level(logging.WARNING):
        assert build_main([*argv, "--index", "hnsw", "--metrics", "dot"]) == 0
    assert "is unreadable" in caplog.text and "the self-check of dot uses documents" in caplog.text
    _, manifest = active_manifest(tmp_path, "c")
    assert manifest.metrics["dot"].index.self_check.query_source == "documents"
    log = QueryLog(tmp_path, 10, 60, seed=0)
    log.record("c", "dot", np.ones((2, 24), np.float32))
    with caplog.at_level(logging.WARNING):
        log.flush()
    assert "started anew" in caplog.text
    assert read_sample(path).seen == 2


def test_an_unwritable_log_is_warned_about_once_and_kept_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "querylog").write_text("a file where the directory should be")
    log = QueryLog(tmp_path, 10, 60, seed=0)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            log.record("c", "dot", np.ones((1, 4), np.float32))
            log.flush()
    assert caplog.text.count("cannot be written") == 1
    (tmp_path / "c" / "querylog").unlink()
    log.flush()
    assert read_sample(log_path(tmp_path, "c", "dot")).seen == 3


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, Corpus, np.ndarray]:
    """A collection built without --queries, and queries from another distribution (the other tower)."""
    corpus = make_corpus(tmp_path / "data", n=2000)
    root = tmp_path / "root"
    argv = ["build", "--input", str(corpus.docs_path), "--ids", str(corpus.ids_path), "--name", "c"]
    assert build_main([*argv, "--root", str(root), "--index", "hnsw", "--metrics", "dot,cosine", "--quiet"]) == 0
    rng = np.random.default_rng(5)
    shifted = (corpus.queries[rng.integers(0, len(corpus.queries), 300)] + rng.normal(0, 0.3, (300, 24))).astype(
        np.float32
    )
    return root, corpus, shifted


def test_served_traffic_tunes_the_next_build(served, capsys: pytest.CaptureFixture[str]) -> None:
    root, corpus, shifted = served
    _, before = active_manifest(root, "c")
    assert before.metrics["dot"].index.self_check.query_source == "documents"
    with in_process(root, DOTCOS_QUERY_LOG_SIZE="250") as client:
        for i in range(150):
            client.post("/v1/collections/c/search", json={"vector": shifted[i].tolist(), "metric": "dot"})
        client.post("/v1/collections/c/search/batch", json={"vectors": shifted[150:].tolist(), "metric": "cosine"})
        client.post("/v1/collections/c/similar", json={"id": corpus.ids[0], "metric": "dot"})
    dot, cosine = (read_sample(log_path(root, "c", m)) for m in ("dot", "cosine"))
    assert dot.seen == 150 and len(dot.vectors) == 150 and cosine.seen == 150
    np.testing.assert_array_equal(np.sort(dot.vectors, axis=0), np.sort(shifted[:150], axis=0))
    argv = ["build", "--input", str(corpus.docs_path), "--ids", str(corpus.ids_path), "--name", "c"]
    assert build_main([*argv, "--root", str(root), "--index", "hnsw", "--metrics", "dot,cosine", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "(150 queries from recorded traffic)" in out
    _, after = active_manifest(root, "c")
    assert {m.index.self_check.query_source for m in after.metrics.values()} == {"recorded traffic"}
    assert build_main(["inspect", "--name", "c", "--root", str(root)]) == 0
    assert "query log dot: 150 vectors sampled from 150 queries" in capsys.readouterr().out


def test_turned_off_nothing_is_recorded(served) -> None:
    root, _, shifted = served
    with in_process(root, DOTCOS_QUERY_LOG="false") as client:
        client.post("/v1/collections/c/search", json={"vector": shifted[0].tolist()})
    assert not log_path(root, "c", "dot").parent.exists()


def test_two_workers_share_the_log_across_restarts(served, tmp_path: Path) -> None:
    root, _, shifted = served
    for run in range(2):
        server = start_server(root, tmp_path / f"server-{run}.log", DOTCOS_WORKERS="2", DOTCOS_QUERY_LOG_FLUSH_S="0.2")
        with server.client() as client:
            for i in range(40):
                assert client.post("/v1/collections/c/search", json={"vector": shifted[i].tolist()}).status_code == 200
        stop_server(server)
    sample = read_sample(log_path(root, "c", "dot"))
    assert sample is not None and sample.seen == 80 and len(sample.vectors) == 80
