"""Errors a user can cause and fix.

A ``UserError`` carries one sentence that names the file or option and what to do. The CLI
turns it into that sentence on stderr and exit code 2, without a traceback. Our own bugs
raise anything else and keep their traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input: one clear sentence, exit code 2."""

    exit_code = 2


class DivergenceError(UserError):
    """Training stopped by the divergence guard (NaN/inf or exploding loss)."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved and the run can be resumed."""

    def __init__(self, message: str):
        super().__init__(message)
