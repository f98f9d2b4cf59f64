"""Sharding: which shard holds a document, and merging per-shard answers into one.

A document's shard depends only on its id (a unkeyed, stable 64-bit BLAKE2b of the UTF-8
id, modulo the shard count), so a rebuild with the same shard count keeps every id where it
was, whatever the input order or file split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

from index_builder.retrieval.scoring import MISSING, merge_topk

SHARD_KEY = "blake2b64(utf-8 id) mod shards"


def shard_of(ids: Iterable[str], shards: int) -> np.ndarray:
    """The shard number of every id (int64 array, same order)."""
    digests = (int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little") for i in ids)
    return np.fromiter((d % shards for d in digests), dtype=np.int64)


def shard_name(shard: int) -> str:
    """How shard number `shard` appears in file names: s000, s001, ..."""
    return f"s{shard:03d}"


def merge_parts(
    parts: Sequence[tuple[np.ndarray, np.ndarray]], offsets: Sequence[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) over all shards from each shard's own top-k, rows made global.

    Shard i's local row r becomes offsets[i] + r; MISSING stays MISSING. Exact per-shard
    answers merge into the exact global answer, because every shard scores in true units.
    """
    rows = [np.where(r == MISSING, MISSING, r + offset) for (_, r), offset in zip(parts, offsets, strict=True)]
    return merge_topk([s for s, _ in parts], rows, k)
