"""Service settings: one typed object read from the environment (prefix DOTCOS_).

Every setting is an environment variable `DOTCOS_<NAME>`; the settings reference
(docs/reference/settings.md) is rendered from this model by `python -m docsgen`. The core's
dataclasses are filled from here and have no defaults of their own.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core.config import ExecutionSettings, Limits, OverlaySettings, RaySettings

C = TypeVar("C")


class ServiceSettings(BaseSettings):
    """Validated at start-up; the admin token is a secret and never logged."""

    model_config = SettingsConfigDict(env_prefix="DOTCOS_", extra="ignore")

    index_root: Path = Field(Path("./indexes"), description="where published collections are read from")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    workers: int = Field(1, ge=1, description="uvicorn worker processes (each loads every collection)")
    log_level: str = Field("info", description="debug, info, warning or error")
    reload_interval: float = Field(2.0, ge=0, description="seconds between checks of every CURRENT; 0: never")
    admin_token: SecretStr | None = Field(None, description="bearer token of the admin routes; unset: no admin routes")
    max_served_versions: int = Field(
        3, ge=1, description="most versions of a collection served at once (current + aliases); more are refused"
    )
    max_k: int = Field(1000, ge=1, description="largest k a request may ask for")
    max_batch: int = Field(1024, ge=1, description="most query vectors in one request")
    max_body_bytes: int = Field(16 << 20, ge=1024, description="largest request body (413 beyond)")
    max_filter_ids: int = Field(100_000, ge=1, description="most ids in include, exclude or a /score request")
    exact_filter_threshold: int | None = Field(
        None,
        ge=0,
        description="filters passing up to this many documents (of a part) are scored exactly; "
        "unset: whenever that costs less than the filtered index search",
    )
    max_filter_conditions: int = Field(64, ge=1, description="most conditions in one filter tree")
    max_filter_depth: int = Field(5, ge=1, description="deepest nesting of a filter tree (the top level is 1)")
    max_group_candidates: int = Field(
        10_000, ge=1, description="most candidates a group_by search ranks to fill k results"
    )
    max_ef_search: int = Field(4096, ge=1, description="largest efSearch a request (or a filter) may use")
    query_log: bool = Field(True, description="record a sample of served query vectors (see Query log)")
    query_log_size: int = Field(2000, ge=1, description="query vectors kept per collection and metric")
    query_log_flush_s: float = Field(30.0, gt=0, description="seconds between merges of a worker's sample into the log")
    live_recall_sample: float = Field(
        0.01, ge=0, le=1, description="share of served ANN searches re-run exactly for live recall (0: off)"
    )
    live_recall_cpu_share: float = Field(
        0.05, gt=0, le=1, description="most of one core the live recall re-runs may use"
    )
    live_recall_adapt: bool = Field(
        True, description="retune each metric's default knob to hold the target recall (false: monitor only)"
    )
    overlay_refresh_s: float = Field(
        0.5, gt=0, description="seconds between each worker's reads of the change journal (see Changes)"
    )
    overlay_max_entries: int = Field(
        1_000_000, ge=1, description="most pending deletes + upserts per collection; more get 503 until a rebuild"
    )
    overlay_max_bytes: int = Field(
        1 << 30, ge=1, description="most memory the upserted documents of a collection may take in a worker"
    )
    overlay_index_rows: int = Field(
        20_000,
        ge=1,
        description="rows from which a chunk of changed documents is given, in the background, an HNSW index like "
        "the stored one (where the stored index is HNSW); smaller chunks are searched exactly",
    )
    max_change_ids: int = Field(10_000, ge=1, description="most ids in one delete or upsert call")
    journal_segment_mb: int = Field(64, ge=1, description="size at which the change journal starts a new segment")
    mmap: bool = Field(True, description="memory-map vectors and indexes where FAISS allows")
    omp_threads: int | None = Field(None, ge=1, description="FAISS threads per worker (default: cores / workers)")
    search_threads: int | None = Field(
        None, ge=1, description="executor threads for FAISS work (default: max(2, cores))"
    )
    coalesce_max_batch: int = Field(256, ge=1, description="most query rows coalesced into one FAISS call")
    coalesce_window_ms: float = Field(0.0, ge=0, description="how long a lone search waits for company (0: not at all)")
    coalesce_in_flight: int = Field(1, ge=1, description="coalesced FAISS calls running at once per lane")
    inline_max_cost: float = Field(
        8e6,
        ge=0,
        description="searches estimated at most this much work (vectors compared x dimension, over the "
        "request's queries) run on the event loop, sparing the executor hop; 0: never",
    )
    blas_threshold: int = Field(16, ge=1, description="flat searches of this many queries or more use BLAS")
    max_pending: int = Field(512, ge=0, description="searches that may wait; more get 503 (0 sheds all: drain)")
    switch_interval_ms: float = Field(1.0, gt=0, le=100, description="the GIL switch interval")
    gc_freeze: bool = Field(True, description="freeze the heap after each load (see service.core.heap)")
    default_deadline_ms: float | None = Field(None, gt=0, description="deadline of requests without X-Deadline-Ms")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS (JSON list)")
    ray_address: str | None = Field(None, description="serve parts on Ray Serve; 'local' starts a cluster")
    ray_replicas: int = Field(1, ge=1, description="Serve replicas per part")
    ray_replica_cpus: float = Field(
        0.25,
        ge=0,
        description="CPUs each part replica reserves (a quarter lets one "
        "small machine hold several collections' parts)",
    )
    ray_retries: int = Field(3, ge=0, description="retries of a call to a part whose replica did not answer")
    ray_retry_backoff_s: float = Field(0.2, ge=0, description="wait before retry n is n times this")
    ray_call_timeout_s: float = Field(
        5.0,
        gt=0,
        description="how long a call to a part replica may take before it is retried on another "
        "(a node that vanishes answers nothing until Ray declares it dead)",
    )
    ray_drain_s: float = Field(30.0, ge=0, description="how long a replaced version's parts drain before deletion")
    ray_deploy_timeout_s: float = Field(300.0, gt=0, description="how long a version's parts may take to start")
    ray_max_ongoing: int = Field(
        64,
        ge=1,
        description="requests a part replica takes at once (Serve's router backs off when every replica is full)",
    )

    def _filled(self, config: Callable[..., C], prefix: str = "", **computed: object) -> C:
        """A core dataclass with every field from this model: those in `computed` as given, each
        other from the setting `prefix` + its name, else the setting of its own name."""
        values = {}
        for field in inspect.signature(config).parameters:
            name = prefix + field if hasattr(self, prefix + field) else field
            values[field] = computed[field] if field in computed else getattr(self, name)
        return config(**values)

    @property
    def limits(self) -> Limits:
        return self._filled(Limits)

    @property
    def overlay(self) -> OverlaySettings:
        return self._filled(
            OverlaySettings, "overlay_", max_ids=self.max_change_ids, segment_bytes=self.journal_segment_mb << 20
        )

    @property
    def execution(self) -> ExecutionSettings:
        return self._filled(
            ExecutionSettings,
            "coalesce_",
            threads=self.search_threads or max(2, os.cpu_count() or 1),
            window_s=self.coalesce_window_ms / 1000,
            default_deadline_s=self.default_deadline_ms / 1000 if self.default_deadline_ms else None,
        )

    @property
    def ray(self) -> RaySettings:
        assert self.ray_address is not None
        return self._filled(RaySettings, "ray_", faiss_threads=max(1, int(self.ray_replica_cpus) or 1))

    @property
    def faiss_threads(self) -> int:
        """OpenMP threads per worker: the cores shared out among workers, unless set."""
        return self.omp_threads or max(1, (os.cpu_count() or 1) // self.workers)

    @property
    def admin_enabled(self) -> bool:
        return self.admin_token is not None and bool(self.admin_token.get_secret_value())
