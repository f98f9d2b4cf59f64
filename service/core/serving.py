"""What one collection serves, and which version answers a request.

A collection serves its active version (the label "current") and the versions its aliases name,
each loaded once however many labels name it. A request is answered by:

1. the version it pins: `version` (a label or a version id; 404 when not served), or `model`
   (the first served version built with that model, current first; 409 naming the served
   models when none was) — a pinned request is never re-routed;
2. else, with a `route_key` and a split route, the arm the key hashes to
   (index_builder.artifact.serving.Route.arm);
3. else the current version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from index_builder.artifact.errors import NotFoundError
from index_builder.artifact.serving import CURRENT_ARM, Route
from service.core.errors import Conflict
from service.core.version import Version


@dataclass(frozen=True)
class Routing:
    """What a request says about the version that should answer it."""

    version: str | None = None
    model: str | None = None
    route_key: str | None = None


@dataclass(frozen=True)
class Pick:
    """The version that answers, and the label (arm) it was reached by."""

    version: Version
    arm: str


@dataclass(frozen=True)
class Served:
    """A collection's served versions by id, the labels naming them (current first, then aliases
    in name order), its route, and why a label is not served (over the cap, refused)."""

    versions: dict[str, Version]
    labels: dict[str, str]
    route: Route | None = None
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def current(self) -> Version:
        return self.versions[self.labels[CURRENT_ARM]]

    def at(self, label: str) -> Version:
        return self.versions[self.labels[label]]

    def models(self) -> list[str]:
        return sorted({v.manifest.model for v in self.versions.values() if v.manifest.model})

    def shadow_for(self, pick: Pick) -> tuple[Version, float] | None:
        """The version that shadows a request answered by `pick`, and the share sampled (None when
        nothing shadows it: no shadow, or the shadow is what answered)."""
        shadow = None if self.route is None else self.route.shadow
        if shadow is None or shadow.arm not in self.labels or self.at(shadow.arm) is pick.version:
            return None
        return self.at(shadow.arm), shadow.sample

    def pick(self, routing: Routing) -> Pick:
        """The version that answers a request (see the module)."""
        if routing.version is not None:
            found = self._pinned(routing.version)
            if routing.model is not None and found.version.manifest.model != routing.model:
                raise Conflict(
                    f"model: version {found.version.version} of {found.version.collection!r} was built with model "
                    f"{found.version.manifest.model!r}, not {routing.model!r}"
                )
            return found
        if routing.model is not None:
            for label, version in self.labels.items():
                if self.versions[version].manifest.model == routing.model:
                    return Pick(self.versions[version], label)
            served = ", ".join(self.models()) or "none (built without --model)"
            raise Conflict(
                f"model: no served version of {self.current.collection!r} was built with model {routing.model!r}; "
                f"served models: {served}"
            )
        if routing.route_key is not None and self.route is not None and self.route.split:
            arm = self.route.arm(self.current.collection, routing.route_key)
            if arm in self.labels:
                return Pick(self.at(arm), arm)
        return Pick(self.current, CURRENT_ARM)

    def _pinned(self, name: str) -> Pick:
        if name in self.labels:
            return Pick(self.at(name), name)
        for label, version in self.labels.items():
            if version == name:
                return Pick(self.versions[version], label)
        listed = ", ".join(f"{label} ({version})" for label, version in self.labels.items())
        raise NotFoundError(f"version: {name!r} is not served for {self.current.collection!r}; served: {listed}")
