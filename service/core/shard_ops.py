"""What one shard answers during a scatter-gather: plain functions over one loaded part.

The same functions run in this process (a sharded version served without Ray) and inside a
Ray Serve replica, so both answer identically. Each is lenient about ids the shard does not
hold; the gateway decides whether an id is unknown to the whole collection.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from service.core.collection import LoadedVersion
from service.core.config import Limits
from service.core.items import ScoreQuery, score_known
from service.core.search import Hit, SearchOptions, search


def search_part(part: LoadedVersion, vectors: np.ndarray, options: SearchOptions, limits: Limits,
                field: str) -> list[list[Hit]]:
    """This shard's top-k per query; `include` is narrowed to the ids this shard holds."""
    if options.include is not None:
        options = replace(options, include=known_ids(part, options.include))
    return search(part, vectors, options, limits, field).hits


def known_ids(part: LoadedVersion, ids: list[str]) -> list[str]:
    """The ids this shard holds, in the order given."""
    return [i for i in ids if i in part.rows_by_id]


def vector_of(part: LoadedVersion, doc_id: str) -> np.ndarray | None:
    """A stored document's vector, or None when another shard holds it."""
    return part.vector_of(doc_id)


def score_part(part: LoadedVersion, query: ScoreQuery, limits: Limits) -> tuple[str, list[list[float | None]]]:
    """Exact scores of the candidates this shard holds (None for the others)."""
    return score_known(part, query, limits)


OPS = {fn.__name__: fn for fn in (search_part, known_ids, vector_of, score_part)}
