"""Every request of the golden HTTP corpus still gets the recorded status and body."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.service.http_corpus import GOLDEN, answers, key


@pytest.mark.parametrize("door", ["front", "routes"])
def test_every_recorded_response_is_unchanged(door: str, tmp_path: Path) -> None:
    """Through the served app, and through FastAPI's routes alone: both doors call the same handlers."""
    golden = json.loads(GOLDEN.read_text())
    sent, got = answers(tmp_path, door)
    assert [key(r) for r in sent] == [g["request"] for g in golden], "the corpus changed: record it anew"
    assert len(golden) >= 200
    changed = [(g["request"], g["response"], now) for g, now in zip(golden, got, strict=True) if now != g["response"]]
    if changed:
        name, recorded, now = changed[0]
        pytest.fail(
            f"{len(changed)} of {len(golden)} responses changed; first: {name}\n"
            f"recorded: {json.dumps(recorded)[:600]}\nnow:      {json.dumps(now)[:600]}"
        )
