"""`python -m docsgen [--check]`: write the generated reference pages, or fail naming the stale ones."""

from __future__ import annotations

import sys
from pathlib import Path

from docsgen import cli_pages, http_pages, settings_pages

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference"


CLI, SETTINGS = REFERENCE / "cli.md", REFERENCE / "settings.md"


def _http(group: str) -> Path:
    return REFERENCE / "http" / f"{group}.md"


def paths() -> list[Path]:
    """Where the generated pages live (without rendering them)."""
    return [CLI, SETTINGS, *map(_http, http_pages.GROUPS)]


def pages() -> dict[Path, str]:
    """Every generated page by its path, rendered from the code now."""
    http = {_http(group): text for group, text in http_pages.render().items()}
    return {CLI: cli_pages.render(), SETTINGS: settings_pages.render(), **http}


def stale() -> list[Path]:
    """The committed pages that differ from their rendering (missing ones included)."""
    return [path for path, text in pages().items() if not path.is_file() or path.read_text() != text]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        bad = stale()
        for path in bad:
            print(f"{path.relative_to(REFERENCE.parents[1])} is stale: run python -m docsgen", file=sys.stderr)
        return 1 if bad else 0
    for path, text in pages().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
