"""The ``imagine-bot`` command: one entry point, subcommands owned by the package that does the work.

Imports of heavy or Discord-only modules stay inside the handlers so that ``imagine-bot moderate``
works without loading torch and ``imagine-bot generate`` works without discord.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core.errors import UserInputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagine-bot",
        description="Self-hosted /imagine Discord bot and its offline tools.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML config file (default: $IMAGINE_CONFIG)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from bot import doctor, runner
    from generation import cli as generation_cli
    from generation.remote import cli as remote_cli
    from moderation import cli as moderation_cli
    from playground import cli as playground_cli

    runner.register(sub)
    generation_cli.register(sub)
    moderation_cli.register(sub)
    doctor.register(sub)
    remote_cli.register(sub)
    playground_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserInputError as exc:
        print(f"imagine-bot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imagine-bot: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
