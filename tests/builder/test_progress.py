"""Batch-job output: a bar on a terminal, plain log lines otherwise, nothing with --quiet."""

from __future__ import annotations

import logging
import sys

import pytest

from index_builder.progress import Progress


def run_stage(progress: Progress) -> None:
    with progress.stage("read", 100) as bar:
        bar.update(100)


def test_log_lines_when_not_a_terminal(caplog: pytest.LogCaptureFixture, capsys) -> None:
    with caplog.at_level(logging.INFO, logger="index_builder.progress"):
        run_stage(Progress())
    assert "read: started (100 vec)" in caplog.text and "read: done in" in caplog.text
    assert "it/s" not in capsys.readouterr().err and "vec/s" not in caplog.text


def test_a_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with caplog.at_level(logging.INFO, logger="index_builder.progress"):
        run_stage(Progress())
    err = capsys.readouterr().err
    assert "read:" in err and "/100" in err and "vec/s" in err
    assert "started" not in caplog.text


def test_quiet_silences_both(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with caplog.at_level(logging.DEBUG, logger="index_builder.progress"):
        progress = Progress(quiet=True)
        run_stage(progress)
    assert capsys.readouterr().err == "" and caplog.text == ""
    assert "read" in progress.timings
