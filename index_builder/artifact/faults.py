"""Crash points for chaos tests: the process kills itself at a named step when told to.

The entry point arms at most one point from settings (DOTCOS_CRASH_AT); library code
calls `crash_point(name)` at each step of publishing. Unarmed, it costs one comparison.
"""

from __future__ import annotations

import os
import signal

_armed: str | None = None


def arm(point: str | None) -> None:
    """Select the crash point for this process (None disarms)."""
    global _armed
    _armed = point or None


def crash_point(name: str) -> None:
    """SIGKILL this process if `name` is the armed point: no cleanup, like a power cut."""
    if _armed == name:
        os.kill(os.getpid(), signal.SIGKILL)


def armed() -> str | None:
    """The armed crash point, handed to worker processes so they can arm it too."""
    return _armed
