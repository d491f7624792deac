"""Discord's secrets in logs: anything shaped like a bot token or an interaction webhook token is
masked by every imagine-bot log handler, not only the configured token.

The patterns are Discord's, so they live in ``bot``; ``core/logging_setup.py`` applies them
(``add_secret_shape``). ``bot/__init__.py`` imports this module, so every ``imagine-bot``
process (the bot, the remote GPU worker, the CLIs) masks them.
"""

from __future__ import annotations

import re

from core.logging_setup import REDACTED, add_secret_shape

# Discord bot tokens: base64(user id) . timestamp . HMAC, all base64url.
DISCORD_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}")
# Interaction / webhook tokens live in URLs: /webhooks/<application id>/<token>.
WEBHOOK_TOKEN_RE = re.compile(r"(/webhooks/\d+/)[A-Za-z0-9_.-]{20,}")

add_secret_shape(DISCORD_TOKEN_RE)
add_secret_shape(WEBHOOK_TOKEN_RE, rf"\g<1>{REDACTED}")
