"""The HTTP API reference, one page per group of routes, rendered from the service's OpenAPI document."""

from __future__ import annotations

import json
from typing import Any

from service.api.app import create_app

Schema = dict[str, Any]

# Route groups: a page each, in this order. A route no group claims fails the render, so a new route
# cannot go undocumented.
GROUPS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "search": (
        "Search and score",
        "Top-k by a vector, by documents or by examples, and exact scores of given candidates.",
        ("/search", "/search/batch", "/similar", "/recommend", "/score"),
    ),
    "documents": (
        "Read back",
        "Documents as they stand now, pending changes applied: by id, page by page, or counted.",
        ("/get", "/scroll", "/count"),
    ),
    "changes": (
        "Changes",
        "Writes between rebuilds, journaled and served within a second; they need the admin token.",
        ("/delete", "/upsert", "/attributes"),
    ),
    "collections": (
        "Collections and routes",
        "What is served, with its recall, plan and pending changes, and which arm a route key takes.",
        ("/v1/collections", "/v1/collections/{name}", "/route"),
    ),
    "operations": (
        "Operations",
        "Liveness, readiness, metrics and the admin reload.",
        ("/healthz", "/readyz", "/metrics", "/v1/admin/reload"),
    ),
}


def _group_of(path: str) -> str:
    for key, (_, _, suffixes) in GROUPS.items():
        if any(path == s or (s.startswith("/") and path.endswith("/{name}" + s)) for s in suffixes):
            return key
    raise ValueError(f"no reference page claims the route {path}: add it to docsgen.http_pages.GROUPS")


def _type(schema: Schema) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type(schema['additionalProperties'])}"
    return str(kind)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fields(schema: Schema) -> str:
    required = set(schema.get("required", ()))
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        default = (
            "required" if name in required else f"`{_cell(json.dumps(prop['default']))}`" if "default" in prop else ""
        )
        rows.append(f"| `{name}` | {_type(prop)} | {default} | {_cell(prop.get('description', ''))} |")
    return "\n".join(rows)


def _refs(schema: object, into: set[str]) -> None:
    if isinstance(schema, dict):
        if "$ref" in schema:
            into.add(schema["$ref"].rsplit("/", 1)[-1])
        for value in schema.values():
            _refs(value, into)
    elif isinstance(schema, list):
        for value in schema:
            _refs(value, into)


def _closure(names: set[str], schemas: dict[str, Schema]) -> list[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            found: set[str] = set()
            _refs(schemas[name], found)
            todo.extend(found)
    return sorted(seen)


def _model(name: str, schema: Schema) -> str:
    about = schema.get("description", "")
    body = _fields(schema) if "properties" in schema else f"One of {_type(schema)}."
    return f"### {name}\n\n" + (f"{about}\n\n" if about else "") + body + "\n"


def _operation(method: str, path: str, op: Schema) -> str:
    parts = [f"## {method.upper()} `{path}`\n", op.get("description") or op.get("summary", ""), ""]
    params = [p for p in op.get("parameters", []) if p["in"] != "path"]
    if params:
        parts += ["**Query parameters**", "", "| name | type | meaning |", "|---|---|---|"]
        parts += [f"| `{p['name']}` | {_type(p['schema'])} | {_cell(p.get('description', ''))} |" for p in params]
        parts.append("")
    for kind, content in op.get("requestBody", {}).get("content", {}).items():
        parts += [f"**Body** (`{kind}`): {_type(content.get('schema', {'type': 'bytes'}))}", ""]
    parts += ["| status | meaning | body |", "|---|---|---|"]
    for status, answer in op["responses"].items():
        bodies = [_type(c["schema"]) for c in answer.get("content", {}).values() if "schema" in c]
        parts.append(f"| {status} | {_cell(answer['description'])} | {', '.join(bodies)} |")
    return "\n".join(parts) + "\n"


def render() -> dict[str, str]:
    """Page name → Markdown, one per group, each with the models its routes use."""
    spec = create_app().openapi()
    schemas: dict[str, Schema] = spec["components"]["schemas"]
    operations: dict[str, list[str]] = {key: [] for key in GROUPS}
    used: dict[str, set[str]] = {key: set() for key in GROUPS}
    for path, methods in spec["paths"].items():
        group = _group_of(path)
        for method, op in methods.items():
            operations[group].append(_operation(method, path, op))
            _refs(op, used[group])
    pages = {}
    for key, (title, summary, _) in GROUPS.items():
        models = [_model(name, schemas[name]) for name in _closure(used[key], schemas)]
        head = f"# {title}\n\n{summary} Generated from the OpenAPI document (`/openapi.json`) by `python -m docsgen`.\n"
        pages[key] = "\n".join([head, *operations[key], "## Models\n", *models])
    return pages
