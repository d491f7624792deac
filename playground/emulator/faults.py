"""Injected failures: Discord answering 5xx, or the connection dropping, for chosen requests.

Used to test that the bot retries what a real Discord fails now and then. Injected answers are
recorded like any request but are not rule violations (the bot did nothing wrong).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .state import RecordedRequest


@dataclass
class Fault:
    method: str
    route: str  # a route template, e.g. "/webhooks/{app_id}/{token}/messages/{message_id}"
    times: int  # how many matching requests fail; then the fault is spent
    status: int = 503
    disconnect: bool = False  # drop the connection instead of answering
    when: Callable[[RecordedRequest], bool] | None = None  # only requests this accepts
    hits: int = 0

    def take(self, method: str, route: str, record: RecordedRequest) -> bool:
        if self.hits >= self.times or method != self.method or route != self.route:
            return False
        if self.when is not None and not self.when(record):
            return False
        self.hits += 1
        return True
