"""Fault injection points, for the kill-and-resume tests.

``EDGETICKET_FAULT="POINT:N[:ACTION]"`` makes the N-th time the process passes ``point(POINT)``
deliver ACTION to itself: ``KILL`` (SIGKILL, the default: no cleanup at all), ``TERM`` or
``INT`` (pre-emption, handled like a real signal). Points: ``step`` (after an optimizer step,
mid-epoch), ``write`` (a temporary file written, before its rename: a checkpoint write in
progress), ``level`` (a search level finished, before the next starts), ``mask`` (a level's
mask being computed, before it is saved), ``swap`` (a staged folder complete, between its two
renames) and ``start`` (before anything is saved).
Without the variable every ``point`` is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("EDGETICKET_FAULT", "")
_COUNTS: dict[str, int] = {}


def point(name: str) -> None:
    if not _SPEC:
        return
    parts = _SPEC.split(":")
    if parts[0] != name:
        return
    _COUNTS[name] = _COUNTS.get(name, 0) + 1
    if _COUNTS[name] == int(parts[1]):
        sig = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}[parts[2] if len(parts) > 2 else "KILL"]
        os.kill(os.getpid(), sig)
