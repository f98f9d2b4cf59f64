"""The demo collection `make run` and `docker compose up` start with, built only if none exists."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from index_builder.artifact.layout import list_collections
from index_builder.indexes import IndexOptions
from index_builder.parts import build
from index_builder.pipeline import UNSHARDED, BuildRequest, Sharding
from index_builder.progress import Progress
from index_builder.publish import new_staging_dir, new_version_name
from index_builder.readers import ParquetColumns
from index_builder.retrieval.spaces import parse_metric_list
from index_builder.staging import InputSpec
from index_builder.synthetic import TwoTowerSpec, two_tower

log = logging.getLogger(__name__)

DEMO_NAME = "demo"


def demo_request(root: Path, workdir: Path, spec: TwoTowerSpec, sharding: Sharding = UNSHARDED) -> BuildRequest:
    """A build of generated two-tower-like embeddings with item ids, as a user would run it."""
    docs, queries = two_tower(spec)
    np.save(workdir / "docs.npy", docs)
    np.save(workdir / "queries.npy", queries)
    (workdir / "ids.txt").write_text("".join(f"item-{i:06d}\n" for i in range(len(docs))))
    columns = ParquetColumns()
    return BuildRequest(
        inputs=InputSpec([workdir / "docs.npy"], "npy", columns, [workdir / "ids.txt"]),
        collection=DEMO_NAME,
        root=root,
        metrics=parse_metric_list("dot,cosine"),
        index=IndexOptions(kind="hnsw"),
        queries=InputSpec([workdir / "queries.npy"], "npy", columns),
        shards=sharding.shards,
        ray=sharding.ray,
    )


def ensure_demo(root: Path, spec: TwoTowerSpec, progress: Progress, sharding: Sharding = UNSHARDED) -> bool:
    """Build the demo collection unless the root already serves a collection; True if built. The
    generated input is written in a staging directory under the root (removed afterwards), where
    Ray tasks on other nodes read it as they read the root."""
    existing = list_collections(root)
    if existing:
        log.info("%s already holds %s; demo build skipped", root, ", ".join(existing))
        return False
    work = new_staging_dir(root, DEMO_NAME, f"input-{new_version_name()}")
    try:
        build(demo_request(root, work, spec, sharding), progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return True
