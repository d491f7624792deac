"""``imagine-bot doctor`` and the start-up ``preflight``: say what stops the bot, and how to fix it.

Why this exists: the people running the bot are server admins, not Python developers. A traceback
from deep inside torch or discord.py tells them nothing; "the token file is empty: put the bot
token from the Developer Portal in secrets/discord_token.txt" does. Every check returns a status
(ok / warn / fail), a plain message and the fix. ``fail`` means the bot cannot run.

The checks live next to what they check: ``generation/checks.py`` (torch, model, torch.compile,
metrics), ``core/store_checks.py`` (database, data folder, disk) and
``moderation/checks.py`` (watermark, NudeNet). This module adds the Python and Discord token
checks and assembles the report.

``preflight(settings)`` is the fast subset that ``imagine-bot run`` calls before connecting
(token, data directory, disk, model): it raises one ``UserInputError`` listing every blocking
problem, so the CLI prints it and exits non-zero without a traceback.

This module imports no discord code: it must work when the bot itself cannot.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from dataclasses import asdict

from core.checks import Check
from core.config import Settings, load_settings
from core.errors import UserInputError
from core.store_checks import check_data_dir, check_database, check_disk
from generation.checks import (
    check_compile,
    check_metrics,
    check_model,
    check_torch,
)
from moderation.checks import check_nudenet, check_watermark

MIN_PYTHON = (3, 10)
PORTAL_FIX = (
    "copy the token from https://discord.com/developers/applications -> your application -> "
    "Bot -> Reset Token into DISCORD_TOKEN or the token file (IMAGINE_DISCORD__TOKEN_FILE; "
    "with compose: secrets/discord_token.txt)"
)


# --- this bot's own checks: Python, the Discord token ----------------------------------------


def check_python(version: tuple[int, ...] = tuple(sys.version_info[:3])) -> Check:
    shown = ".".join(str(v) for v in version)
    if tuple(version[:2]) < MIN_PYTHON:
        return Check(
            "python",
            "fail",
            f"Python {shown} is too old; imagine-bot needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer",
            "install Python 3.11 (or use the Docker image) and reinstall imagine-bot in it",
        )
    return Check("python", "ok", f"Python {shown}")


def check_token(settings: Settings) -> Check:
    """Is a token configured and shaped like a bot token? The token itself is never shown."""
    try:
        token = settings.discord_token()
    except UserInputError as exc:
        return Check(
            "token",
            "fail",
            str(exc),
            "make the token file readable by the bot (in Docker: the discord_token secret)",
        )
    if not token:
        return Check(
            "token",
            "fail",
            "no Discord bot token is set",
            PORTAL_FIX,
        )
    problem, bot_id = token_problem(token)
    if problem:
        return Check("token", "fail", f"the Discord token {problem}", PORTAL_FIX)
    return Check("token", "ok", f"a bot token is set (for bot user id {bot_id}; not shown)")


_TOKEN_PART = re.compile(r"[A-Za-z0-9_-]+")


def token_problem(token: str) -> tuple[str | None, str | None]:
    """``(problem, bot user id)``: what is wrong with the token's shape, without showing it.

    Bot tokens are three base64url parts joined by dots; the first encodes the bot's user id.
    The usual mistakes are pasting the client secret, the public key or the application id,
    adding a ``Bot `` prefix, or keeping the quotes.
    """
    if token[:1] in "\"'" or token[-1:] in "\"'":
        return "is wrapped in quotes; remove them", None
    if token.lower().startswith(("bot ", "bearer ")):
        return "starts with 'Bot '; give the token alone, without the prefix", None
    if token.isdigit():
        return "is all digits: that is the application or user id, not the token", None
    if re.fullmatch(r"[0-9a-f]{64}", token):
        return "looks like the application's public key, not the bot token", None
    parts = token.split(".")
    if len(parts) != 3 or not all(_TOKEN_PART.fullmatch(p) for p in parts):
        hint = " (it looks like the OAuth2 client secret)" if len(token) == 32 else ""
        return f"is not shaped like a bot token (three parts separated by dots){hint}", None
    try:
        bot_id = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        bot_id = ""
    if not bot_id.isdigit():
        return "is not a bot token: its first part does not encode a user id", None
    return None, bot_id


# --- running them ---------------------------------------------------------------------------


def run_checks(settings: Settings, *, online: bool = True, quick: bool = False) -> list[Check]:
    """All doctor checks in the order an admin would fix them."""
    checks = [
        check_python(),
        check_token(settings),
        check_data_dir(settings),
        check_disk(settings),
        check_database(settings),
        check_torch(settings),
        check_model(settings, online=online),
        check_metrics(settings),
        check_compile(settings),
    ]
    checks = [c for c in checks if c is not None]
    if not quick:
        checks += [
            check_watermark(settings.keys_dir),
            check_nudenet(settings.moderation.nsfw_model),
        ]
    return checks


def preflight(settings: Settings) -> None:
    """Start-up checks for ``imagine-bot run``: raise one clear error listing what blocks it.

    Creates the data directory (the bot would anyway) and asks the hub only when the model is
    not cached. Slow checks (loading ONNX models, integrity scans) are left to ``doctor``.
    """
    checks = [
        check_token(settings),
        check_data_dir(settings, create=True),
        check_disk(settings),
        check_model(settings, strict=True),
        check_compile(settings),
    ]
    failures = [c for c in checks if c is not None and c.status == "fail"]
    if failures:
        lines = [f"- {c.message}\n  fix: {c.fix}" for c in failures]
        raise UserInputError(
            "cannot start:\n" + "\n".join(lines) + "\n(run `imagine-bot doctor` for a full check)"
        )


def format_report(checks: list[Check]) -> str:
    label = {"ok": " ok ", "warn": "warn", "fail": "FAIL"}
    width = max(len(c.name) for c in checks)
    out = []
    for c in checks:
        out.append(f"[{label[c.status]}] {c.name:<{width}}  {c.message}")
        if c.fix and c.status != "ok":
            out.append(f"       {'':<{width}}  fix: {c.fix}")
    fails = sum(c.status == "fail" for c in checks)
    warns = sum(c.status == "warn" for c in checks)
    out.append("")
    if fails:
        out.append(f"{fails} problem(s) stop the bot from running; fix them and run doctor again.")
    elif warns:
        out.append(f"The bot can run; {warns} warning(s) above are worth a look.")
    else:
        out.append("All good: the bot can run.")
    return "\n".join(out)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this machine's set-up and explain each problem",
        description="Check Python, torch/GPU, the model, the database, the data folder, the "
        "token and the moderation models; exit 1 when something stops the bot from running.",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--offline", action="store_true", help="do not ask the Hugging Face hub")
    p.add_argument(
        "--quick", action="store_true", help="skip loading the watermark and NSFW models"
    )
    p.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    checks = run_checks(settings, online=not args.offline, quick=args.quick)
    ok = not any(c.status == "fail" for c in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(format_report(checks))
    return 0 if ok else 1
