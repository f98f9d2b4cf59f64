"""Request and response bodies of the public HTTP interface."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from service.core.search import SearchOptions


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchParams(_Body):
    exact: bool = Field(False, description="brute force over the raw vectors: the ground truth")
    nprobe: int | None = Field(None, ge=1, description="IVF lists to visit (IVF indexes only)")
    ef_search: int | None = Field(None, ge=1, description="HNSW candidate list size (HNSW only)")


class _QueryFields(_Body):
    k: int = Field(10, ge=1, description="results per query (at most DOTCOS_MAX_K)")
    metric: str | None = Field(None, description="dot, cosine, ...; default: the first built")
    exclude: list[str] = Field(default_factory=list, description="ids never to return")
    include: list[str] | None = Field(None, description="restrict results to these ids")
    params: SearchParams = Field(default_factory=lambda: SearchParams())

    def options(self) -> SearchOptions:
        return SearchOptions(k=self.k, metric=self.metric, exclude=self.exclude, include=self.include,
                             exact=self.params.exact, nprobe=self.params.nprobe,
                             ef_search=self.params.ef_search)


class SearchRequest(_QueryFields):
    vector: list[float] = Field(min_length=1)


class BatchSearchRequest(_QueryFields):
    vectors: list[list[float]] = Field(min_length=1)


class Hit(BaseModel):
    id: str
    score: float


class SearchResponse(BaseModel):
    collection: str
    version: str
    metric: str
    results: list[Hit]


class BatchSearchResponse(BaseModel):
    collection: str
    version: str
    metric: str
    results: list[list[Hit]]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class MetricInfo(BaseModel):
    index_kind: str
    factory: str
    layout: str
    count: int
    exact: bool
    search_params: dict[str, int]
    recall_at_10: float | None
    self_check_queries: int | None


class CollectionInfo(BaseModel):
    name: str
    version: str
    count: int
    dim: int
    default_metric: str
    metrics: dict[str, MetricInfo]
    created_at: datetime
    loaded_at: datetime
    load_seconds: float
    norm_profile: dict[str, float]


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
