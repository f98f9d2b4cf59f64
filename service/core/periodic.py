"""The service's background loops: a daemon thread that repeats one step until it is stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs `step` on a daemon thread every `interval` seconds (never when it is 0) until `stop`;
    a step may change `interval` for the next wait. A step that fails is logged with `failure`
    and tried again at the next wake-up, so one bad round never ends the loop."""

    def __init__(self, name: str, interval: float, step: Callable[[], object], failure: str) -> None:
        self.name, self.interval, self.step, self.failure = name, interval, step, failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, first: Callable[[], object] | None = None) -> None:
        """Start the thread; it runs `first`, when given, before its first wait."""
        self._thread = threading.Thread(target=self._run, args=(first,), name=self.name, daemon=True)
        self._thread.start()

    def _run(self, first: Callable[[], object] | None) -> None:
        if first is not None:
            first()
        while self.interval > 0 and not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception:
                log.exception("%s", self.failure)

    def stop(self) -> None:
        """Stop waking up (waiting up to 5 s for a step under way)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
