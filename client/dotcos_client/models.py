"""What calls return: hits, documents and results as dataclasses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Hit:
    """One result: the document's id, its score in the metric's true units, and its attributes
    and stored vector when asked for (with_attributes, with_vectors)."""

    id: str
    score: float
    attributes: dict[str, Any] | None = None
    vector: np.ndarray | None = None

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Hit:
        vector = raw.get("vector")
        stored = None if vector is None else np.asarray(vector, np.float32)
        return cls(str(raw["id"]), float(raw["score"]), raw.get("attributes"), stored)


@dataclass(frozen=True)
class SearchResult:
    """The hits of one query, and which version (and model, and rollout arm) answered. Iterates
    over its hits."""

    collection: str
    version: str
    metric: str
    hits: list[Hit]
    model: str | None = None
    arm: str | None = None

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, index: int) -> Hit:
        return self.hits[index]

    @property
    def ids(self) -> list[str]:
        return [hit.id for hit in self.hits]


@dataclass(frozen=True)
class Document:
    """A document read back: its id, its stored float32 vector and its attributes, when asked for."""

    id: str
    vector: np.ndarray | None = None
    attributes: dict[str, Any] | None = None

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Document:
        vector = raw.get("vector")
        return cls(str(raw["id"]), None if vector is None else np.asarray(vector, np.float32), raw.get("attributes"))


@dataclass(frozen=True)
class Documents:
    """Documents read back by id, in the order asked, and the ids the collection does not hold."""

    documents: list[Document]
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Change:
    """What a write did: its journal position (durable when answered), how many documents it
    changed, and the ids it did not find."""

    collection: str
    position: int
    count: int
    unknown: list[str] = field(default_factory=list)
