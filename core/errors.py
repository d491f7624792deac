"""Errors that carry a message meant for the person who made the request.

Anything raised as ``UserInputError`` is shown verbatim to the user (CLI stderr, Discord
ephemeral reply) instead of a traceback, so its text must name the problem and the allowed range.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from a user or admin: the message is shown to them as-is."""


class JobCancelled(Exception):
    """Raised inside a generation when its job was cancelled; the worker stops cleanly."""


class OutOfMemory(RuntimeError):
    """The device ran out of memory for this job; memory was freed and the engine keeps serving."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its class name:
    enough to name a failure in one line of a report without a traceback."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
