"""The core's configuration values, as plain dataclasses filled from ServiceSettings.

Kept free of FAISS and numpy imports so that reading settings (the container health check
does it every few seconds) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Request limits and tuning thresholds, from settings."""

    max_k: int = 1000
    max_batch: int = 1024
    max_filter_ids: int = 100_000
    exact_filter_threshold: int = 20_000
    max_ef_search: int = 4096


@dataclass(frozen=True)
class ExecutionSettings:
    """How FAISS work is scheduled (from service settings)."""

    threads: int = 2
    max_batch: int = 256
    window_s: float = 0.0
    in_flight: int = 1
    max_pending: int = 512
    default_deadline_s: float | None = None


@dataclass(frozen=True)
class RaySettings:
    """How shards are deployed on Ray Serve (from DOTCOS_RAY_* settings)."""

    address: str
    replicas: int = 1
    replica_cpus: float = 0.25
    retries: int = 3
    retry_backoff_s: float = 0.2
    faiss_threads: int = 1
    blas_threshold: int = 16
    mmap: bool = True
    drain_s: float = 30.0
    switch_interval_ms: float = 1.0
    deploy_timeout_s: float = 300.0
    max_ongoing: int = 64
