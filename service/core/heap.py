"""Keep the garbage collector's full passes off the request path.

The imported libraries and a loaded version are hundreds of thousands of long-lived objects,
and CPython's oldest-generation pass walks all of them while holding the GIL: measured at 64
clients on the 100k benchmark collection, 12 such passes in 10 s of load, up to 66 ms each,
which set the p99. After start-up and after each new version is loaded, everything alive is
moved to the permanent generation (gc.freeze), so later passes see only what was made since.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def settle() -> None:
    """Collect what the previous versions left in cycles, then freeze what is alive now.

    One full pass per load (a swap is rare); unfreezing first lets a replaced version's
    cyclic garbage be found instead of staying frozen forever.
    """
    start = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    log.debug("heap settled: %d objects frozen in %.1f ms", gc.get_freeze_count(), (time.perf_counter() - start) * 1000)
