"""Admission: who may add work right now. Per-user caps reserved atomically, and a rate limit.

Why reservations: between "the user has fewer than N jobs" and "the job is in the queue" the bot
awaits (the store, a download, the prompt gate). Twenty concurrent submits by one user used to
all pass a check made before those awaits. Here the check and the increment are one synchronous
step, so whichever order the awaits finish in, at most ``cap`` of them hold a slot; a slot turns
into a queued job (``Worker.submit``) or is given back (refusal, failure).

Why a rate limit on buttons and reactions: each press or emoji is cheap to send and costly to
serve (a parent image decoded, a prompt gated, a message posted); without one, toggling a
reaction floods the channel and the queue.

Pure bookkeeping, no I/O and no event loop: the worker and the bot share one ``Admission``.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from core.errors import UserInputError

# A reservation nobody converted or released within this long is dropped (a crashed handler
# must not hold a user's slot forever).
RESERVATION_TTL_S = 600.0


@dataclass(eq=False)
class Reservation:
    """One slot of a user's cap, held from the check until the job is queued or refused."""

    user_id: int
    admission: Admission | None = field(default=None, repr=False)
    at: float = 0.0

    @property
    def held(self) -> bool:
        return self.admission is not None

    def release(self) -> None:
        """Give the slot back (idempotent); called once the job is queued or refused."""
        admission, self.admission = self.admission, None
        if admission is not None:
            admission._release(self)


class Admission:
    """Per-user slot reservations on top of what the queue already holds.

    ``counts(user_id)`` returns ``(queued, active)`` as the queue sees them (active = queued +
    running); the reservations are added on top.
    """

    def __init__(
        self,
        counts: Callable[[int], tuple[int, int]],
        *,
        max_queued_per_user: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counts = counts
        self.max_queued_per_user = max_queued_per_user
        self._clock = clock
        self._held: dict[int, list[Reservation]] = {}

    def reserved(self, user_id: int) -> int:
        return len(self._held.get(user_id, ()))

    def reserve(self, user_id: int, cap: int | None = None, *, check: bool = True) -> Reservation:
        """Check the instance cap (queued) and the server's cap (queued + running), then hold a
        slot, in one step. Raises ``UserInputError`` naming the limit. ``check=False`` holds a
        slot without checking (work accepted before a restart is never refused for the cap)."""
        self._expire(user_id)
        if check:
            queued, active = self._counts(user_id)
            held = self.reserved(user_id)
            if queued + held >= self.max_queued_per_user:
                raise UserInputError(
                    f"you already have {queued + held} jobs queued (the limit is "
                    f"{self.max_queued_per_user}); wait for one to finish or cancel one"
                )
            if cap is not None and active + held >= cap:
                raise UserInputError(
                    f"you already have {cap} jobs queued or running (this server's limit for "
                    "you); wait for one to finish or /cancel one"
                )
        reservation = Reservation(user_id, self, self._clock())
        self._held.setdefault(user_id, []).append(reservation)
        return reservation

    def _release(self, reservation: Reservation) -> None:
        held = self._held.get(reservation.user_id)
        if held is None:
            return
        try:
            held.remove(reservation)
        except ValueError:
            return
        if not held:
            del self._held[reservation.user_id]

    def _expire(self, user_id: int) -> None:
        held = self._held.get(user_id)
        if not held:
            return
        cutoff = self._clock() - RESERVATION_TTL_S
        for old in [r for r in held if r.at < cutoff]:
            old.release()


class RateLimiter:
    """At most ``limit`` events per ``per_s`` seconds per key (a sliding window).

    Memory stays bounded: at most ``max_keys`` keys are remembered (least recently used go
    first), each with at most ``limit`` timestamps.
    """

    def __init__(
        self,
        limit: int,
        per_s: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or per_s <= 0:
            raise ValueError("a rate limit needs limit >= 1 and per_s > 0")
        self.limit, self.per_s, self.max_keys = limit, per_s, max_keys
        self._clock = clock
        self._hits: OrderedDict[object, deque[float]] = OrderedDict()

    def retry_after(self, key: object) -> float:
        """Record an event; 0 when allowed, else the seconds until the next one would be."""
        now = self._clock()
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque(maxlen=self.limit)
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.per_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(0.001, hits[0] + self.per_s - now)
        hits.append(now)
        return 0.0

    def check(self, key: object, what: str = "that") -> None:
        """Raise ``UserInputError`` (a clear refusal) when ``key`` is over its limit."""
        wait = self.retry_after(key)
        if wait:
            raise UserInputError(
                f"you are doing {what} too fast (at most {self.limit} every "
                f"{self.per_s:g} s); try again in {wait:.0f} s"
                if wait >= 1
                else f"you are doing {what} too fast; try again in a second"
            )
