"""Service settings: one typed object read from the environment (prefix DOTCOS_)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core.config import ExecutionSettings, Limits, RaySettings


class ServiceSettings(BaseSettings):
    """Validated at start-up; the admin token is a secret and never logged."""

    model_config = SettingsConfigDict(env_prefix="DOTCOS_", extra="ignore")

    index_root: Path = Path("./indexes")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    log_level: str = "info"
    reload_interval: float = Field(default=2.0, ge=0)
    admin_token: SecretStr | None = None
    max_k: int = Field(default=1000, ge=1)
    max_batch: int = Field(default=1024, ge=1)
    max_body_bytes: int = Field(default=16 << 20, ge=1024)
    max_filter_ids: int = Field(default=100_000, ge=1)
    exact_filter_threshold: int = Field(default=20_000, ge=0)
    max_ef_search: int = Field(default=4096, ge=1)
    mmap: bool = True
    omp_threads: int | None = Field(default=None, ge=1)
    search_threads: int | None = Field(default=None, ge=1)
    coalesce_max_batch: int = Field(default=256, ge=1)
    coalesce_window_ms: float = Field(default=0.0, ge=0)
    coalesce_in_flight: int = Field(default=1, ge=1)
    blas_threshold: int = Field(default=16, ge=1)
    max_pending: int = Field(default=512, ge=0, description="0 sheds every search: drain mode")
    switch_interval_ms: float = Field(default=1.0, gt=0, le=100)
    gc_freeze: bool = Field(default=True, description="freeze the heap after each load (see service.core.heap)")
    default_deadline_ms: float | None = Field(default=None, gt=0)
    cors_origins: list[str] = Field(default_factory=list)
    ray_address: str | None = Field(default=None, description="serve shards on Ray Serve; 'local' starts a cluster")
    ray_replicas: int = Field(default=1, ge=1)
    ray_replica_cpus: float = Field(default=0.25, ge=0, description="CPUs each shard replica reserves; "
                                    "a quarter lets one small machine hold several collections' shards")
    ray_retries: int = Field(default=3, ge=0)
    ray_drain_s: float = Field(default=30.0, ge=0)
    ray_deploy_timeout_s: float = Field(default=300.0, gt=0)
    ray_max_ongoing: int = Field(default=64, ge=1, description="requests a shard replica takes at once; "
                                 "Serve's router backs off when every replica is full")

    @property
    def limits(self) -> Limits:
        return Limits(max_k=self.max_k, max_batch=self.max_batch, max_filter_ids=self.max_filter_ids,
                      exact_filter_threshold=self.exact_filter_threshold,
                      max_ef_search=self.max_ef_search)

    @property
    def execution(self) -> ExecutionSettings:
        deadline = self.default_deadline_ms / 1000 if self.default_deadline_ms else None
        return ExecutionSettings(threads=self.search_threads or max(2, os.cpu_count() or 1),
                                 max_batch=self.coalesce_max_batch, window_s=self.coalesce_window_ms / 1000,
                                 in_flight=self.coalesce_in_flight, max_pending=self.max_pending,
                                 default_deadline_s=deadline)

    @property
    def ray(self) -> RaySettings:
        assert self.ray_address is not None
        return RaySettings(address=self.ray_address, replicas=self.ray_replicas, replica_cpus=self.ray_replica_cpus,
                           retries=self.ray_retries, faiss_threads=max(1, int(self.ray_replica_cpus) or 1),
                           blas_threshold=self.blas_threshold, mmap=self.mmap, drain_s=self.ray_drain_s,
                           deploy_timeout_s=self.ray_deploy_timeout_s, max_ongoing=self.ray_max_ongoing)

    @property
    def faiss_threads(self) -> int:
        """OpenMP threads per worker: the cores shared out among workers, unless set."""
        return self.omp_threads or max(1, (os.cpu_count() or 1) // self.workers)

    @property
    def admin_enabled(self) -> bool:
        return self.admin_token is not None and bool(self.admin_token.get_secret_value())
