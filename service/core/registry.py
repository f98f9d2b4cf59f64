"""The set of served versions and hot swap: poll CURRENT, load in the background, swap atomically.

Readers take a reference to a Version and keep it for the whole request; a swap
only replaces the dictionary entry, so in-flight requests finish on the old version,
new ones see the new one, and the old one is freed when its last request ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from index_builder.artifact.errors import DotcosError, NotFoundError
from index_builder.artifact.layout import list_collections, read_current
from service.core.errors import Unavailable
from service.core.loader import Note
from service.core.periodic import Periodic
from service.core.version import Version

log = logging.getLogger(__name__)


class ReloadObserver(Protocol):
    """Told about every swap and refusal (the HTTP layer turns these into metrics)."""

    def loaded(self, collection: str, old: str | None, new: str) -> None: ...

    def refused(self, collection: str, version: str, reason: str) -> None: ...


@dataclass(frozen=True)
class ReloadOutcome:
    collection: str
    version: str | None
    status: str
    error: str | None = None


class Registry:
    """Loaded versions by collection name, refreshed from the index root."""

    def __init__(
        self,
        root: Path,
        observer: ReloadObserver,
        load: Callable[[str, str, Note], Version],
        settle: Callable[[], None] | None = None,
    ) -> None:
        self.root = root
        self.load = load
        self.settle = settle
        self.observer = observer
        self.ready = threading.Event()
        self._versions: dict[str, Version] = {}
        self._refused: dict[str, str] = {}
        self._unserved: dict[str, str] = {}
        self._refresh_lock = threading.Lock()
        self._poller = Periodic("dotcos-reload", 0, self.refresh, "reload poll failed; serving versions unchanged")

    def get(self, name: str) -> Version:
        """The version serving `name` right now; NotFoundError naming the served ones."""
        loaded = self._versions.get(name)
        if loaded is None:
            if name in self._unserved:
                raise Unavailable(f"collection {name!r} is not served yet: {self._unserved[name]}")
            served = ", ".join(sorted(self._versions)) or "none"
            raise NotFoundError(f"collection {name!r} not found (served: {served})")
        return loaded

    def all(self) -> list[Version]:
        return [self._versions[name] for name in sorted(self._versions)]

    def unserved(self) -> dict[str, str]:
        """Collections published under the root that serve no version, and why (loading, refused)."""
        return dict(self._unserved)

    def refresh(self) -> list[ReloadOutcome]:
        """Load every collection whose CURRENT changed; keep serving the old one on failure."""
        with self._refresh_lock:
            outcomes = [self._refresh_one(name) for name in list_collections(self.root)]
        if self.settle is not None and any(outcome.status == "loaded" for outcome in outcomes):
            self.settle()
        return outcomes

    def _refresh_one(self, name: str) -> ReloadOutcome:
        current = self._versions.get(name)
        try:
            wanted = read_current(self.root, name)
        except DotcosError as exc:
            return self._refuse(name, None, str(exc))
        if current is not None and current.version == wanted:
            return ReloadOutcome(name, wanted, "unchanged")
        if self._refused.get(name) == wanted:
            return ReloadOutcome(name, wanted, "refused", "refused earlier; publish a new version")
        if current is None:
            self._unserved[name] = f"version {wanted} is loading"
        try:
            loaded = self.load(name, wanted, lambda why: self._note(name, why))
        except (DotcosError, OSError, ValueError) as exc:
            return self._refuse(name, wanted, str(exc))
        self._versions = {**self._versions, name: loaded}
        self._refused.pop(name, None)
        self._unserved.pop(name, None)
        if current is not None:
            current.parts.retire()
        self.observer.loaded(name, current.version if current else None, wanted)
        log.info("serving %s version %s (was %s)", name, wanted, current.version if current else "none")
        return ReloadOutcome(name, wanted, "loaded")

    def _note(self, name: str, why: str) -> None:
        """A loader's word on why a collection that serves nothing yet is still not served."""
        if name not in self._versions:
            self._unserved[name] = why

    def _refuse(self, name: str, version: str | None, reason: str) -> ReloadOutcome:
        if version is not None:
            self._refused[name] = version
        serving = self._versions.get(name)
        if serving is None:
            self._unserved[name] = f"version {version} was refused: {reason}"
        log.error(
            "refused %s version %s: %s (still serving %s)",
            name,
            version,
            reason,
            serving.version if serving else "nothing",
        )
        self.observer.refused(name, version or "unknown", reason)
        return ReloadOutcome(name, version, "refused", reason)

    def start(self, interval: float, on_ready: Callable[[], None] | None = None) -> None:
        """Load everything in the background, mark ready, then poll every `interval` seconds."""
        self._poller.interval = interval
        self._poller.start(lambda: self._load_all(on_ready))

    def _load_all(self, on_ready: Callable[[], None] | None) -> None:
        try:
            self.refresh()
        except Exception:
            log.exception("initial load failed")
        self.ready.set()
        if on_ready is not None:
            on_ready()

    def stop(self) -> None:
        self._poller.stop()
