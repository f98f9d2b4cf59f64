"""The core's configuration values, as plain dataclasses filled from ServiceSettings.

They have no defaults of their own: every value comes from the one settings model
(service.settings), so what the core runs with is what was deployed. Kept free of FAISS and
numpy imports so that reading settings (the container health check does it every few seconds)
stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Request limits and tuning thresholds."""

    max_k: int
    max_batch: int
    max_filter_ids: int
    exact_filter_threshold: int | None
    max_ef_search: int
    max_filter_conditions: int
    max_filter_depth: int
    max_group_candidates: int


@dataclass(frozen=True)
class ExecutionSettings:
    """How FAISS work is scheduled."""

    threads: int
    faiss_threads: int
    max_batch: int
    window_s: float
    in_flight: int
    inline_max_cost: float
    max_pending: int
    default_deadline_s: float | None


@dataclass(frozen=True)
class RaySettings:
    """How parts are deployed on Ray Serve."""

    address: str
    replicas: int
    replica_cpus: float
    retries: int
    retry_backoff_s: float
    call_timeout_s: float
    faiss_threads: int
    blas_threshold: int
    switch_interval_ms: float
    mmap: bool
    drain_s: float
    deploy_timeout_s: float
    max_ongoing: int


@dataclass(frozen=True)
class OverlaySettings:
    """How changes between rebuilds are held and read."""

    max_entries: int
    max_bytes: int
    max_ids: int
    segment_bytes: int
    index_rows: int
