"""The service core driven without HTTP, with the deployed settings (overridable per test)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from index_builder.artifact.layout import read_current
from service.core.loader import LocalLoader
from service.core.query import SearchOptions
from service.core.searcher import ScoreQuery, Searcher, SearchResult, SimilarQuery
from service.core.version import Version
from service.settings import ServiceSettings


def new_searcher(**settings: object) -> Searcher:
    chosen = ServiceSettings(**settings)  # type: ignore[arg-type]
    return Searcher(chosen.limits, chosen.execution)


SEARCHER = new_searcher()


def load(root: Path, name: str, searcher: Searcher = SEARCHER) -> Version:
    """The active version of a collection, loaded as the service loads it."""
    overlay = ServiceSettings().overlay
    return LocalLoader(root, searcher.coalescer, True, overlay)(name, read_current(root, name), lambda why: None)


def search(
    version: Version, vectors: np.ndarray, options: SearchOptions, searcher: Searcher = SEARCHER, field: str = "vector"
) -> SearchResult:
    return asyncio.run(searcher.search(version, vectors, options, field))


def similar(version: Version, query: SimilarQuery, searcher: Searcher = SEARCHER) -> SearchResult:
    return asyncio.run(searcher.similar(version, query))


def score(version: Version, query: ScoreQuery, searcher: Searcher = SEARCHER) -> list[list[tuple[str, float]]]:
    _, lists = asyncio.run(searcher.score(version, query))
    return [[(h.id, h.score) for h in row] for row in lists]
