"""A small cache of what a part computes for requests and serves again (scroll rows, filters)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class Lru(Generic[V]):
    """A thread-safe least-recently-used map bounded by the summed weight of its values."""

    def __init__(self, budget: int, weigh: Callable[[V], int]) -> None:
        self._items: OrderedDict[Any, tuple[V, int]] = OrderedDict()
        self._budget, self._weigh, self._used = budget, weigh, 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> V | None:
        with self._lock:
            held = self._items.get(key)
            if held is None:
                return None
            self._items.move_to_end(key)
            return held[0]

    def put(self, key: Any, value: V) -> None:
        weight = self._weigh(value)
        if weight > self._budget:
            return
        with self._lock:
            held = self._items.pop(key, None)
            self._used += weight - (held[1] if held is not None else 0)
            self._items[key] = (value, weight)
            while self._used > self._budget:
                self._used -= self._items.popitem(last=False)[1][1]
