"""Dependencies point one way, by allow-list: a new module cannot slip across a layer.

    index_builder.artifact + index_builder.retrieval   (shared: the format and the math)
        ^-- index_builder (the builder), index_builder.scaleout (sharded builds, Ray tasks)
        ^-- service.core  <--  service.api  <--  service (entry points)
        ^-- service.scaleout (parts on Ray Serve; also index_builder.scaleout.cluster)
    dotcos_client (client/): httpx and numpy only, nothing of the service

Each package may import the standard library, the first-party packages listed for it and the
third-party packages listed for it, nothing else.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = ("index_builder.artifact", "index_builder.retrieval")

ALLOWED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # package: (first-party prefixes, third-party top-level names)
    "index_builder/artifact": (SHARED, ("numpy", "faiss", "pydantic")),
    "index_builder/retrieval": (("index_builder.retrieval", "index_builder.artifact.errors"), ("numpy", "faiss")),
    "index_builder/scaleout": (("index_builder",), ("numpy", "faiss", "pyarrow", "ray")),
    "index_builder": (("index_builder",), ("numpy", "faiss", "pydantic", "pydantic_settings", "pyarrow", "tqdm")),
    "service/core": ((*SHARED, "service.core"), ("numpy", "faiss")),
    "service/scaleout": (
        (*SHARED, "index_builder.scaleout.cluster", "service.core", "service.scaleout"),
        ("numpy", "ray"),
    ),
    "service/api": (
        (*SHARED, "service.core", "service.scaleout", "service.api", "service.settings"),
        ("numpy", "orjson", "pydantic", "fastapi", "starlette", "prometheus_client"),
    ),
    "service": (
        ("service.core", "service.settings", "service.api", "service.cli", "service.scaleout"),
        ("pydantic", "pydantic_settings", "uvicorn"),
    ),
    "client/dotcos_client": (("dotcos_client",), ("httpx", "numpy")),
}
FIRST_PARTY = ("index_builder", "service", "dotcos_client")
PACKAGE_DIRS = {
    "index_builder": REPO / "index_builder",
    "service": REPO / "service",
    "dotcos_client": REPO / "client" / "dotcos_client",
}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def owner(path: Path) -> str:
    """The most specific package of ALLOWED that holds the file."""
    relative = path.relative_to(REPO).parent.as_posix()
    return max((p for p in ALLOWED if relative == p or relative.startswith(p + "/")), key=len)


def allowed(name: str, package: str) -> bool:
    first_party, third_party = ALLOWED[package]
    top = name.split(".")[0]
    if top in FIRST_PARTY:
        return any(name == p or name.startswith(p + ".") for p in first_party)
    return top in sys.stdlib_module_names or top == "__future__" or top in third_party


@pytest.mark.parametrize("top", FIRST_PARTY)
def test_every_import_is_allowed_for_its_package(top: str) -> None:
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted(PACKAGE_DIRS[top].rglob("*.py"))
        for name in sorted(imports(path))
        if not allowed(name, owner(path))
    ]
    assert offenders == []


def test_the_allow_lists_catch_a_crossing() -> None:
    assert not allowed("service.api.routes", "service/core")
    assert not allowed("fastapi", "service/core")
    assert not allowed("faiss", "service/api")
    assert not allowed("index_builder.pipeline", "service/core")
    assert not allowed("ray", "service/core") and not allowed("ray", "index_builder/retrieval")
    assert not allowed("index_builder.scaleout.tasks", "service/scaleout")
    assert not allowed("service.core.query", "index_builder")
    assert allowed("index_builder.retrieval.scoring", "service/api")
    assert not allowed("index_builder.artifact.errors", "client/dotcos_client") and not allowed(
        "faiss", "client/dotcos_client"
    )
