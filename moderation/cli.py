"""CLI subcommands of moderation and provenance: moderate, watermark, provenance."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``moderate``, ``watermark`` and ``provenance`` to the ``imagine-bot`` parser.

    Each feature keeps its parser in its own module (``moderation/moderate_cli.py``,
    ``moderation/watermark_cli.py``) and is registered here.
    """
    from moderation import moderate_cli, watermark_cli

    moderate_cli.register(sub)
    watermark_cli.register(sub)
