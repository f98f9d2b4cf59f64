"""What the routes share, kept on app.state: settings, the registry, metrics, the searcher."""

from __future__ import annotations

from dataclasses import dataclass

from service.api.observability import ServiceMetrics
from service.core.registry import Registry
from service.core.searcher import Searcher
from service.settings import ServiceSettings


@dataclass
class AppState:
    settings: ServiceSettings
    registry: Registry
    metrics: ServiceMetrics
    searcher: Searcher
