"""Joining a Ray cluster, the same way for the builder's tasks and the service's shards."""

from __future__ import annotations

import os
import shutil
from typing import Any

from index_builder.artifact.errors import DotcosError

LOCAL = "local"
OBJECT_STORE_CAP = 512 << 20
OBJECT_STORE_MIN = 80 << 20


def local_object_store_bytes(shm: str = "/dev/shm") -> int:
    """The object store of a local cluster: what dotcos passes through it is small (shard answers,
    task results), so at most 512 MiB, and never more than /dev/shm can hold. Ray's own default
    (30% of RAM) overflows a container's /dev/shm and falls back to a slow store in /tmp."""
    try:
        free = shutil.disk_usage(shm).free
    except OSError:
        return OBJECT_STORE_CAP
    return max(OBJECT_STORE_MIN, min(OBJECT_STORE_CAP, int(free * 0.8)))


def ray_init(address: str) -> None:
    """Join the cluster at `address`, or start a local one on this machine's cores (loopback only).

    Ray is an optional extra, imported only here, when a user asked for it.
    """
    import ray

    if address == LOCAL:
        ray.init(
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=local_object_store_bytes(),
            _node_ip_address="127.0.0.1",
            configure_logging=False,
        )
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)


def dotcos_cause(exc: BaseException) -> DotcosError | None:
    """The DotcosError a Ray task raised on purpose, rebuilt without Ray's traceback text; else None."""
    cause = getattr(exc, "cause", None)
    return type(cause)(str(cause)) if isinstance(cause, DotcosError) else None


def ray_state() -> Any:
    """Ray's cluster-state calls (untyped where Ray is installed, absent where lint runs without it)."""
    import ray

    return ray


def cluster_nodes() -> list[dict[str, Any]]:
    """The cluster's nodes, live and dead, as Ray describes them (NodeID, NodeName, Alive, Resources, ...)."""
    nodes: list[dict[str, Any]] = ray_state().nodes()
    return nodes


def cpus() -> tuple[float, float]:
    """The cluster's free CPUs and its total."""
    state = ray_state()
    return float(state.available_resources().get("CPU", 0.0)), float(state.cluster_resources().get("CPU", 0.0))


def nodes_with(at_least: float) -> list[str]:
    """The ids of the live nodes with at least `at_least` CPUs (what one replica or task reserves)."""
    return [n["NodeID"] for n in cluster_nodes() if n["Alive"] and n["Resources"].get("CPU", 0.0) >= at_least]


def node_names() -> dict[str, str]:
    """Each node's id -> the name it was started with (`ray start --node-name`), else its address."""
    return {node["NodeID"]: node.get("NodeName") or node["NodeManagerAddress"] for node in cluster_nodes()}
