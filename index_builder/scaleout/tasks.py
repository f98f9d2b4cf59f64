"""Where build tasks run: in this process one after another, or as Ray tasks on a cluster.

Both runners take the same top-level functions and picklable jobs, so a sharded build is
the same code with or without Ray. On Ray a task whose worker dies is retried (the task's
outputs are plain files it rewrites from scratch); an error the task raises on purpose
(bad input) is not, and reaches the caller as the original exception.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from index_builder.artifact.errors import BuildFailed, InputError
from index_builder.progress import Progress
from index_builder.scaleout.cluster import cpus, dotcos_cause, node_names, nodes_with, ray_init

log = logging.getLogger(__name__)

WAIT_NOTICE_S = 30.0
"""How often a build says that its tasks still wait (for a free CPU, or a node)."""

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
    """Runs jobs as Ray tasks (one CPU each, dealt to the nodes in turn), retrying tasks whose worker died."""

    def __init__(self, address: str, retries: int) -> None:
        try:
            import ray
        except ImportError:
            raise InputError("--ray needs Ray: install dotcos with the ray extra (pip install 'dotcos[ray]')") from None
        self.ray = ray
        self.retries = retries
        self.nodes: list[str] | None = None
        self.started = not ray.is_initialized()
        if self.started:
            ray_init(address)

    def map(self, fn: Callable[[J], R], jobs: Sequence[J], label: str, progress: Progress) -> list[R]:
        ray = self.ray
        remote = ray.remote(placed)
        options = {"num_cpus": 1, "max_retries": self.retries, "retry_exceptions": False}
        refs = [
            remote.options(**options, scheduling_strategy=self._node(i)).remote(fn, job) for i, job in enumerate(jobs)
        ]
        position = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        waiting = list(refs)
        with progress.stage(label, len(jobs), unit="task") as bar:
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1, timeout=WAIT_NOTICE_S)
                if not done:
                    self._say_waiting(label, len(waiting))
                    continue
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
        log.info("%s: tasks ran on %s", label, self._ran_on([node for node, _ in results]))
        return [result for _, result in results]

    def _say_waiting(self, label: str, tasks: int) -> None:
        """A build whose tasks wait for CPUs would otherwise be silent until they run."""
        free, total = cpus()
        log.warning(
            "%s: %d task(s) not done after %gs more; each needs 1 CPU and the cluster has %g free of %g",
            label,
            tasks,
            WAIT_NOTICE_S,
            free,
            total,
        )

    def _node(self, task: int) -> Any:
        """Where task number `task` goes: the nodes with a CPU to spare in turn, softly, so a task
        whose node died is retried on another. (Ray's SPREAD alone lets short tasks reuse one
        worker's lease, and a build of small shards then runs on one node.)"""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if self.nodes is None:
            self.nodes = nodes_with(1)
        if not self.nodes:
            return "SPREAD"
        return NodeAffinitySchedulingStrategy(self.nodes[task % len(self.nodes)], soft=True)

    def _ran_on(self, node_ids: list[str]) -> str:
        """'name (tasks), ...' of the nodes that ran the tasks, by the names Ray gives them."""
        names = node_names()
        counts = Counter(names.get(node, node[:8]) for node in node_ids)
        return ", ".join(f"{name} ({n})" for name, n in sorted(counts.items()))

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def placed(fn: Callable[[J], R], job: J) -> tuple[str, R]:
    """fn(job) as a Ray task, with the id of the node it ran on."""
    import ray

    return ray.get_runtime_context().get_node_id(), fn(job)


def runner(address: str | None, retries: int) -> TaskRunner:
    """The runner for --ray ADDRESS (or none)."""
    return InProcessRunner() if address is None else RayRunner(address, retries)
