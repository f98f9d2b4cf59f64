"""The set of served versions and hot swap: poll CURRENT, ALIASES and ROUTE, load in the
background, swap atomically.

Readers take a reference to a Version and keep it for the whole request; a swap only replaces the
dictionary entry, so in-flight requests finish on the old version, new ones see the new one, and
the old one is freed when its last request ends. Each served version (current or aliased) swaps
on its own; a version several labels name is loaded once; beyond DOTCOS_MAX_SERVED_VERSIONS per
collection, aliases are refused (logged, and listed by /readyz).
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
from index_builder.artifact.serving import CURRENT_ARM, Route, read_aliases, read_route
from service.core.errors import Unavailable
from service.core.loader import Note
from service.core.periodic import Periodic
from service.core.serving import Pick, Routing, Served
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
    """The served versions of every collection under the index root (current and aliased),
    refreshed from its CURRENT, ALIASES and ROUTE files."""

    def __init__(
        self,
        root: Path,
        observer: ReloadObserver,
        load: Callable[[str, str, Note], Version],
        settle: Callable[[], None] | None = None,
        max_versions: int = 3,
    ) -> None:
        self.root = root
        self.load = load
        self.settle = settle
        self.observer = observer
        self.max_versions = max_versions
        self.ready = threading.Event()
        self._served: dict[str, Served] = {}
        self._refused: dict[tuple[str, str], str] = {}
        self._unserved: dict[str, str] = {}
        self._refresh_lock = threading.Lock()
        self._poller = Periodic("dotcos-reload", 0, self.refresh, "reload poll failed; serving versions unchanged")

    def served(self, name: str) -> Served:
        """What `name` serves right now; NotFoundError naming the served collections."""
        found = self._served.get(name)
        if found is None:
            if name in self._unserved:
                raise Unavailable(f"collection {name!r} is not served yet: {self._unserved[name]}")
            served = ", ".join(sorted(self._served)) or "none"
            raise NotFoundError(f"collection {name!r} not found (served: {served})")
        return found

    def get(self, name: str) -> Version:
        """The version serving `name` by default (its current one)."""
        return self.served(name).current

    def pick(self, name: str, routing: Routing) -> Pick:
        """The version that answers a request for `name` (service.core.serving)."""
        return self.served(name).pick(routing)

    def collections(self) -> list[Served]:
        """What every collection serves, by name."""
        return [self._served[name] for name in sorted(self._served)]

    def all(self) -> list[Version]:
        """Every collection's current version."""
        return [self._served[name].current for name in sorted(self._served)]

    def every(self) -> list[Version]:
        """Every served version of every collection."""
        return [v for name in sorted(self._served) for v in self._served[name].versions.values()]

    def unserved(self) -> dict[str, str]:
        """Collections published under the root that serve no version, and why (loading, refused)."""
        return dict(self._unserved)

    def refused(self) -> dict[str, dict[str, str]]:
        """Per collection, the labels (aliases, a shadow) it does not serve, and why."""
        return {name: dict(s.refused) for name, s in sorted(self._served.items()) if s.refused}

    def refresh(self) -> list[ReloadOutcome]:
        """Load what every collection's files name and is not loaded; keep serving on failure."""
        with self._refresh_lock:
            outcomes = [self._refresh_one(name) for name in list_collections(self.root)]
        if self.settle is not None and any(outcome.status == "loaded" for outcome in outcomes):
            self.settle()
        return outcomes

    def _wanted(self, name: str, old: Served | None) -> tuple[str, dict[str, str], Route | None]:
        """CURRENT, then the aliases by name, and the route (the old ones where a file is unreadable)."""
        current = read_current(self.root, name)
        try:
            aliases = read_aliases(self.root, name)
        except DotcosError as exc:
            log.error("%s; keeping the aliases served", exc)
            aliases = {k: v for k, v in (old.labels if old else {}).items() if k != CURRENT_ARM}
        try:
            route = read_route(self.root, name)
        except DotcosError as exc:
            log.error("%s; keeping the route served", exc)
            route = old.route if old else None
        return current, {CURRENT_ARM: current, **dict(sorted(aliases.items()))}, route

    def _refresh_one(self, name: str) -> ReloadOutcome:
        old = self._served.get(name)
        try:
            wanted, labels, route = self._wanted(name, old)
        except DotcosError as exc:
            self.observer.refused(name, "unknown", str(exc))
            return self._refuse(name, None, str(exc))
        refused: dict[str, str] = {}
        versions: dict[str, Version] = {}
        changed = False
        for label, version in labels.items():
            if version in versions:
                continue
            if len(versions) >= self.max_versions:
                refused[label] = (
                    f"version {version} is not served: DOTCOS_MAX_SERVED_VERSIONS={self.max_versions} versions are"
                )
                log.warning("%s: alias %s refused: %s", name, label, refused[label])
                continue
            loaded = self._loaded(name, version, old)
            if isinstance(loaded, str):
                refused[label] = loaded
                continue
            changed = changed or old is None or version not in old.versions
            versions[version] = loaded
        why = refused.pop(CURRENT_ARM, None)
        if why is not None:
            if old is None:
                return self._refuse(name, wanted, why)
            versions[old.labels[CURRENT_ARM]] = old.current
            labels[CURRENT_ARM] = old.labels[CURRENT_ARM]
        served = Served(
            versions,
            {k: v for k, v in labels.items() if v in versions},
            *_checked(name, route, labels, versions, refused),
        )
        self._swap(name, old, served)
        if why is not None:
            return ReloadOutcome(name, wanted, "refused", why)
        return ReloadOutcome(name, wanted, "loaded" if changed else "unchanged")

    def _loaded(self, name: str, version: str, old: Served | None) -> Version | str:
        """The loaded version (already served, or loaded now), or why it is not."""
        if old is not None and version in old.versions:
            return old.versions[version]
        if (name, version) in self._refused:
            return f"version {version} was refused: {self._refused[(name, version)]}"
        if old is None:
            self._unserved[name] = f"version {version} is loading"
        try:
            return self.load(name, version, lambda why: self._note(name, why))
        except (DotcosError, OSError, ValueError) as exc:
            self._refused[(name, version)] = str(exc)
            log.error("refused %s version %s: %s", name, version, exc)
            self.observer.refused(name, version, str(exc))
            return f"version {version} was refused: {exc}"

    def _swap(self, name: str, old: Served | None, served: Served) -> None:
        self._served = {**self._served, name: served}
        self._unserved.pop(name, None)
        before = None if old is None else old.current.version
        if before != served.current.version:
            self.observer.loaded(name, before, served.current.version)
            log.info("serving %s version %s (was %s)", name, served.current.version, before or "none")
        for version, gone in (old.versions if old else {}).items():
            if version not in served.versions:
                gone.parts.retire()

    def _note(self, name: str, why: str) -> None:
        """A loader's word on why a collection that serves nothing yet is still not served."""
        if name not in self._served:
            self._unserved[name] = why

    def _refuse(self, name: str, version: str | None, reason: str) -> ReloadOutcome:
        serving = self._served.get(name)
        if serving is None:
            self._unserved[name] = f"version {version} was refused: {reason}"
        log.error(
            "refused %s version %s: %s (still serving %s)",
            name,
            version,
            reason,
            serving.current.version if serving else "nothing",
        )
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


def _checked(
    name: str, route: Route | None, labels: dict[str, str], versions: dict[str, Version], refused: dict[str, str]
) -> tuple[Route | None, dict[str, str]]:
    """The route as it can be served: arms that are not served are left out of the split, and a
    shadow whose model differs from the current version's is refused (a shadow runs the same
    query vector, which only one tower made)."""
    if route is None:
        return None, refused
    served = {label for label, version in labels.items() if version in versions}
    split = {arm: weight for arm, weight in route.split.items() if arm in served}
    for arm in route.split.keys() - split.keys():
        refused[f"route:{arm}"] = f"the split's arm {arm!r} is not served"
    shadow = route.shadow
    if shadow is not None:
        current = versions[labels[CURRENT_ARM]].manifest.model
        if shadow.arm not in served:
            refused["shadow"], shadow = f"the shadow arm {shadow.arm!r} is not served", None
        elif versions[labels[shadow.arm]].manifest.model != current:
            model = versions[labels[shadow.arm]].manifest.model
            refused["shadow"], shadow = f"the shadow arm {shadow.arm!r} has model {model!r}, current {current!r}", None
    for label, reason in refused.items():
        if label.startswith(("route:", "shadow")):
            log.warning("%s: %s", name, reason)
    return Route(split=split, shadow=shadow), refused
