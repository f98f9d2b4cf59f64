"""How a page's examples run: blocks in page order, sh through bash and python in one namespace per
page, against a real `dotcos-serve`; shown output compared after masking (see docs/development.md)."""

from __future__ import annotations

import contextlib
import doctest
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import httpx
from pytest_codeblocks.main import CodeBlock, extract_from_file

RUN = ("sh", "python")
DOCS_ADDRESS = "127.0.0.1:8000"
MASKS = (
    (re.compile(r"\b\d{8}T\d{12}Z\b"), "<version>"),
    (re.compile(r"\b\d+(\.\d+)?(ms|s)\b"), "<time>"),
)
CHECKER = doctest.OutputChecker()
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@dataclass(frozen=True)
class Page:
    """Where a page's blocks run: its working directory, index root, server address and token."""

    workdir: Path
    root: Path
    address: str
    token: str


def skipped(block: CodeBlock) -> bool:
    return any(mark.startswith("pytest.mark.skip") for mark in block.marks)


def unmarked(path: Path) -> list[str]:
    """Blocks that neither run nor say why not: every block is one or the other."""
    bad = []
    for block in extract_from_file(path):
        if skipped(block) and "reason=" not in "".join(block.marks):
            bad.append(f"{path}:{block.lineno}: a skip mark needs a reason=")
        elif block.syntax not in RUN and not skipped(block):
            bad.append(
                f'{path}:{block.lineno}: a {block.syntax or "plain"} block needs <!--pytest.mark.skip(reason="...")-->'
            )
    return bad


def runnable(path: Path) -> list[CodeBlock]:
    return [block for block in extract_from_file(path) if block.syntax in RUN and not skipped(block)]


def mask(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


def _environment(page: Page) -> dict[str, str]:
    """What a reader's shell has: .venv/bin first on PATH, the index root and the admin token."""
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DOTCOS_INDEX_ROOT": str(page.root),
        "DOTCOS_ADMIN_TOKEN": page.token,
    }


def _shell(code: str, page: Page) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=page.workdir,
        env={**os.environ, **_environment(page)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode:
        raise AssertionError(f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return done.stdout


def _python(code: str, page: Page, namespace: dict[str, object]) -> str:
    out = io.StringIO()
    previous = Path.cwd()
    os.chdir(page.workdir)
    try:
        with mock.patch.dict(os.environ, _environment(page)), contextlib.redirect_stdout(out):
            exec(compile(code, "<docs>", "exec"), namespace)
    finally:
        os.chdir(previous)
    return out.getvalue()


def _catch_up(page: Page) -> None:
    """Load what a block published now, as the reload poll would within DOTCOS_RELOAD_INTERVAL."""
    headers = {"Authorization": f"Bearer {page.token}"}
    httpx.post(f"http://{page.address}/v1/admin/reload", headers=headers, timeout=60).raise_for_status()


def run(block: CodeBlock, page: Page, namespace: dict[str, object]) -> None:
    """Run one block; raise naming the line when it fails or its shown output differs."""
    code = block.code.replace(DOCS_ADDRESS, page.address)
    try:
        got = _shell(code, page) if block.syntax == "sh" else _python(code, page, namespace)
    except Exception as exc:
        raise AssertionError(f"line {block.lineno}: the {block.syntax} block failed: {exc}") from exc
    _catch_up(page)
    if block.expected_output is None:
        return
    want, got = mask(block.expected_output), mask(got.replace(page.address, DOCS_ADDRESS))
    if not CHECKER.check_output(want, got, FLAGS):
        raise AssertionError(f"line {block.lineno}: the output differs\nshown:\n{want}\ngot:\n{got}")
