"""The heap is frozen after loads, so full GC passes do not walk the served versions."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from service.core import heap
from service.core.registry import Registry
from tests.conftest import Corpus, build


class Observer:
    def loaded(self, collection: str, old: str | None, new: str) -> None: ...

    def refused(self, collection: str, version: str, reason: str) -> None: ...


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_settle_freezes_what_is_alive(unfrozen: None) -> None:
    gc.unfreeze()
    kept = [{"row": i} for i in range(1000)]
    heap.settle()
    assert gc.get_freeze_count() >= len(kept)


def test_registry_settles_once_per_refresh_that_loaded(corpus: Corpus, tmp_path: Path) -> None:
    assert build(tmp_path, corpus, "a") == 0
    assert build(tmp_path, corpus, "b") == 0
    calls: list[str] = []
    registry = Registry(
        tmp_path,
        Observer(),
        lambda name, version, note: SimpleNamespace(version=version),  # type: ignore[arg-type,return-value]
        settle=lambda: calls.append("settled"),
    )
    outcomes = registry.refresh()
    assert [o.status for o in outcomes] == ["loaded", "loaded"] and calls == ["settled"]
    registry.refresh()
    assert calls == ["settled"], "nothing new was loaded, so nothing to settle"
