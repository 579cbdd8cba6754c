"""Errors a user can act on.

The CLI prints these as one line and exits with ``exit_code``; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations


class PdsearchError(Exception):
    """Bad input or an impossible request: the message names the problem."""

    exit_code = 2


class NoFeasiblePolicy(PdsearchError):
    """No policy meets the user's constraints (exit 3, distinct from bad input)."""

    exit_code = 3


class Interrupted(PdsearchError):
    """The driver was asked to stop (SIGINT, SIGTERM); the run can be resumed. Exit 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
