"""The core's dataclasses carry what was deployed: each field from its environment variable."""

from __future__ import annotations

import pytest

from service.core.config import ExecutionSettings, Limits, OverlaySettings, RaySettings
from service.settings import ServiceSettings

ENV = {
    "DOTCOS_MAX_K": "7",
    "DOTCOS_MAX_BATCH": "77",
    "DOTCOS_EXACT_FILTER_THRESHOLD": "12",
    "DOTCOS_OVERLAY_MAX_ENTRIES": "9",
    "DOTCOS_MAX_CHANGE_IDS": "11",
    "DOTCOS_JOURNAL_SEGMENT_MB": "3",
    "DOTCOS_COALESCE_MAX_BATCH": "33",
    "DOTCOS_COALESCE_WINDOW_MS": "4",
    "DOTCOS_SEARCH_THREADS": "5",
    "DOTCOS_OMP_THREADS": "6",
    "DOTCOS_DEFAULT_DEADLINE_MS": "250",
    "DOTCOS_RAY_ADDRESS": "ray://head:10001",
    "DOTCOS_RAY_REPLICA_CPUS": "2.5",
    "DOTCOS_RAY_MAX_ONGOING": "3",
    "DOTCOS_BLAS_THRESHOLD": "8",
    "DOTCOS_MMAP": "false",
}


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> ServiceSettings:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return ServiceSettings()


def test_limits_are_the_settings_of_the_same_names(settings: ServiceSettings) -> None:
    limits = settings.limits
    assert isinstance(limits, Limits)
    assert (limits.max_k, limits.max_batch, limits.exact_filter_threshold) == (7, 77, 12)
    assert limits.max_ef_search == ServiceSettings.model_fields["max_ef_search"].default


def test_prefixed_settings_win_over_plain_ones_and_derived_values_are_converted(settings: ServiceSettings) -> None:
    execution = settings.execution
    assert isinstance(execution, ExecutionSettings)
    assert (execution.max_batch, execution.threads, execution.faiss_threads) == (33, 5, 6)
    assert (execution.window_s, execution.default_deadline_s) == (0.004, 0.25)
    overlay = settings.overlay
    assert isinstance(overlay, OverlaySettings)
    assert (overlay.max_entries, overlay.max_ids, overlay.segment_bytes) == (9, 11, 3 << 20)


def test_ray_settings_take_the_ray_variables_and_the_shared_runtime_ones(settings: ServiceSettings) -> None:
    ray = settings.ray
    assert isinstance(ray, RaySettings)
    assert (ray.address, ray.replica_cpus, ray.max_ongoing, ray.faiss_threads) == ("ray://head:10001", 2.5, 3, 2)
    assert (ray.blas_threshold, ray.mmap) == (8, False)
