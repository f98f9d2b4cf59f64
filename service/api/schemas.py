"""Request and response bodies of the public HTTP interface."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from index_builder.artifact.manifest import AttributeEntry, ChangeSpan, FilterRoute
from service.core.query import GroupBy, SearchOptions
from service.core.rerank import Mmr
from service.core.serving import Routing

FILTER_DESCRIPTION = (
    'a boolean tree {"must": [...], "should": [...], "must_not": [...]} (nestable) of conditions '
    '{"key": K, "match": V}, {"key": K, "any": [V, ...]}, {"key": K, "range": {"gt"|"gte"|"lt"|"lte": N}}, '
    '{"key": K, "is_null": true} and {"has_id": [id, ...]}; applied inside the search'
)


class _Body(BaseModel):
    """A request body: unknown fields refused, and values of exactly their JSON types ("5" is not 5;
    an integer is a number)."""

    model_config = ConfigDict(extra="forbid", strict=True)


AT_LEAST_ONE: dict[str, Any] = {"minimum": 1}
"""Documented bounds of a count whose range the core checks (out of range: 400, like the limits)."""


class SearchParams(_Body):
    exact: bool = Field(False, description="brute force over the raw vectors: the ground truth")
    nprobe: int | None = Field(
        None, description="IVF lists to visit (IVF indexes only)", json_schema_extra=AT_LEAST_ONE
    )
    ef_search: int | None = Field(
        None,
        description="HNSW candidate list size (HNSW only; at most DOTCOS_MAX_EF_SEARCH)",
        json_schema_extra=AT_LEAST_ONE,
    )


class MmrField(_Body):
    diversity: float = Field(
        description="0: by relevance alone; 1: by diversity alone", json_schema_extra={"minimum": 0, "maximum": 1}
    )
    candidates: int = Field(
        100,
        description="the top candidates by relevance MMR picks among (it must exceed k to change anything)",
        json_schema_extra=AT_LEAST_ONE,
    )


class GroupByField(_Body):
    key: str = Field(description="a keyword, integer, float or boolean attribute")
    max_per_group: int = Field(1, ge=1, description="most results sharing one value of the key")


class _Pinned(_Body):
    version: str | None = Field(
        None, description="answer from this served version: an alias, 'current' or a version id (never re-routed)"
    )
    model: str | None = Field(
        None, description="answer from a served version built with this model (409 when none is; never re-routed)"
    )
    route_key: str | None = Field(
        None, description="e.g. a user id: the arm of the collection's split this key hashes to answers"
    )

    def routing(self) -> Routing:
        return Routing(self.version, self.model, self.route_key)


class _QueryFields(_Pinned):
    k: int = Field(10, description="results per query (at most DOTCOS_MAX_K)", json_schema_extra=AT_LEAST_ONE)
    metric: str | None = Field(None, description="dot, cosine, ...; default: the first built")
    exclude: list[str] = Field(default_factory=list, description="ids never to return")
    include: list[str] | None = Field(None, description="restrict results to these ids")
    filter: dict[str, Any] | None = Field(None, description=FILTER_DESCRIPTION)
    group_by: GroupByField | None = Field(
        None, description="at most max_per_group results per value of key (a null key is not grouped)"
    )
    score_threshold: float | None = Field(None, description="drop results scoring below this, in the metric's units")
    with_attributes: bool = Field(False, description="return each result's attributes")
    with_vectors: bool = Field(False, description="return each result's stored float32 vector")
    offset: int = Field(
        0,
        description="results to skip: the answer is [offset, offset + k) of the top offset + k (offset + k at most "
        "DOTCOS_MAX_K)",
        json_schema_extra={"minimum": 0},
    )
    mmr: MmrField | None = Field(
        None,
        description="diversify: among the top `candidates` by relevance, pick greedily the one maximising "
        "(1 - diversity) * relevance - diversity * max cosine to those picked; score stays the relevance",
    )
    params: SearchParams = Field(
        default_factory=lambda: SearchParams(), description="the search knobs (defaults: the build's tuned values)"
    )

    def options(self) -> SearchOptions:
        return SearchOptions(
            k=self.k,
            metric=self.metric,
            exclude=self.exclude,
            include=self.include,
            exact=self.params.exact,
            nprobe=self.params.nprobe,
            ef_search=self.params.ef_search,
            filter=self.filter,
            group_by=None if self.group_by is None else GroupBy(self.group_by.key, self.group_by.max_per_group),
            score_threshold=self.score_threshold,
            with_attributes=self.with_attributes,
            with_vectors=self.with_vectors,
            offset=self.offset,
            mmr=None if self.mmr is None else Mmr(self.mmr.diversity, self.mmr.candidates),
        )


class SearchRequest(_QueryFields):
    vector: list[float] = Field(
        min_length=1, description="the query vector: as many numbers as the collection's dimension"
    )


class BatchSearchRequest(_QueryFields):
    vectors: list[list[float]] = Field(
        min_length=1, description="the query vectors, each of the collection's dimension"
    )


class SimilarRequest(_QueryFields):
    id: str | None = Field(None, description="a document of the collection (never returned itself)")
    ids: list[str] | None = Field(
        None, min_length=1, description="or several: the documents around their average (never returned themselves)"
    )
    vector: list[float] | None = Field(None, min_length=1, description="or a document vector not in it")

    @model_validator(mode="after")
    def _one_source(self) -> SimilarRequest:
        if sum(source is not None for source in (self.id, self.ids, self.vector)) != 1:
            raise ValueError("give exactly one of id, ids and vector")
        return self


Example = str | list[float]


class RecommendRequest(_QueryFields):
    """Documents recommended by examples: ids of the collection or vectors (Qdrant's strategies)."""

    positive: list[Example] = Field(min_length=1, description="ids or vectors to move towards")
    negative: list[Example] = Field(default_factory=list, description="ids or vectors to move away from")
    strategy: Literal["average_vector", "best_score"] = Field(
        "average_vector",
        description="average_vector: search around avg(positive) + (avg(positive) - avg(negative)); best_score: "
        "rank the union of the searches around each positive by max similarity to a positive, negated where a "
        "negative is closer",
    )


class RouteRequest(_Pinned):
    """Which version would answer (route_key, version or model), without searching."""


class RouteResponse(BaseModel):
    collection: str
    arm: str
    version: str
    model: str | None


class GetRequest(_Body):
    ids: list[str] = Field(min_length=1, description="documents to read back, in the order wanted")
    with_vectors: bool = Field(False, description="return each document's stored float32 vector")
    with_attributes: bool = Field(True, description="return each document's attributes")


class ScrollRequest(_Body):
    filter: dict[str, Any] | None = Field(None, description=FILTER_DESCRIPTION)
    limit: int = Field(
        100, description="documents per page, 1 to 1000", json_schema_extra={"minimum": 1, "maximum": 1000}
    )
    cursor: str | None = Field(None, description="next_cursor of the previous page; none for the first page")
    with_vectors: bool = Field(False, description="return each document's stored float32 vector")
    with_attributes: bool = Field(True, description="return each document's attributes")


class CountRequest(_Body):
    filter: dict[str, Any] | None = Field(None, description=FILTER_DESCRIPTION)


class ScoreRequest(_Pinned):
    vectors: list[list[float]] | None = Field(None, min_length=1, description="one user vector per list")
    vector: list[float] | None = Field(None, min_length=1, description="single form, with a flat ids list")
    ids: list[list[str]] | list[str] = Field(description="candidate ids: one list per vector, or a flat list")
    metric: str | None = None
    filter: dict[str, Any] | None = Field(
        None, description=f"{FILTER_DESCRIPTION}; candidates it leaves out are dropped from the results"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ScoreRequest:
        if (self.vector is None) == (self.vectors is None):
            raise ValueError("give exactly one of vector (with a flat ids list) and vectors (with a list of lists)")
        nested = bool(self.ids) and isinstance(self.ids[0], list)
        if self.vector is not None and nested:
            raise ValueError("ids must be a flat list of ids with vector")
        if self.vectors is not None and self.ids and not nested:
            raise ValueError("ids must be a list of id lists (one per vector) with vectors")
        return self


class Hit(BaseModel):
    id: str
    score: float
    attributes: dict[str, Any] | None = Field(None, description="present with with_attributes")
    vector: list[float] | None = Field(None, description="present with with_vectors")


class _Answered(BaseModel):
    collection: str
    version: str
    metric: str
    model: str | None = Field(None, description="the model the answering version was built with")
    arm: str = Field(description="how the answering version was reached: current, an alias, or a split's arm")


class SearchResponse(_Answered):
    results: list[Hit]


class BatchSearchResponse(_Answered):
    results: list[list[Hit]]


class ScoreResponse(_Answered):
    results: list[list[Hit]] | list[Hit]


class _Read(BaseModel):
    collection: str
    version: str


class Document(BaseModel):
    id: str
    vector: list[float] | None = Field(None, description="present with with_vectors")
    attributes: dict[str, Any] | None = Field(None, description="present with with_attributes")


class GetResponse(_Read):
    documents: list[Document] = Field(description="the documents that stand now, in the order asked")
    missing: list[str] = Field(description="ids the collection does not hold (unknown or deleted)")


class ScrollResponse(_Read):
    documents: list[Document]
    next_cursor: str | None = Field(description="for the next page; null after the last")


class CountResponse(_Read):
    count: int


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class BandPlan(BaseModel):
    uses: str = Field(description="index, filter_index or exact: the cheapest at the band's selectivity")
    micros: float | None = Field(None, description="what it cost, microseconds per query and part (build machine)")
    ways: list[FilterRoute] = Field(
        description="the ways that kept the recall target: index (its knob raised by boost) or filter_index (at "
        "nprobe), each with its recall@10 and microseconds"
    )
    exact_micros: float | None = Field(None, description="what an exact scan cost at this band")


class MetricInfo(BaseModel):
    index_kind: str
    factory: str
    layout: str
    count: int
    exact: bool
    search_params: dict[str, int] = Field(description="the default knob now (live recall may have retuned it)")
    built_search_params: dict[str, int] = Field(default_factory=dict, description="the default knob the build chose")
    recall_at_10: float | None
    self_check_queries: int | None
    self_check_query_source: str | None = Field(
        None, description="what the recall was measured on: queries (user vectors) or documents (an estimate)"
    )
    live_recall: dict[str, float | int | None] | None = Field(
        None,
        description="recall@10 of sampled served searches at the default knob against exact search, with its "
        "sample count and 95% interval (this version; null for exact indexes)",
    )
    filter_index: str | None = Field(
        None, description="the second structure filtered searches may take (a FAISS factory string), if built"
    )
    value_indexes: list[str] = Field(
        default_factory=list,
        description="keyword values (attribute=value) whose documents have an index of their own, which a filter "
        "requiring the value searches",
    )
    filter_plan: dict[str, BandPlan] = Field(
        default_factory=dict,
        description="per selectivity band (share of documents passing; a filter uses the band at or below it), "
        "what the planner uses and the ways the build measured",
    )


class ChangesInfo(BaseModel):
    """The changes on the served version: in this worker's view now, and what its build did."""

    journal_position: int = Field(description="the last journal position this worker has applied")
    built_position: int = Field(description="the version's fold point: later changes are pending on it")
    pending_deletes: int
    pending_upserts: int
    pending_attribute_changes: int = Field(description="stored documents with attribute changes pending")
    memory_bytes: int = Field(description="memory the changed documents take in this worker")
    chunks: int = Field(description="chunks the changed documents are held in (merged as they grow)")
    scanned_rows: int = Field(
        description="changed documents searched by exact scan: chunks under DOTCOS_OVERLAY_INDEX_ROWS, or not "
        "yet indexed in the background (rows superseded since are counted until their chunk merges)"
    )
    indexing_rows: int = Field(description="changed documents being indexed in the background now")
    at_build: dict[str, ChangeSpan] = Field(
        default_factory=dict,
        description="what the build did with the changes pending before it: folded, kept, discarded, carried "
        "(a restore) or set_aside, each with its journal positions and count",
    )
    restored_from: dict[str, str | int] | None = Field(None, description="the version or snapshot a restore used")


class ServedVersion(BaseModel):
    version: str
    model: str | None
    memory: dict[str, int] = Field(
        description="bytes it holds: raw vectors (memory-mapped, shared by workers), indexes (HNSW graphs in each "
        "worker), attribute columns, id table and pending changes (in this worker), and their total"
    )


class ReplicaInfo(BaseModel):
    """One replica of a part on a cluster node."""

    node: str | None = Field(
        description="the node's name (`ray start --node-name`), else its address; null while it waits for a node"
    )
    address: str | None = Field(description="the node's IP address; null while it waits for a node")
    state: str = Field(description="RUNNING answers queries; STARTING, RECOVERING, STOPPING do not")


class PartReplicas(BaseModel):
    """Where one part of the version is served."""

    part: int = Field(description="the part (shard) number")
    replicas: list[ReplicaInfo]


class CollectionInfo(BaseModel):
    name: str
    version: str
    model: str | None = Field(None, description="the model the current version was built with")
    count: int = Field(description="documents standing now: the built ones, less deletes, plus upserts")
    built_count: int = Field(description="documents the version was built with")
    dim: int
    default_metric: str
    metrics: dict[str, MetricInfo]
    not_built: dict[str, str]
    created_at: datetime
    loaded_at: datetime
    load_seconds: float
    norm_profile: dict[str, float]
    shards: int = 1
    attributes: dict[str, AttributeEntry] = Field(
        default_factory=dict, description="filterable attributes: type, null count, distinct keyword values"
    )
    changes: ChangesInfo = Field(description="changes since the build")
    parts: list[PartReplicas] | None = Field(
        None, description="each part's replicas and the node each runs on (parts on Ray Serve; null: in this process)"
    )
    served: dict[str, ServedVersion] = Field(
        default_factory=dict, description="every served version by label: current, and each alias"
    )
    route: dict[str, Any] | None = Field(None, description="the split of route keys over arms, and the shadow")
    refused: dict[str, str] = Field(
        default_factory=dict, description="labels (aliases, the route's arms, the shadow) not served, and why"
    )
    shadow: dict[str, Any] | None = Field(
        None, description="per metric: mean overlap@k with the live answer, score shift, latency ratio, samples"
    )


class DeleteRequest(_Body):
    ids: list[str] = Field(description="ids to delete; unknown ones are reported and skipped")


class UpsertRequest(_Body):
    """Insert or replace whole documents: an upserted document has exactly the vector and the
    attributes given (attributes left out are null). To change attributes alone, use /attributes."""

    ids: list[str] = Field(description="ids to insert or replace, each once")
    vectors: list[list[float]] = Field(description="one vector per id, of the collection's dimension")
    attributes: list[dict[str, Any] | None] | None = Field(
        None, description="one object of attribute values per id (null or missing keys: null)"
    )


class AttributesRequest(_Body):
    """Change some attributes of stored documents, keeping their vectors and other attributes."""

    ids: list[str] = Field(description="documents to change; ids the collection does not hold are reported")
    values: dict[str, Any] = Field(
        default_factory=dict, alias="set", description="attribute values to set (null: unset it)"
    )
    unset: list[str] = Field(default_factory=list, description="attributes to make null")


class ChangeResponse(BaseModel):
    collection: str
    position: int = Field(description="the journal position of the change (durable when answered)")
    count: int = Field(description="documents deleted or upserted")
    unknown: list[str] = Field(
        default_factory=list, description="ids a delete or an attribute change did not find (nothing done for them)"
    )


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class ReloadItem(BaseModel):
    collection: str
    version: str | None
    status: str
    error: str | None


class ReloadReport(BaseModel):
    results: list[ReloadItem]


class Status(BaseModel):
    status: str
    collections: dict[str, str] = Field(default_factory=dict)
    refused: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="per collection, aliases not served and why (DOTCOS_MAX_SERVED_VERSIONS)"
    )
