"""Errors only the service raises, beside the shared tree in index_builder.artifact.errors.

DotcosError
├── InputError
│   └── TooLarge        a request over a size limit (HTTP 413)
├── NotFoundError
│   └── Gone            what the request refers to is no longer served (HTTP 410)
├── ArtifactError
├── Conflict            the request names a model no served version was built with (HTTP 409)
└── Unavailable         the service cannot take the request now (HTTP 503)
"""

from __future__ import annotations

from index_builder.artifact.errors import DotcosError, InputError, NotFoundError


class TooLarge(InputError):
    code = "too_large"


class Unavailable(DotcosError):
    code = "unavailable"


class Gone(NotFoundError):
    code = "gone"


class Conflict(DotcosError):
    code = "conflict"
