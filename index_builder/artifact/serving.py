"""Which versions of a collection are served, and how requests are spread over them.

    ROOT/<collection>/CURRENT     the active version (artifact.layout)
    ROOT/<collection>/ALIASES     {"candidate": "<version>", ...}: more versions served at once
    ROOT/<collection>/ROUTE       {"split": {"current": 90, "candidate": 10},
                                   "shadow": {"arm": "candidate", "sample": 0.05}}

Both files are replaced atomically (temp file + rename) and reloaded by the service like CURRENT.
An arm is "current" or an alias. A request carrying a route key goes to the arm of the weighted
rendezvous hash of (collection, key): each arm draws a number from the key, divides its minus
logarithm by its weight, and the smallest wins. The same key gets the same arm in every worker and
across restarts, and changing one arm's weight (or adding or removing an arm) only moves keys to
or from that arm, never between the others.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from index_builder.artifact.errors import ArtifactError, InputError
from index_builder.artifact.layout import check_name, collection_dir, write_atomic

ALIASES_FILE = "ALIASES"
ROUTE_FILE = "ROUTE"
CURRENT_ARM = "current"


class Shadow(BaseModel):
    """A share of the live requests also run, in the background, on another arm's version."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    arm: str
    sample: float = Field(gt=0, le=1)


class Route(BaseModel):
    """How requests with a route key are split over arms, and what is shadowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    split: dict[str, int] = Field(default_factory=dict)
    shadow: Shadow | None = None

    def arm(self, collection: str, key: str) -> str:
        """The arm of a route key (weighted rendezvous hashing over the split; an arm of weight 0
        takes no keys)."""
        return min(self.split, key=lambda arm: _score(collection, key, arm, self.split[arm]))


def _score(collection: str, key: str, arm: str, weight: int) -> float:
    if weight <= 0:
        return math.inf
    digest = hashlib.blake2b(f"{collection}\0{key}\0{arm}".encode(), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 0.5) / 2**64
    return -math.log(unit) / weight


def read_aliases(root: Path, collection: str) -> dict[str, str]:
    """Alias -> version (empty without an ALIASES file)."""
    path = collection_dir(root, collection) / ALIASES_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is unreadable: {exc}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ArtifactError(f"{path} must be a JSON object of alias -> version")
    return {str(alias): version for alias, version in raw.items()}


def write_aliases(root: Path, collection: str, aliases: dict[str, str]) -> None:
    path = collection_dir(root, collection) / ALIASES_FILE
    if aliases:
        write_atomic(path, json.dumps(dict(sorted(aliases.items())), indent=2) + "\n")
    else:
        path.unlink(missing_ok=True)


def check_alias(name: str) -> str:
    check_name("alias", name)
    if name == CURRENT_ARM:
        raise InputError(f"alias {name!r} is reserved: it names the active version")
    return name


def read_route(root: Path, collection: str) -> Route | None:
    """The collection's route (None without a ROUTE file)."""
    path = collection_dir(root, collection) / ROUTE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ArtifactError(f"{path} is unreadable: {exc}") from None
    try:
        return Route.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ArtifactError(f"{path} is invalid at {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def write_route(root: Path, collection: str, route: Route | None) -> None:
    path = collection_dir(root, collection) / ROUTE_FILE
    if route is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, route.model_dump_json(indent=2, exclude_none=True) + "\n")


def parse_split(text: str) -> dict[str, int]:
    """`current=90,candidate=10` as arm -> weight."""
    split: dict[str, int] = {}
    for part in text.split(","):
        arm, sep, weight = part.strip().partition("=")
        if not sep or not weight.strip().isdigit():
            raise InputError(
                f"--split: expected ARM=WEIGHT with a whole weight (0 takes no keys), got {part.strip()!r}"
            )
        if arm in split:
            raise InputError(f"--split: arm {arm!r} is given twice")
        split[arm.strip()] = int(weight)
    return split
