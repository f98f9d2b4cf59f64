"""Attribute filters: the request's boolean tree checked once against the collection's attributes,
then evaluated by each part into the set of its rows that pass (index_builder.retrieval.rowsets).

    {"must": [...], "should": [...], "must_not": [...]}    nestable; every list optional
    {"key": K, "match": V}      {"key": K, "any": [V, ...]}      {"key": K, "is_null": true}
    {"key": K, "range": {"gt" | "gte" | "lt" | "lte": N, ...}}    {"has_id": [id, ...]}

A document passes a tree when it passes every `must`, at least one `should` (when there are any)
and no `must_not`. Keyword lists match when any of their values matches. An empty tree passes
every document.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from index_builder.artifact.attributes import AttributeType, Column
from index_builder.artifact.errors import InputError
from index_builder.artifact.manifest import AttributeEntry
from index_builder.retrieval.rowsets import AllBut, Rows, RowSet, intersect, negate, union
from service.core.config import Limits

EVERYTHING: RowSet = AllBut(np.empty(0, dtype=np.int64))
BOUNDS = ("gt", "gte", "lt", "lte")
TREE_KEYS = ("must", "should", "must_not")


@dataclass(frozen=True)
class Match:
    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Range:
    key: str
    low: float | None
    high: float | None
    low_open: bool
    high_open: bool


@dataclass(frozen=True)
class IsNull:
    key: str
    null: bool


@dataclass(frozen=True)
class HasId:
    ids: tuple[str, ...]


@dataclass(frozen=True)
class Tree:
    must: tuple[Node, ...] = ()
    should: tuple[Node, ...] = ()
    must_not: tuple[Node, ...] = ()


Node = Match | Range | IsNull | HasId | Tree


def with_ids(tree: Node | None, include: list[str] | None, exclude: list[str]) -> Node | None:
    """The request's tree with the `include` / `exclude` id lists folded in as has_id conditions."""
    must = (tree,) if tree is not None else ()
    if include is not None:
        must = (*must, HasId(tuple(include)))
    must_not = (HasId(tuple(exclude)),) if exclude else ()
    if not must_not and len(must) <= 1:
        return must[0] if must else None
    return Tree(must=must, must_not=must_not)


@dataclass
class _Checker:
    """Compiles a JSON filter against a collection's attributes, counting conditions as it goes."""

    collection: str
    version: str
    attributes: dict[str, AttributeEntry]
    limits: Limits
    conditions: int = 0

    def tree(self, raw: Any, path: str, depth: int) -> Tree:
        if type(raw) is not dict:
            raise InputError(f"{path}: expected an object with must, should or must_not, got {_kind(raw)}")
        if depth > self.limits.max_filter_depth:
            raise InputError(f"{path}: filters nest at most {self.limits.max_filter_depth} levels deep")
        unknown = [k for k in raw if k not in TREE_KEYS]
        if unknown:
            raise InputError(f"{path}: unknown field {unknown[0]!r}; a filter has must, should and must_not")
        lists = {}
        for name in TREE_KEYS:
            items = raw.get(name, [])
            if type(items) is not list:
                raise InputError(f"{path}.{name}: expected a list of conditions, got {_kind(items)}")
            lists[name] = tuple(self.node(item, f"{path}.{name}[{i}]", depth + 1) for i, item in enumerate(items))
        return Tree(lists["must"], lists["should"], lists["must_not"])

    def node(self, raw: Any, path: str, depth: int) -> Node:
        if type(raw) is dict and (not raw or raw.keys() & set(TREE_KEYS)):
            return self.tree(raw, path, depth)
        self.conditions += 1
        if self.conditions > self.limits.max_filter_conditions:
            raise InputError(f"{path}: a filter holds at most {self.limits.max_filter_conditions} conditions")
        if type(raw) is not dict:
            raise InputError(f"{path}: expected a condition object, got {_kind(raw)}")
        if "has_id" in raw:
            return self.has_id(raw, path)
        return self.condition(raw, path)

    def has_id(self, raw: dict[str, Any], path: str) -> HasId:
        ids = raw["has_id"]
        if len(raw) != 1:
            raise InputError(f"{path}: has_id stands alone in its condition")
        if type(ids) is not list or not ids or not all(type(i) is str for i in ids):
            raise InputError(f"{path}.has_id: expected a non-empty list of id strings")
        if len(ids) > self.limits.max_filter_ids:
            raise InputError(f"{path}.has_id: {len(ids)} ids exceed the limit of {self.limits.max_filter_ids}")
        return HasId(tuple(ids))

    def condition(self, raw: dict[str, Any], path: str) -> Node:
        key = raw.get("key")
        if type(key) is not str:
            raise InputError(
                f"{path}.key: expected an attribute name (a condition is key with match, any, range or is_null)"
            )
        entry = self.attributes.get(key)
        if entry is None:
            known = ", ".join(self.attributes) or "none (built without --attributes)"
            raise InputError(
                f"{path}.key: unknown attribute {key!r}; collection {self.collection!r} (version {self.version}) "
                f"has: {known}"
            )
        tests = [t for t in ("match", "any", "range", "is_null") if t in raw]
        extra = [k for k in raw if k not in ("key", "match", "any", "range", "is_null")]
        if len(tests) != 1 or extra:
            raise InputError(f"{path}: give key and exactly one of match, any, range or is_null")
        test = tests[0]
        where = f"{path}.{test}"
        if test == "is_null":
            if type(raw[test]) is not bool:
                raise InputError(f"{where}: expected true or false, got {_kind(raw[test])}")
            return IsNull(key, raw[test])
        if test == "range":
            return _range(key, entry.type, raw[test], where)
        values = [raw[test]] if test == "match" else raw[test]
        if test == "any" and (type(values) is not list or not values):
            raise InputError(f"{where}: expected a non-empty list of values")
        for i, value in enumerate(values):
            check_value(key, entry.type, value, where if test == "match" else f"{where}[{i}]")
        return Match(key, tuple(values))


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _number(value: Any) -> bool:
    return type(value) in (int, float)


def check_value(key: str, kind: AttributeType, value: Any, where: str) -> None:
    """A match value must have the attribute's own type (no coercion: "3" is not 3)."""
    ok = {
        AttributeType.KEYWORD: type(value) is str,
        AttributeType.KEYWORDS: type(value) is str,
        AttributeType.BOOLEAN: type(value) is bool,
        AttributeType.INTEGER: type(value) is int,
        AttributeType.FLOAT: _number(value),
    }[kind]
    if not ok:
        wanted = {"keyword_list": "a string", "keyword": "a string", "boolean": "true or false"}.get(kind, "a number")
        if kind is AttributeType.INTEGER:
            wanted = "an integer"
        raise InputError(f"{where}: {key!r} is {kind}, so the value must be {wanted}; got {_kind(value)} {value!r}")


def _range(key: str, kind: AttributeType, raw: Any, where: str) -> Range:
    if not kind.numeric:
        raise InputError(f"{where}: range needs an integer or float attribute; {key!r} is {kind} (use match or any)")
    if type(raw) is not dict or not raw or not raw.keys() <= set(BOUNDS):
        raise InputError(f"{where}: expected an object of gt, gte, lt, lte bounds")
    for bound, value in raw.items():
        if not _number(value) or value != value or value in (float("inf"), float("-inf")):
            raise InputError(f"{where}.{bound}: expected a finite number, got {_kind(value)} {value!r}")
    if "gt" in raw and "gte" in raw or "lt" in raw and "lte" in raw:
        raise InputError(f"{where}: give at most one lower (gt, gte) and one upper (lt, lte) bound")
    low = raw.get("gt", raw.get("gte"))
    high = raw.get("lt", raw.get("lte"))
    return Range(key, low, high, "gt" in raw, "lt" in raw)


def compile_filter(
    raw: Any, collection: str, version: str, attributes: dict[str, AttributeEntry], limits: Limits
) -> Tree:
    """The checked tree of a request's `filter` against one version's attributes; InputError names
    the field, the problem and the version."""
    return _Checker(collection, version, attributes, limits).tree(raw, "filter", 1)


def names_ids(node: Node) -> bool:
    """Whether the tree holds a has_id condition (an include or exclude list among them)."""
    if isinstance(node, Tree):
        return any(names_ids(child) for child in (*node.must, *node.should, *node.must_not))
    return isinstance(node, HasId)


def required_values(node: Node) -> list[tuple[str, Any]]:
    """The (attribute, value) pairs every passing document carries: single-value matches reached
    through `must` alone."""
    if isinstance(node, Tree):
        return [pair for child in node.must for pair in required_values(child)]
    return [(node.key, node.values[0])] if isinstance(node, Match) and len(node.values) == 1 else []


def evaluate(
    node: Node, columns: dict[str, Column], known_rows: Callable[[list[str]], np.ndarray], total: int
) -> RowSet:
    """The rows of one part (of `total`) that pass the tree."""
    if isinstance(node, Tree):
        passed = EVERYTHING
        for child in node.must:
            passed = intersect(passed, evaluate(child, columns, known_rows, total), total)
        if node.should:
            any_of = evaluate(node.should[0], columns, known_rows, total)
            for child in node.should[1:]:
                any_of = union(any_of, evaluate(child, columns, known_rows, total), total)
            passed = intersect(passed, any_of, total)
        for child in node.must_not:
            passed = intersect(passed, negate(evaluate(child, columns, known_rows, total), total), total)
        return passed
    if isinstance(node, HasId):
        return Rows(known_rows(list(node.ids)))
    column = columns[node.key]
    if isinstance(node, Match):
        return column.matching(list(node.values))
    if isinstance(node, Range):
        return column.within(node.low, node.high, node.low_open, node.high_open)
    nulls = column.nulls()
    return nulls if node.null else negate(nulls, total)
