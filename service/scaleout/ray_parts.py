"""Parts on Ray Serve: one Serve application per part (shard) of each served version.

`dotcos-serve` stays the HTTP front (same app, paths, bodies and errors); with
DOTCOS_RAY_ADDRESS set it deploys every shard of a version as a Serve deployment whose
replicas load that shard (checksums first), one per node when the cluster has a node for
each, and scatters queries to them. The front keeps the change overlay and searches the
changed documents itself; each call tells the replica which stored rows the changes hide. A
new version is deployed next to the old one and swapped in only once all its shards are
running; the old one is deleted after its in-flight requests finish. A call that fails or
does not answer in time is retried on another replica; if none answers the request fails
with 503, never with a partial merge. Application names carry a per-process prefix, so several
front ends (or test servers) can share one cluster without touching each other's shards.

Imported only in Ray mode: Ray is an optional extra.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import ray
from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.api import RunTarget, run_many
from ray.serve.schema import ApplicationStatus, ApplicationStatusOverview, ServeInstanceDetails

from index_builder.artifact.errors import ArtifactError, DotcosError
from index_builder.scaleout.cluster import LOCAL, cpus, dotcos_cause, node_names, nodes_with, ray_init
from service.core.config import OverlaySettings, RaySettings
from service.core.errors import Unavailable
from service.core.loader import Note, configure_runtime, new_version, open_overlay, read_version
from service.core.part import OPS, load_parts, search_part, search_parts
from service.core.query import Answer, Query
from service.core.version import Replica, Version

T = TypeVar("T")

log = logging.getLogger(__name__)


class ShardServer:
    """One replica serving one part of one version."""

    def __init__(self, root: str, collection: str, version: str, shard: int, settings: RaySettings) -> None:
        configure_runtime(settings.faiss_threads, settings.blas_threshold, settings.switch_interval_ms)
        manifest, path = read_version(Path(root), collection, version)
        (self.part,) = load_parts(manifest, path, settings.mmap, only=shard)

    def run(self, op: str, *args: Any) -> Any:
        return OPS[op](self.part, *args)


SHARD_DEPLOYMENT = serve.deployment(name="shard")(ShardServer)


class RayParts:
    """The deployment handles of one version's parts, with retries and drain-then-delete."""

    def __init__(self, collection: str, handles: list[Any], apps: list[str], settings: RaySettings) -> None:
        self.collection = collection
        self.handles, self.apps, self.settings = handles, apps, settings
        self.in_flight = 0

    async def search(self, query: Query) -> Answer:
        """The replicas' answers over the stored rows (each told which rows the changes hid),
        merged with the changed documents', searched here once per request."""
        if query.overlay is None:
            return Answer.merge(await self.each(search_part, query), query.options.k)
        stored = self.each(search_part, replace(query, overlay=query.overlay.stored()))
        chunks = list(query.overlay.chunks)
        if not chunks:
            return Answer.merge(await stored, query.options.k)
        answers = await asyncio.gather(stored, asyncio.to_thread(search_parts, chunks, query))
        return Answer.merge([*answers[0], answers[1]], query.options.k)

    async def each(self, op: Callable[..., T], *args: Any) -> list[T]:
        self.in_flight += 1
        try:
            return list(await asyncio.gather(*(self._call(i, op.__name__, args) for i in range(len(self.handles)))))
        finally:
            self.in_flight -= 1

    async def at(self, index: int, op: Callable[..., T], *args: Any) -> T:
        self.in_flight += 1
        try:
            answer: T = await self._call(index, op.__name__, args)
            return answer
        finally:
            self.in_flight -= 1

    async def _call(self, shard: int, op: str, args: tuple[Any, ...]) -> Any:
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            try:
                return await asyncio.wait_for(self.handles[shard].run.remote(op, *args), self.settings.call_timeout_s)
            except RayTaskError as exc:
                if (error := dotcos_cause(exc)) is not None:
                    raise error from None
                raise
            except (RayError, TimeoutError) as exc:
                log.warning(
                    "shard %d of %s did not answer (%s); attempt %d of %d",
                    shard,
                    self.collection,
                    type(exc).__name__,
                    attempt + 1,
                    attempts,
                )
                await asyncio.sleep(self.settings.retry_backoff_s * (attempt + 1))
        raise Unavailable(
            f"shard {shard} of collection {self.collection!r} is unavailable "
            f"(its replicas are restarting); retry shortly"
        )

    def placement(self) -> list[list[Replica]]:
        """Each part's replicas as Serve's controller knows them, on the nodes Ray names."""
        client = serve.context._get_global_client()
        if client is None:
            raise Unavailable("Ray Serve is not connected; retry shortly")
        details = ServeInstanceDetails(**client.get_serve_details())
        names = node_names()
        out = []
        for app in self.apps:
            found = details.applications.get(app)
            shard = None if found is None else found.deployments.get(SHARD_DEPLOYMENT.name)
            replicas = [] if shard is None else shard.replicas
            out.append([Replica(names.get(r.node_id or ""), r.node_ip, r.state.value) for r in replicas])
        return out

    def retire(self) -> None:
        threading.Thread(target=self._drain_and_delete, name="dotcos-retire", daemon=True).start()

    def _drain_and_delete(self) -> None:
        deadline = time.monotonic() + self.settings.drain_s
        time.sleep(min(self.settings.drain_s, 1.0))
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        delete_apps(self.apps)


def _failure(status: ApplicationStatusOverview) -> str:
    """The replica's own error (e.g. a checksum mismatch naming the file), not Serve's summary of it."""
    for deployment in status.deployments.values():
        lines = [line.strip() for line in (deployment.message or "").splitlines() if line.strip()]
        errors = [line for line in lines if ": " in line and line.split(": ", 1)[0].endswith(("Error", "Mismatch"))]
        if errors:
            return errors[-1]
    return str(status.message)


def delete_apps(apps: list[str]) -> None:
    for app in apps:
        try:
            serve.delete(app, _blocking=False)
        except RayError as exc:
            log.warning("could not delete Serve application %s: %s", app, exc)


class RayLoader:
    """Deploys each version's shards on Ray Serve (joining or starting the cluster on first use).
    The front keeps each version's ids, vectors and attributes (memory-mapped, no index) and its
    change overlay: it takes writes into the journal on the shared root, tells the replicas which
    stored rows the changes hide, and searches the changed documents itself."""

    def __init__(self, root: Path, settings: RaySettings, overlay: OverlaySettings) -> None:
        self.root, self.settings, self.overlay = root, settings, overlay
        self.prefix = f"dotcos-{uuid.uuid4().hex[:8]}"
        self.started = False
        self.apps: list[str] = []

    def start(self) -> None:
        """Join (or start) the cluster from the main thread, before the registry's thread deploys shards:
        Ray's driver state belongs to the thread that initialized it, and the registry thread may end."""
        if not ray.is_initialized():
            ray_init(self.settings.address)
            self.started = self.settings.address == LOCAL
        serve.start(proxy_location="Disabled")

    def __call__(self, collection: str, version: str, note: Note) -> Version:
        start = time.perf_counter()
        manifest, path = read_version(self.root, collection, version)
        apps = [f"{self.prefix}-{collection}-{version}-{shard}" for shard in range(len(manifest.parts()))]
        self._check_room(collection, version, len(apps), note)
        deployment = SHARD_DEPLOYMENT.options(
            num_replicas=self.settings.replicas,
            max_ongoing_requests=self.settings.max_ongoing,
            ray_actor_options={"num_cpus": self.settings.replica_cpus},
        )
        if self._spread():
            deployment = deployment.options(max_replicas_per_node=1)
        targets = [
            RunTarget(
                deployment.bind(str(self.root), collection, version, shard, self.settings), name=app, route_prefix=None
            )
            for shard, app in enumerate(apps)
        ]
        try:
            handles = run_many(targets, wait_for_applications_running=False)
            self._wait_running(apps)
        except (RuntimeError, RayError, DotcosError) as exc:
            delete_apps(apps)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"{collection}/{version} did not start on Ray Serve: {first}") from None
        self.apps.extend(apps)
        catalog = load_parts(manifest, path, self.settings.mmap, indexed=False)
        overlay = open_overlay(self.root, manifest, path, catalog, self.overlay)
        loaded = new_version(manifest, path, RayParts(collection, handles, apps, self.settings), start, overlay)
        log.info(
            "deployed %s version %s on Ray Serve (%d shards x %d replicas) in %.2fs",
            collection,
            version,
            len(apps),
            self.settings.replicas,
            loaded.load_seconds,
        )
        return loaded

    def _spread(self) -> bool:
        """At most one replica of a part per node when the cluster has a node for each replica, so
        losing a node never takes every copy of a part; on fewer nodes, Serve's own spreading. A
        replica lost with its node then waits for a node to return rather than doubling up."""
        return 1 < self.settings.replicas <= len(nodes_with(self.settings.replica_cpus))

    def _check_room(self, collection: str, version: str, shards: int, note: Note) -> None:
        """Say at once, in the log and to the registry, when the cluster lacks the CPUs the shard
        replicas ask for: Serve would otherwise wait for them silently until the deploy timeout."""
        needed = shards * self.settings.replicas * self.settings.replica_cpus
        free, total = cpus()
        if needed <= free + 1e-9:
            return
        why = (
            f"{collection}/{version} waits for {needed:g} CPUs on Ray ({shards} shards x "
            f"DOTCOS_RAY_REPLICAS={self.settings.replicas} x DOTCOS_RAY_REPLICA_CPUS={self.settings.replica_cpus:g}); "
            f"the cluster has {free:g} free of {total:g}: lower those settings or add nodes "
            f"(gives up after DOTCOS_RAY_DEPLOY_TIMEOUT_S={self.settings.deploy_timeout_s:g}s)"
        )
        log.warning("%s", why)
        note(why)

    def _wait_running(self, apps: list[str]) -> None:
        """Block until every shard application runs; fail on a failed deploy or after the timeout."""
        deadline = time.monotonic() + self.settings.deploy_timeout_s
        while True:
            statuses = serve.status().applications
            failed = [a for a in apps if a in statuses and statuses[a].status == ApplicationStatus.DEPLOY_FAILED]
            if failed:
                raise ArtifactError(f"shard application {failed[0]} failed: {_failure(statuses[failed[0]])}")
            if all(a in statuses and statuses[a].status == ApplicationStatus.RUNNING for a in apps):
                return
            if time.monotonic() > deadline:
                free, _ = cpus()
                raise ArtifactError(
                    f"shards not running after {self.settings.deploy_timeout_s:g}s with {free:g} "
                    "CPUs free on Ray (DOTCOS_RAY_REPLICAS x DOTCOS_RAY_REPLICA_CPUS per shard)"
                )
            time.sleep(0.1)

    def close(self) -> None:
        if ray.is_initialized():
            delete_apps(self.apps)
            if self.started:
                ray.shutdown()
