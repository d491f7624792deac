"""``imagine-bot doctor``: explains what stops the bot from running (owned by operations work)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check this machine's set-up and explain each problem")
    p.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    raise NotImplementedError("imagine-bot doctor is not built yet")
