"""Errors shared by the builder and the service.

DotcosError
├── InputError          the caller sent something unusable (builder: exit 2; HTTP: 400/422)
│   └── InvalidMetric   unknown or malformed metric name
├── NotFoundError       unknown collection, version or document id (HTTP 404)
└── ArtifactError       a published artifact is missing, corrupt or of an unknown schema
    └── ChecksumMismatch
BuildFailed             a build worker crashed or was lost (builder: exit 1)
"""

from __future__ import annotations


class DotcosError(Exception):
    """Base of every error dotcos raises on purpose; the message is meant for a person."""

    code = "error"


class InputError(DotcosError):
    code = "invalid_input"


class InvalidMetric(InputError):
    code = "invalid_metric"


class NotFoundError(DotcosError):
    code = "not_found"


class ArtifactError(DotcosError):
    code = "artifact_error"


class ChecksumMismatch(ArtifactError):
    code = "checksum_mismatch"


class BuildFailed(DotcosError):
    """A build step failed for a reason other than its input (a crashed or lost worker)."""

    code = "build_failed"
