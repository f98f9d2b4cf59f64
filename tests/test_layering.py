"""Dependencies point one way: contract <- builder, contract <- service core <- service api."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

RULES = {
    "index_builder/contract": ("service", "index_builder.cli", "index_builder.pipeline", "fastapi",
                               "starlette", "uvicorn", "tqdm", "pyarrow", "prometheus_client"),
    "index_builder": ("service",),
    "service/core": ("service.api", "fastapi", "starlette", "uvicorn", "prometheus_client"),
    "service/api": ("faiss",),
    "service": tuple(f"index_builder.{m}" for m in (
        "cli", "pipeline", "readers", "staging", "indexes", "evaluate", "publish", "commands",
        "covariance", "demo", "progress", "settings", "faults", "synthetic", "tasks", "sharded")),
}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(RULES))
def test_forbidden_imports(package: str) -> None:
    forbidden = RULES[package]
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        for name in imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert offenders == []
