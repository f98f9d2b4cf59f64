"""What the routes share, kept on app.state: settings, the registry, metrics."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.api.observability import ServiceMetrics
from service.core.config import Limits
from service.core.registry import Registry
from service.core.searcher import Searcher
from service.settings import ServiceSettings


@dataclass
class AppState:
    settings: ServiceSettings
    registry: Registry
    metrics: ServiceMetrics
    searcher: Searcher

    @property
    def limits(self) -> Limits:
        return self.searcher.limits


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.dotcos
    return state
