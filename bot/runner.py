"""``imagine-bot run``: the main job (owned by the Discord bot work)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the Discord bot (the main job)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("imagine-bot run is not built yet")
