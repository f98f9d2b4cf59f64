"""`python -m service.healthcheck`: exit 0 when the local service answers /healthz, else 1.

Used as the container HEALTHCHECK: the slim image has no curl, and this reads the same
settings (DOTCOS_PORT) as the service it probes.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from service.settings import ServiceSettings

TIMEOUT_SECONDS = 3.0


def main() -> int:
    port = ServiceSettings().port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT_SECONDS) as reply:
            return 0 if reply.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
