"""A served version: its manifest's facts and the parts that answer for it.

Every version is N parts (one when unsharded) behind the `Parts` interface: `LocalParts` are
loaded in this process, searched in the search executor and coalesced across requests;
Ray parts (service.scaleout.ray_parts) are Serve replicas reached remotely. Either way each part
answers with arrays in true units, and the answers merge by score (`Answer.merge`), so a
sharded version answers exactly as the unsharded one would.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from index_builder.artifact.attributes import AttributeType
from index_builder.artifact.errors import InputError, InvalidMetric, NotFoundError
from index_builder.artifact.manifest import Manifest
from index_builder.retrieval.ann import ServedIndex
from index_builder.retrieval.faiss_params import EF_SEARCH, NPROBE
from index_builder.retrieval.scoring import MISSING, Prepared
from index_builder.retrieval.spaces import Metric, MetricSpace
from service.core.batching import Coalescer
from service.core.config import Limits
from service.core.filters import Node, compile_filter, with_ids
from service.core.overlay import Overlay, Snapshot
from service.core.part import Doc, Part, documents_of, known_ids, score_part, search_parts
from service.core.query import Answer, GroupBy, Query, SearchOptions, check_finite, check_options, check_zero
from service.core.tuning import Knobs

T = TypeVar("T")
MAX_NAMED_IDS = 5
ID_TABLE_BYTES = 100
"""Bytes of a worker's id table per document (the object array and the id -> row dict; docs/guides/sizing.md)."""
MAX_COSTS = 4096


def plain_cost(served: ServedIndex, query: Query) -> float:
    """Work of one unfiltered query against one index: vectors compared x dimension."""
    exact = query.options.exact and not served.exact
    compared = served.ntotal if exact else served.search_cost(query.knob(served.param))
    return float(compared * served.vectors.shape[1])


def unknown_ids(field: str, collection: str, missing: list[str]) -> NotFoundError:
    """The error for ids a collection does not hold, naming the first few."""
    shown = ", ".join(repr(i) for i in missing[:MAX_NAMED_IDS])
    more = f" and {len(missing) - MAX_NAMED_IDS} more" if len(missing) > MAX_NAMED_IDS else ""
    return NotFoundError(f"{field}: unknown id(s) in collection {collection!r}: {shown}{more}")


@functools.lru_cache(maxsize=1024)
def canonical_metric(text: str) -> str:
    """The canonical name of a metric as a request spells it (parsed once per spelling)."""
    return Metric.parse(text).name


@dataclass(frozen=True)
class Replica:
    """One copy of a part on a cluster node: the node's name and address (None while it waits
    for a node), and its state (RUNNING answers; STARTING, RECOVERING, STOPPING do not)."""

    node: str | None
    address: str | None
    state: str

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"


class Parts(Protocol):
    """How a version's parts are reached; every method covers all parts and merges their answers."""

    def placement(self) -> list[list[Replica]] | None:
        """Per part, its replicas and where they run (blocking: a cluster call); None when every
        part is loaded in this process."""
        ...

    async def search(self, query: Query) -> Answer: ...

    async def each(self, op: Callable[..., T], *args: Any) -> list[T]:
        """op(part, *args) on every part, in part order."""
        ...

    async def at(self, index: int, op: Callable[..., T], *args: Any) -> T:
        """op(part, *args) on one part."""
        ...

    def retire(self) -> None:
        """Release the parts once no request uses them any more (after a swap)."""
        ...


class LocalParts:
    """Parts loaded in this process: their work runs in the search executor, unfiltered searches
    coalesced across concurrent requests into one call over every part."""

    def __init__(self, parts: list[Part], executor: Executor, coalescer: Coalescer) -> None:
        self.parts, self.executor, self.coalescer = parts, executor, coalescer
        self._costs: dict[tuple[str, bool, int | None, int | None], float] = {}

    def cost(self, query: Query) -> float:
        """Estimated work of a plain query (vectors compared x dimension, over its rows and every
        part, the upserted documents included); the stored parts' share is computed once per knob."""
        knobs = (query.metric, query.options.exact, query.knob(EF_SEARCH), query.knob(NPROBE))
        stored = self._costs.get(knobs)
        if stored is None:
            if len(self._costs) > MAX_COSTS:
                self._costs.clear()
            stored = self._costs[knobs] = sum(plain_cost(part.indexes[query.metric], query) for part in self.parts)
        chunks = () if query.overlay is None else query.overlay.chunks
        upserted = sum(plain_cost(chunk.indexes[query.metric], query) for chunk in chunks)
        return (stored + upserted) * len(query.queries)

    def answer(self, query: Query) -> Answer:
        """Every part's answer and the upserted documents', merged (runs in the executor)."""
        chunks = () if query.overlay is None else query.overlay.chunks
        return search_parts([*self.parts, *chunks], query)

    async def search(self, query: Query) -> Answer:
        if not query.plain:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self.answer, query)
        options = query.options
        key: Hashable = (id(self), id(query.overlay), query.metric, options.exact, options.nprobe, options.ef_search)
        return await self.coalescer.run(key, query, self.answer, self.cost(query))

    async def each(self, op: Callable[..., T], *args: Any) -> list[T]:
        return list(await asyncio.gather(*(self.at(i, op, *args) for i in range(len(self.parts)))))

    async def at(self, index: int, op: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, op, self.parts[index], *args)

    def retire(self) -> None:
        return None

    def placement(self) -> None:
        return None


@dataclass(frozen=True)
class Version:
    """Immutable once loaded (but for its default knobs, which live recall may retune): a request
    holds one for its whole life, so a swap never tears it."""

    collection: str
    manifest: Manifest
    path: Path
    spaces: dict[str, MetricSpace]
    parts: Parts
    load_seconds: float
    loaded_at: datetime
    knobs: Knobs
    overlay: Overlay

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def default_metric(self) -> str:
        return next(iter(self.manifest.metrics))

    def memory(self) -> dict[str, int]:
        """What this version holds, in bytes: its raw vectors (memory-mapped), its indexes (HNSW
        graphs are read into each worker), its attribute columns, its id table (about
        ID_TABLE_BYTES per document in each worker) and its pending changes in this worker."""
        manifest, files = self.manifest, self.manifest.files
        parts = manifest.parts()
        held = {
            "vectors_bytes": sum(files[p.vectors_file].bytes for p in parts),
            "index_bytes": sum(files[f].bytes for p in parts for f in manifest.part_structure_files(p)),
            "attribute_bytes": sum(files[f].bytes for p in parts for f in manifest.attribute_files(p)),
            "id_table_bytes": manifest.count * ID_TABLE_BYTES,
            "overlay_bytes": self.overlay.snapshot.memory_bytes,
        }
        return {**held, "total_bytes": sum(held.values())}

    def exact_index(self, metric: str) -> bool:
        """Whether the metric's index answers exactly (flat): nothing for live recall to measure."""
        return self.manifest.metrics[metric].index.exact

    def metric_name(self, metric: str | None) -> str:
        """A built metric's canonical name (default: the first built), or an error naming the built ones."""
        if metric is None:
            return self.default_metric
        name = canonical_metric(metric)
        if name not in self.manifest.metrics:
            built = ", ".join(self.manifest.metrics)
            raise InvalidMetric(f"metric {name!r} is not built for collection {self.collection!r}; built: {built}")
        return name

    def prepare(
        self, vectors: np.ndarray, metric: str | None, field: str, zero_has_score: bool = False
    ) -> tuple[str, Prepared]:
        """Checked and prepared query vectors under a built metric. A zero-norm query is refused
        under normalizing metrics, unless the caller scores it as 0 (`/score`)."""
        check_finite(vectors, self.dim, self.collection, field)
        name = self.metric_name(metric)
        space = self.spaces[name]
        queries = Prepared.of(space, vectors)
        check_zero(queries, name, space.normalizes_queries and not zero_has_score, field)
        return name, queries

    def where(
        self, raw: Any, limits: Limits, include: list[str] | None = None, exclude: list[str] | None = None
    ) -> Node | None:
        """The request's filter checked against this collection's attributes, the id lists folded in."""
        tree = (
            None
            if raw is None
            else compile_filter(raw, self.collection, self.version, self.manifest.attributes, limits)
        )
        return with_ids(tree, include, exclude or [])

    def fields(self, options: SearchOptions) -> tuple[str, ...]:
        """The attributes each hit carries back: all with with_attributes, else the group_by key."""
        if options.group_by is not None:
            key = options.group_by.key
            entry = self.manifest.attributes.get(key)
            if entry is None:
                known = ", ".join(self.manifest.attributes) or "none (built without --attributes)"
                raise InputError(
                    f"group_by.key: unknown attribute {key!r}; collection {self.collection!r} has: {known}"
                )
            if entry.type is AttributeType.KEYWORDS:
                raise InputError(f"group_by.key: {key!r} is a keyword list; group by a single-valued attribute")
        if options.with_attributes:
            return tuple(self.manifest.attributes)
        return () if options.group_by is None else (options.group_by.key,)

    def query(self, vectors: np.ndarray, options: SearchOptions, limits: Limits, field: str) -> Query:
        """Every check a search needs before any part runs (once per request)."""
        check_options(options, len(vectors), limits)
        name, queries = self.prepare(vectors, options.metric, field)
        where = self.where(options.filter, limits, options.include, options.exclude)
        built = self.manifest.metrics[name].index
        fields = self.fields(options)
        return Query(
            name,
            queries,
            options,
            self.knobs.current(name),
            limits,
            where,
            fields,
            built.filter_plan,
            built.exact_micros,
            self.changes(),
        )

    def changes(self) -> Snapshot | None:
        """The changes since the build as of now (None when nothing is overlaid)."""
        snapshot = self.overlay.snapshot
        return snapshot if snapshot.chunks or len(snapshot.hidden.rows) else None

    async def search(self, query: Query) -> Answer:
        """The parts' merged answer, grouped when asked, without hits below the score threshold."""
        group = query.options.group_by
        answer = await self.parts.search(query) if group is None else await self._grouped(query, group)
        return answer.at_least(query.options.score_threshold)

    async def _grouped(self, query: Query, group: GroupBy) -> Answer:
        """k hits with at most max_per_group per key value: rank more candidates until k are found,
        every passing document was ranked, or max_group_candidates is reached."""
        k, cap = query.options.k, max(query.limits.max_group_candidates, query.options.k)
        fetch = min(cap, k * min(group.max_per_group + 3, 8))
        while True:
            answer = await self.parts.search(query.batched(query.queries, fetch))
            grouped, complete = group_answer(answer, group, k)
            if complete or fetch >= cap:
                break
            fetch = min(cap, fetch * 4)
        return grouped if query.options.with_attributes else grouped._replace(attrs=None)

    async def check_known(self, ids: list[str], field: str) -> None:
        """NotFoundError naming the ids the collection does not hold (stored and not deleted, or upserted)."""
        changes = self.changes()
        held = {i for found in await self.parts.each(known_ids, ids) for i in found}
        if changes is not None:
            held = {i for i in ids if changes.in_delta(i) or (i in held and i not in changes.deleted)}
        missing = [i for i in ids if i not in held]
        if missing:
            raise unknown_ids(field, self.collection, missing)

    async def documents(
        self, ids: list[str], changes: Snapshot | None, wanted: tuple[str, ...], with_vectors: bool
    ) -> dict[str, Doc]:
        """The documents of `ids` standing under `changes` (a changed one as changed, a deleted one
        absent), with the attributes `wanted` and, asked, their vectors."""
        stored = [i for i in ids if changes is None or not changes.changed(i)]
        found: dict[str, Doc] = {}
        for docs in await self.parts.each(documents_of, stored, wanted, with_vectors):
            found.update((doc.id, doc) for doc in docs if doc is not None)
        for chunk, changed in [] if changes is None else changes.by_chunk(ids):
            found.update((doc.id, doc) for doc in documents_of(chunk, changed, wanted, with_vectors) if doc)
        return found

    async def vectors_of(self, ids: list[str], field: str, changes: Snapshot | None = None) -> np.ndarray:
        """The vectors of documents as (n, d) float32 in the order given; NotFoundError naming the
        ids the collection does not hold (under `changes`, default: as of now)."""
        found = await self.documents(ids, changes if changes is not None else self.changes(), (), True)
        missing = [i for i in ids if i not in found]
        if missing:
            raise unknown_ids(field, self.collection, missing)
        vectors = [found[i].vector for i in ids]
        return np.stack([v for v in vectors if v is not None]).astype(np.float32, copy=False)

    async def score(
        self, metric: str, queries: Prepared, ids: list[list[str]], where: Node | None = None
    ) -> list[list[tuple[str, float]]]:
        """Exact scores of candidates held anywhere in the collection, in the order given; those the
        filter `where` leaves out are dropped. Each candidate is scored by the one part holding it
        (a stored part, unless the document was changed since, or the upserted documents)."""
        changes = self.changes()
        found_lists = await self.parts.each(score_part, metric, queries, ids, where)
        if changes is not None:
            found_lists = [changes.held_by(None, ids, found) for found in found_lists]
            for chunk in changes.chunks:
                found_lists.append(changes.held_by(chunk, ids, score_part(chunk, metric, queries, ids, where)))
        out = []
        for i, candidates in enumerate(ids):
            values = [next((f[i][j] for f in found_lists if f[i][j] is not None), None) for j in range(len(candidates))]
            missing = [c for c, v in zip(candidates, values, strict=True) if v is None]
            if missing:
                raise unknown_ids(f"ids[{i}]" if len(ids) > 1 else "ids", self.collection, missing)
            out.append([(c, float(v)) for c, v in zip(candidates, values, strict=True) if v is not None and v == v])
        return out


def group_answer(answer: Answer, group: GroupBy, k: int) -> tuple[Answer, bool]:
    """The k best hits per query with at most max_per_group per value of the key (hits whose key
    is null are not grouped), and whether every query is complete: it has k hits, or the answer
    held every candidate there is (it came back short)."""
    assert answer.attrs is not None
    nq = len(answer.rows)
    keep = np.full((nq, k), -1, dtype=np.int64)
    complete = True
    for i in range(nq):
        taken: list[int] = []
        counts: dict[Any, int] = {}
        for j, attrs in enumerate(answer.attrs[i]):
            if attrs is None or len(taken) == k:
                continue
            value = attrs[group.key]
            if value is not None and counts.get(value, 0) >= group.max_per_group:
                continue
            counts[value] = counts.get(value, 0) + 1
            taken.append(j)
        keep[i, : len(taken)] = taken
        complete = complete and (len(taken) == k or answer.rows[i, -1] == MISSING)
    line = np.arange(nq)[:, None]
    found = keep >= 0
    at = np.where(found, keep, 0)
    scores = np.where(found, answer.scores[line, at], -np.inf)
    rows = np.where(found, answer.rows[line, at], MISSING)
    labels, attrs = answer.labels[line, at], answer.attrs[line, at]
    labels[~found] = None
    attrs[~found] = None
    return Answer(scores, rows, labels, attrs), complete
