"""Lines of the two packages (index_builder, service) at git revisions, by kind, like for like.

Each revision's packages are taken with `git archive`, formatted with today's ruff settings (so a
change of line length or formatter does not count), and their lines counted as blank,
comment-only, docstring (string statements) or code. `--commits` reports each commit against its
parent and the sum, which separates a piece of work from what landed beside it.

    python -m bench.package_lines d44a9b8 e7124fc HEAD
    python -m bench.package_lines --commits 4c1a413 b0d4cf4
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import sys
import tarfile
import tempfile
import tokenize
from pathlib import Path

PACKAGES = ("index_builder", "service")
KINDS = ("total", "blank", "comment", "docstring", "code")
ROOT = Path(__file__).resolve().parent.parent


def file_counts(text: str) -> dict[str, int]:
    """Lines of one module by kind; code is what is neither blank, comment-only nor docstring."""
    lines = text.splitlines()
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    comment = sum(1 for t in tokens if t.type == tokenize.COMMENT and lines[t.start[0] - 1].lstrip().startswith("#"))
    docstring = 0
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        for statement in body if isinstance(body, list) else []:
            if isinstance(statement, ast.Expr) and isinstance(getattr(statement.value, "value", None), str):
                docstring += (statement.end_lineno or statement.lineno) - statement.lineno + 1
    blank = sum(1 for line in lines if not line.strip())
    total = len(lines)
    return {
        "total": total,
        "blank": blank,
        "comment": comment,
        "docstring": docstring,
        "code": total - blank - comment - docstring,
    }


def revision_counts(revision: str) -> dict[str, int]:
    """The packages' lines at `revision`, formatted with the working tree's pyproject.toml."""
    with tempfile.TemporaryDirectory() as work:
        archive = subprocess.run(["git", "archive", revision, *PACKAGES], cwd=ROOT, capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(work, filter="data")
        (Path(work) / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
        subprocess.run([sys.executable, "-m", "ruff", "format", "-q", *PACKAGES], cwd=work, check=True)
        totals = dict.fromkeys(KINDS, 0)
        for path in sorted(p for package in PACKAGES for p in (Path(work) / package).rglob("*.py")):
            for kind, value in file_counts(path.read_text(encoding="utf-8")).items():
                totals[kind] += value
        return totals


def row(label: str, counts: dict[str, int], signed: bool = False) -> str:
    cells = [f"{counts[k]:+,}" if signed else f"{counts[k]:,}" for k in KINDS]
    return f"| {label} | {' | '.join(cells)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="*", help="revisions to count")
    parser.add_argument("--commits", nargs="*", default=[], help="commits to report against their parents")
    args = parser.parse_args()
    print(f"| revision | {' | '.join(KINDS)} |\n|---|{'---|' * len(KINDS)}")
    for revision in args.revisions:
        print(row(revision, revision_counts(revision)))
    summed = dict.fromkeys(KINDS, 0)
    for commit in args.commits:
        before, after = revision_counts(f"{commit}^"), revision_counts(commit)
        delta = {k: after[k] - before[k] for k in KINDS}
        summed = {k: summed[k] + delta[k] for k in KINDS}
        print(row(f"{commit} against its parent", delta, signed=True))
    if args.commits:
        print(row(f"sum of {len(args.commits)} commits", summed, signed=True))


if __name__ == "__main__":
    main()
