"""`dotcos-serve`: run the service under uvicorn with settings from the environment."""

from __future__ import annotations

import logging
import logging.config
import os
import sys
from typing import Any

OPENMP_DEFAULTS = {
    # Idle OpenMP threads sleep instead of spinning: the event loop and the search threads share
    # the cores with FAISS, and spinning workers starved admitted requests under overload
    # (goodput fell from ~260/s to ~10/s at twice the admitted load; ~120/s with passive waits).
    "OMP_WAIT_POLICY": "PASSIVE",
}

# uvicorn's httptools protocol writing each response to the socket once (see the module).
HTTP_PROTOCOL = "service.protocol:OneWriteProtocol"


def main() -> int:
    """Validate settings, then hand over to uvicorn (workers share index pages through mmap)."""
    for name, value in OPENMP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    import uvicorn
    from pydantic import ValidationError

    from service.settings import ServiceSettings

    try:
        settings = ServiceSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"error: setting DOTCOS_{str(first['loc'][0]).upper()}: {first['msg']}", file=sys.stderr)
        return 2
    if settings.ray_address and settings.workers > 1:
        print(
            "error: setting DOTCOS_WORKERS: must be 1 with DOTCOS_RAY_ADDRESS (shards scale with DOTCOS_RAY_REPLICAS)",
            file=sys.stderr,
        )
        return 2
    config = logging_config(settings.log_level)
    logging.config.dictConfig(config)
    uvicorn.run(
        "service.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=config,
        log_level=settings.log_level.lower(),
        access_log=False,
        http=HTTP_PROTOCOL,
    )
    return 0


def logging_config(level: str) -> dict[str, Any]:
    """One stderr handler on the root logger, for uvicorn's and dotcos's loggers alike.

    Handed to uvicorn as its log_config, which it applies in every worker process too: a
    configuration made only here would be lost in workers (DOTCOS_WORKERS > 1), and with it
    the service's own lines (loaded, serving, reload).
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")},
    }
