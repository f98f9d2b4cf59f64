"""A version published with manifest schema 1 stays loadable and answers the same (loaded from a
copy: the service records the active version in the collection's journal)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from index_builder.artifact.integrity import verify_version
from index_builder.artifact.layout import read_current, version_dir
from index_builder.artifact.manifest import read_manifest
from service.core.query import SearchOptions
from tests.core_calls import load, search
from tests.service.oracle import space_scores

ROOT = Path(__file__).parent / "golden" / "schema-v1"


def test_schema_v1_artifact_verifies_and_answers_like_numpy(tmp_path: Path) -> None:
    root = tmp_path / "schema-v1"
    shutil.copytree(ROOT, root)
    path = version_dir(root, "golden", read_current(root, "golden"))
    manifest = read_manifest(path)
    assert manifest.schema_version == 1
    verify_version(manifest, path)
    version = load(root, "golden")
    docs = np.load(path / "vectors.npy")
    query = np.array([[0.3, -1.0, 0.5, 2.0]], dtype=np.float32)
    for metric in ("dot", "cosine", "norm_pow:0.5", "covariance"):
        result = search(version, query, SearchOptions(k=5, metric=metric, exact=True))
        space = manifest.metric_space(metric, path)
        expected = space_scores(space, query, docs)[0]
        got = [expected[int(hit.id[1:])] for hit in result.hits[0]]
        np.testing.assert_allclose([h.score for h in result.hits[0]], got, rtol=1e-5)
        np.testing.assert_allclose(sorted(got, reverse=True), np.sort(expected)[::-1][:5], rtol=1e-5)
