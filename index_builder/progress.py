"""Progress reporting for batch jobs: a bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tqdm import tqdm

log = logging.getLogger(__name__)


class _Counter:
    """What a stage advances: a tqdm bar or a silent counter."""

    def __init__(self, bar: tqdm | None) -> None:
        self.bar = bar
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)


@dataclass
class Progress:
    """Times each stage; draws bars only when stderr is a terminal and not quiet."""

    quiet: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def bars(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "vec") -> Iterator[_Counter]:
        """Run one stage: a bar on a tty, a start and an end log line otherwise."""
        start = time.perf_counter()
        bar = (
            tqdm(total=total, desc=name, unit=unit, unit_scale=True, leave=False, file=sys.stderr)
            if self.bars
            else None
        )
        if bar is None and not self.quiet:
            log.info("%s: started%s", name, f" ({total} {unit})" if total else "")
        counter = _Counter(bar)
        try:
            yield counter
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - start
        self.timings[name] = self.timings.get(name, 0.0) + elapsed
        if not self.quiet:
            log.info("%s: done in %.2fs", name, elapsed)
