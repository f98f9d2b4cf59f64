"""A local Ray cluster's object store fits the machine's /dev/shm (a container's is small)."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest

from index_builder.scaleout import cluster

Usage = namedtuple("Usage", "total used free")


@pytest.mark.parametrize(
    ("free", "expected"), [(64 << 30, 512 << 20), (512 << 20, int(0.8 * (512 << 20))), (32 << 20, 80 << 20)]
)
def test_the_object_store_is_capped_and_fits_shm(free: int, expected: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(free, 0, free))
    assert cluster.local_object_store_bytes() == expected


def test_without_shm_the_cap_is_used() -> None:
    assert cluster.local_object_store_bytes("/no/such/shm") == cluster.OBJECT_STORE_CAP
