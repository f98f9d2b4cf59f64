"""Attributes for test corpora and a plain-Python oracle of filters, group-by and thresholds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.service.oracle import true_scores

SELLERS = [f"seller-{i:02d}" for i in range(40)]
TAGS = ["new", "sale", "eco", "gift", "bulk", "rare", "local", "premium"]
MARKETS = ["de", "fr", "us", "jp"]


def make_attributes(n: int, seed: int = 3) -> dict[str, list[Any]]:
    """Skewed sellers, tag lists, prices, stock counts, a flag and a market; ~5% nulls in each."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(SELLERS) + 1)
    weights /= weights.sum()

    def nullable(make: Any) -> list[Any]:
        return [None if rng.random() < 0.05 else make() for _ in range(n)]

    return {
        "seller": nullable(lambda: SELLERS[int(rng.choice(len(SELLERS), p=weights))]),
        "tags": nullable(lambda: sorted({TAGS[i] for i in rng.integers(0, len(TAGS), int(rng.integers(0, 4)))})),
        "price": nullable(lambda: round(float(rng.gamma(2.0, 20.0)), 2)),
        "stock": nullable(lambda: int(rng.integers(0, 50))),
        "in_stock": nullable(lambda: bool(rng.random() < 0.7)),
        "market": nullable(lambda: MARKETS[int(rng.integers(0, len(MARKETS)))]),
    }


ARROW_TYPES = {
    "seller": pa.string(),
    "tags": pa.list_(pa.string()),
    "price": pa.float64(),
    "stock": pa.int64(),
    "in_stock": pa.bool_(),
    "market": pa.string(),
}


def write_parquet(path: Path, ids: list[str], docs: np.ndarray, attributes: dict[str, list[Any]]) -> None:
    columns = {"id": pa.array(ids), "vector": pa.array(docs.tolist(), type=pa.list_(pa.float32()))}
    columns.update({k: pa.array(v, type=ARROW_TYPES[k]) for k, v in attributes.items()})
    pq.write_table(pa.table(columns), path)


def write_jsonl(path: Path, ids: list[str], attributes: dict[str, list[Any]], order: np.ndarray) -> None:
    """A side file keyed by id, its lines in `order` (not the collection's)."""
    with open(path, "w") as out:
        for row in order:
            out.write(json.dumps({"id": ids[row], **{k: v[row] for k, v in attributes.items()}}) + "\n")


def _condition(cond: dict[str, Any], row: int, attributes: dict[str, list[Any]], ids: list[str]) -> bool:
    if "has_id" in cond:
        return ids[row] in cond["has_id"]
    value = attributes[cond["key"]][row]
    if "is_null" in cond:
        return (value is None) == cond["is_null"]
    if value is None:
        return False
    values = value if isinstance(value, list) else [value]
    if "match" in cond:
        return cond["match"] in values
    if "any" in cond:
        return any(v in values for v in cond["any"])
    bounds = cond["range"]
    return all({"gt": value > b, "gte": value >= b, "lt": value < b, "lte": value <= b}[op] for op, b in bounds.items())


def passes(node: dict[str, Any], row: int, attributes: dict[str, list[Any]], ids: list[str]) -> bool:
    if not node.keys() & {"must", "should", "must_not"} and node:
        return _condition(node, row, attributes, ids)
    ok = all(passes(c, row, attributes, ids) for c in node.get("must", []))
    should = node.get("should", [])
    ok = ok and (not should or any(passes(c, row, attributes, ids) for c in should))
    return ok and not any(passes(c, row, attributes, ids) for c in node.get("must_not", []))


def passing(tree: dict[str, Any] | None, attributes: dict[str, list[Any]], ids: list[str]) -> np.ndarray:
    """Rows that pass the filter."""
    if tree is None:
        return np.arange(len(ids))
    return np.array([r for r in range(len(ids)) if passes(tree, r, attributes, ids)], dtype=np.int64)


def expected(
    metric: str,
    query: np.ndarray,
    docs: np.ndarray,
    allowed: np.ndarray,
    k: int,
    attributes: dict[str, list[Any]],
    group: dict[str, Any] | None = None,
    threshold: float | None = None,
) -> tuple[list[int], np.ndarray]:
    """The exact answer's rows (best first, ties by row) and every document's true score."""
    scores = true_scores(metric, query, docs)
    rows = [int(r) for r in allowed if np.isfinite(scores[r])]
    rows.sort(key=lambda r: (-scores[r], r))
    if threshold is not None:
        rows = [r for r in rows if scores[r] >= threshold]
    if group is None:
        return rows[:k], scores
    taken: list[int] = []
    counts: dict[Any, int] = {}
    for r in rows:
        value = attributes[group["key"]][r]
        if value is not None and counts.get(value, 0) >= group["max_per_group"]:
            continue
        counts[value] = counts.get(value, 0) + 1
        taken.append(r)
        if len(taken) == k:
            break
    return taken, scores
