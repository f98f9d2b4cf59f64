"""Joining a Ray cluster, the same way for the builder's tasks and the service's shards."""

from __future__ import annotations

import os

from index_builder.contract.errors import DotcosError

LOCAL = "local"


def ray_init(address: str) -> None:
    """Join the cluster at `address`, or start a local one on this machine's cores (loopback only).

    Ray is an optional extra, imported only here, when a user asked for it.
    """
    import ray

    if address == LOCAL:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1", configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)


def dotcos_cause(exc: BaseException) -> DotcosError | None:
    """The DotcosError a Ray task raised on purpose, rebuilt without Ray's traceback text; else None."""
    cause = getattr(exc, "cause", None)
    return type(cause)(str(cause)) if isinstance(cause, DotcosError) else None
