"""Ids to rows: a part's id table (service.core.idtable) against one dict lookup per id.

A request's long id lists (exclusion lists, `has_id` filters, /get, /score) are turned into rows
by the part that holds the ids. Each round draws fresh ids, so no figure comes from ids already in
the cache, and the ways take turns within a round.

    python -m bench.idlookup                       # writes bench/results/idlookup.{md,json,png}
    python -m bench.idlookup --code /tmp/before    # the same with another checkout's idtable
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SIZES = (100_000, 1_000_000)
LISTS = (1_000, 10_000)


def idtable_of(code: Path | None) -> ModuleType:
    """service.core.idtable from this checkout, or from the checkout at `code`."""
    if code is None:
        from service.core import idtable

        return idtable
    spec = importlib.util.spec_from_file_location("before_idtable", code / "service" / "core" / "idtable.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure(module: ModuleType, size: int, wanted: int, rounds: int, seed: int) -> dict[str, float]:
    """Median milliseconds of the table and of the dict over `rounds` fresh id lists."""
    ids = np.array([f"item-{i}" for i in range(size)], dtype=object)
    by_id = {doc_id: row for row, doc_id in enumerate(ids)}
    table = module.IdTable.of(ids, by_id)
    rng = np.random.default_rng(seed)
    ways = {"table": table.lookup, "dict": lambda asked: module.dict_lookup(by_id, asked)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for turn in range(rounds):
        asked = [f"item-{r}" for r in rng.choice(size, wanted, replace=False)]
        for name in sorted(ways, reverse=bool(turn % 2)):
            start = time.perf_counter()
            rows = ways[name](asked)
            times[name].append(time.perf_counter() - start)
            assert int(rows[0]) == int(asked[0].removeprefix("item-"))
    return {name: float(np.median(values) * 1e3) for name, values in times.items()}


def write(out: Path, name: str, rows: list[dict[str, Any]], label: str) -> None:
    lines = [
        "# Ids to rows: the id table against a dict",
        "",
        f"`python -m bench.idlookup` ({label}): median ms per id list over fresh random ids, the two ways taking "
        "turns within each round, one thread. Ratio = table / dict, measured in the same run.",
        "",
        "| part rows | ids asked | table ms | dict ms | ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['size']:,} | {r['ids']:,} | {r['table']:.2f} | {r['dict']:.2f} | {r['table'] / r['dict']:.2f} |"
        for r in rows
    ]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{name}.json").write_text(json.dumps({"label": label, "rows": rows}, indent=1) + "\n")
    figure, axes = plt.subplots(figsize=(6, 3.5))
    labels = [f"{r['size'] // 1000}k rows, {r['ids'] // 1000}k ids" for r in rows]
    x = np.arange(len(rows))
    axes.bar(x - 0.2, [r["table"] for r in rows], 0.4, label="id table")
    axes.bar(x + 0.2, [r["dict"] for r in rows], 0.4, label="dict")
    axes.set_xticks(x, labels, fontsize=8)
    axes.set_ylabel("ms per id list")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / f"{name}.png", dpi=120)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, help="another checkout whose idtable to measure (before/after)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--name", default="idlookup")
    args = parser.parse_args(argv)
    module = idtable_of(args.code)
    rows = []
    for size in SIZES:
        for wanted in LISTS:
            found = measure(module, size, wanted, args.rounds, args.seed)
            rows.append({"size": size, "ids": wanted, **found})
            print(f"{size:>9,} rows {wanted:>6,} ids: table {found['table']:.2f} ms, dict {found['dict']:.2f} ms")
    write(args.out, args.name, rows, f"code: {args.code or 'this checkout'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
