"""Where build tasks run: in this process one after another, or as Ray tasks on a cluster.

Both runners take the same top-level functions and picklable jobs, so a sharded build is
the same code with or without Ray. On Ray a task whose worker dies is retried (the task's
outputs are plain files it rewrites from scratch); an error the task raises on purpose
(bad input) is not, and reaches the caller as the original exception.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from index_builder.artifact.errors import BuildFailed, InputError
from index_builder.progress import Progress
from index_builder.scaleout.cluster import dotcos_cause, ray_init

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")


class TaskRunner(Protocol):
    def map(self, fn: Callable[[J], R], jobs: Sequence[J], label: str, progress: Progress) -> list[R]: ...

    def close(self) -> None: ...


class InProcessRunner:
    """Runs every job here, in order (the default without --ray)."""

    def map(self, fn: Callable[[J], R], jobs: Sequence[J], label: str, progress: Progress) -> list[R]:
        results = []
        with progress.stage(label, len(jobs), unit="task") as bar:
            for job in jobs:
                results.append(fn(job))
                bar.update(1)
        return results

    def close(self) -> None:
        return None


class RayRunner:
    """Runs jobs as Ray tasks (one CPU each), retrying tasks whose worker died."""

    def __init__(self, address: str, retries: int) -> None:
        try:
            import ray
        except ImportError:
            raise InputError("--ray needs Ray: install dotcos with the ray extra (pip install 'dotcos[ray]')") from None
        self.ray = ray
        self.retries = retries
        self.started = not ray.is_initialized()
        if self.started:
            ray_init(address)

    def map(self, fn: Callable[[J], R], jobs: Sequence[J], label: str, progress: Progress) -> list[R]:
        ray = self.ray
        remote = ray.remote(fn).options(num_cpus=1, max_retries=self.retries, retry_exceptions=False)
        refs = [remote.remote(job) for job in jobs]
        position = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        waiting = list(refs)
        with progress.stage(label, len(jobs), unit="task") as bar:
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                i = position[done[0]]
                try:
                    results[i] = ray.get(done[0])
                except ray.exceptions.RayTaskError as exc:
                    for ref in waiting:
                        ray.cancel(ref, force=True)
                    if (error := dotcos_cause(exc)) is not None:
                        raise error from None
                    raise BuildFailed(f"{label} task {i} failed: {type(exc.cause).__name__}: {exc.cause}") from None
                except ray.exceptions.RayError as exc:
                    for ref in waiting:
                        ray.cancel(ref, force=True)
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise BuildFailed(f"{label} task {i} failed after {self.retries} retries: {first}") from None
                bar.update(1)
                log.info("%s: task %d of %d done", label, bar.done, len(jobs))
        return results

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def runner(address: str | None, retries: int) -> TaskRunner:
    """The runner for --ray ADDRESS (or none)."""
    return InProcessRunner() if address is None else RayRunner(address, retries)
