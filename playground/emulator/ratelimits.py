"""Opt-in per-route rate limits with Discord's headers and 429 answers.

discord.py reads `X-RateLimit-*` headers and waits by itself, so a limited route mostly shows up
as spacing in `emu.requests`; a 429 (recorded as a violation) means the client ignored them.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass

from .rules import ApiError
from .state import Clock

# Which path parameter makes a separate bucket, as Discord's "major parameters" do.
MAJOR_PARAMS = ("channel_id", "guild_id", "token", "app_id")


@dataclass(frozen=True)
class Limit:
    limit: int
    per_seconds: float


class RateLimiter:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.limits: dict[tuple[str, str], Limit] = {}
        self._hits: dict[tuple[str, str, str], deque[float]] = {}

    def set(self, method: str, route: str, limit: int, per_seconds: float) -> None:
        self.limits[(method, route)] = Limit(limit, per_seconds)

    def check(self, method: str, route: str, params: dict[str, str]) -> dict[str, str]:
        """Count one request; return the headers to send, or raise a 429 ApiError."""
        rule = self.limits.get((method, route))
        if rule is None:
            return {}
        major = next((params[p] for p in MAJOR_PARAMS if p in params), "")
        hits = self._hits.setdefault((method, route, major), deque())
        now = self.clock.now()
        while hits and hits[0] <= now - rule.per_seconds:
            hits.popleft()
        bucket = hashlib.sha1(f"{method} {route}".encode()).hexdigest()[:16]
        reset_after = (hits[0] + rule.per_seconds - now) if hits else rule.per_seconds
        headers = {
            "X-RateLimit-Limit": str(rule.limit),
            "X-RateLimit-Bucket": bucket,
            "X-RateLimit-Reset-After": f"{max(reset_after, 0.001):.3f}",
            "X-RateLimit-Reset": f"{now + reset_after:.3f}",
        }
        if len(hits) >= rule.limit:
            err = ApiError(429, 0, "You are being rate limited.")
            err.extra = {"retry_after": round(max(reset_after, 0.001), 3), "global": False}
            err.headers = headers | {"X-RateLimit-Remaining": "0",
                                     "Retry-After": f"{max(reset_after, 0.001):.3f}",
                                     "X-RateLimit-Scope": "user"}
            raise err
        hits.append(now)
        headers["X-RateLimit-Remaining"] = str(rule.limit - len(hits))
        return headers
