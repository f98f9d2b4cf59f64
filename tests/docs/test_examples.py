"""`make test-docs`: every sh and python block of the docs and the README runs, in order per page,
against a real `dotcos-serve` on a free port and a temporary index root; shown output must match."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from docsgen.__main__ import paths as generated_pages
from tests.conftest import REPO
from tests.docs.examples import Page, run, runnable, unmarked

# Generated reference pages hold no examples; benchmark results are reports of runs, linked as they are.
SKIPPED = set(generated_pages()) | set((REPO / "docs" / "benchmarks" / "results").glob("*.md"))
PAGES = [REPO / "README.md", REPO / "client" / "README.md"] + sorted(
    path for path in (REPO / "docs").rglob("*.md") if path not in SKIPPED
)
EXAMPLES = [page for page in PAGES if runnable(page)]
TOKEN = "docs-token"

pytestmark = pytest.mark.docs


def test_every_block_runs_or_says_why_not() -> None:
    bad = [problem for page in PAGES for problem in unmarked(page)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_page_examples(path: Path, tmp_path: Path, serve: Callable[..., object]) -> None:
    blocks = runnable(path)
    root, workdir = tmp_path / "indexes", tmp_path / "work"
    root.mkdir()
    workdir.mkdir()
    server = serve(root, DOTCOS_ADMIN_TOKEN=TOKEN, DOTCOS_RELOAD_INTERVAL="0")
    page = Page(workdir, root, server.url.removeprefix("http://"), TOKEN)
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in blocks:
        run(block, page, namespace)
