"""`dotcos-serve`: run the service under uvicorn with settings from the environment."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from service.settings import ServiceSettings


def main() -> int:
    """Validate settings, then hand over to uvicorn (workers share index pages through mmap)."""
    try:
        settings = ServiceSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"error: setting DOTCOS_{str(first['loc'][0]).upper()}: {first['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run("service.api.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level=settings.log_level.lower(), access_log=False)
    return 0
