"""CLI subcommands of the generation engine: generate, upscale, vary (no Discord needed)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``generate``, ``upscale`` and ``vary`` to the ``imagine-bot`` parser."""
