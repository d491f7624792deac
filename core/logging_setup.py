"""Structured logs for an admin reading them at 3 a.m.: one line per event, job ids, no secrets.

Why it looks like this:
- Job ids travel in a context variable (``job_context(job_id)``), so every line logged while the
  worker runs a job carries its id, even lines from libraries that never heard of jobs.
  ``extra={"job_id": ...}`` on a single call works too.
- A redaction filter sits on our handler *and* the formatters scrub their final text, so neither a
  careless ``log.info(token)`` nor a traceback that quotes a token reaches the log. Anything shaped
  like a secret is masked, not only the configured one: Authorization headers here, Discord bot
  and interaction webhook tokens added by ``bot/redaction.py`` (``add_secret_shape``).
- Prompts are personal: they are logged only as ``extra={"prompt": text}``, and appear only
  when ``ops.log_prompts`` is on.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from core.config import Settings

REDACTED = "[REDACTED]"
HANDLER_NAME = "imagine-bot"

# "Authorization: Bot xxx" style headers, whatever the token looks like.
AUTH_HEADER_RE = re.compile(r"((?:Bot|Bearer)\s+)[A-Za-z0-9_.-]{20,}")
# Shapes of secrets other packages know about (the bot adds Discord's tokens, see
# bot/redaction.py): (pattern, replacement), masked by every Redactor before the header rule.
_SECRET_SHAPES: list[tuple[re.Pattern[str], str]] = []


def add_secret_shape(pattern: re.Pattern[str], replacement: str = REDACTED) -> None:
    """Mask anything matching ``pattern`` in every log line from now on (idempotent)."""
    if (pattern, replacement) not in _SECRET_SHAPES:
        _SECRET_SHAPES.append((pattern, replacement))

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("imagine_job_id", default=None)

# Fields of a LogRecord that are not user "extra" (so the JSON formatter can find the extras).
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
_CONTEXT_FIELDS = ("job_id", "guild_id", "user_id")


@contextlib.contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Tag every log line inside this block (and tasks started from it) with ``job_id``."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


def bind_job_id(job_id: str | None) -> None:
    """Tag the rest of the current asyncio task with ``job_id``.

    Safe without a reset because every task runs in its own copy of the context; use
    ``job_context`` anywhere else.
    """
    _job_id.set(job_id)


class Redactor:
    """Masks known secrets and anything shaped like a secret (``add_secret_shape``) in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first so a secret containing another is masked whole; very short strings
        # would mask ordinary words, so they are not treated as secrets.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _SECRET_SHAPES:
            text = pattern.sub(replacement, text)
        return AUTH_HEADER_RE.sub(rf"\g<1>{REDACTED}", text)


class ContextFilter(logging.Filter):
    """Adds ``job_id`` (from ``job_context``) and hides prompt text unless the admin allows it."""

    def __init__(self, *, log_prompts: bool = False) -> None:
        super().__init__()
        self.log_prompts = log_prompts

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = _job_id.get()
        prompt = getattr(record, "prompt", None)
        if prompt is not None and not self.log_prompts:
            record.prompt = _hidden(str(prompt))
        return True


class RedactFilter(logging.Filter):
    """Scrubs the formatted message and string extras before any handler sees them."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must not lose the line
            message = f"{record.msg!r} {record.args!r}"
        record.msg = self.redactor(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, self.redactor(value))
        return True


class TextFormatter(logging.Formatter):
    """Human-readable lines: ``time level logger [job] message key=value``."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(job)s %(message)s%(extras)s")
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        record.job = f" [job {job_id}]" if job_id else ""
        extras = _extras(record, skip=("job_id",))
        record.extras = "".join(f" {k}={v}" for k, v in extras.items())
        return self.redactor(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for Loki/ELK/``jq``; extras become top-level fields."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return self.redactor(json.dumps(entry, default=str, ensure_ascii=False))


def setup_logging(
    settings: Settings,
    *,
    stream: IO[str] | None = None,
    extra_secrets: Iterable[str] = (),
) -> logging.Handler:
    """Install the one imagine-bot handler on the root logger (replacing an earlier one).

    Called once at start-up by ``imagine-bot run``; safe to call again (tests, reloads).
    Returns the handler so callers can remove it.
    """
    ops = settings.ops
    level = logging.getLevelName(ops.log_level.upper())
    if not isinstance(level, int):
        from core.errors import UserInputError

        raise UserInputError(
            f"ops.log_level {ops.log_level!r} is not a log level; "
            "use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    redactor = Redactor([*_configured_secrets(settings), *extra_secrets])
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.addFilter(ContextFilter(log_prompts=ops.log_prompts))
    handler.addFilter(RedactFilter(redactor))
    handler.setFormatter(JsonFormatter(redactor) if ops.log_json else TextFormatter(redactor))

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # discord.py logs every HTTP route at DEBUG (URLs carry interaction tokens); keep it at INFO
    # unless the admin explicitly asked for DEBUG everywhere.
    logging.getLogger("discord").setLevel(max(level, logging.INFO))
    return handler


def _configured_secrets(settings: Settings) -> list[str]:
    try:
        token = settings.discord_token()
    except Exception:  # an unreadable token file is reported by preflight, not here
        token = None
    return [token] if token else []


def _hidden(prompt: str) -> str:
    return f"<prompt hidden, {len(prompt)} chars; set ops.log_prompts to show>"


def _extras(record: logging.LogRecord, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _CONTEXT_FIELDS:
        value = getattr(record, key, None)
        if value is not None and key not in skip:
            out[key] = value
    for key, value in record.__dict__.items():
        if key in _STANDARD_ATTRS or key in out or key in skip or key in _CONTEXT_FIELDS:
            continue
        if key in ("job", "extras"):  # set by TextFormatter
            continue
        out[key] = value
    return out
