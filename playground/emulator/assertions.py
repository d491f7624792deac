"""`Assertions`: the half of the emulator a test reads (waiting and queries).

Waiting is woken by every request and gateway event instead of sleeping, so tests are as fast as
the bot and a timeout says what was last asked of Discord.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from .core import EmulatorCore
from .state import Channel, Interaction, Message, RecordedRequest, User, Violation

T = TypeVar("T")


class Assertions(EmulatorCore):
    # -- waiting ----------------------------------------------------------------------------
    async def wait_for(self, predicate: Callable[[], T], timeout: float = 30.0,
                       what: str | None = None) -> T:
        """Wait until predicate() is truthy (re-checked on every request/event); return it.

        Raises TimeoutError naming `what` and the last requests, so a failing test says why.
        """
        assert self._changed is not None, "start() the emulator first"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._changed:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - loop.time()
                if remaining <= 0:
                    recent = "\n".join(f"  {r.method} {r.path} -> {r.status}"
                                       for r in self.requests[-10:])
                    raise TimeoutError(f"emulator: {what or 'condition'} not met within "
                                       f"{timeout} s; last requests:\n{recent}")
                try:
                    # woken by every request/event; the short cap also catches conditions on
                    # the bot's own state, which changes without telling the emulator
                    await asyncio.wait_for(self._changed.wait(), min(remaining, self.poll_s))
                except TimeoutError:
                    pass

    async def wait_until_connected(self, timeout: float = 30.0, *, identifies: int = 1) -> None:
        """Until a bot session is live and `identifies` IDENTIFYs happened in all (pass 2 to
        wait for a restarted bot); READY and GUILD_CREATE are sent before this returns."""
        await self.wait_for(
            lambda: self.gateway.live_sessions and self.gateway.identify_count >= identifies,
            timeout, f"{identifies} gateway IDENTIFY(s) and a live session")

    async def wait_for_response(self, interaction_id: int, timeout: float = 30.0) -> Interaction:
        """Until the interaction got its initial callback (defer, message, modal...)."""
        inter = self.interactions[interaction_id]
        return await self.wait_for(lambda: inter if inter.acknowledged else None, timeout,
                                   f"initial response to interaction {interaction_id}")

    async def wait_for_message(self, predicate: Callable[[Message], bool],
                               timeout: float = 30.0) -> Message:
        """Until some live message (created or edited) satisfies predicate; the newest wins."""
        def find() -> Message | None:
            for msg in sorted(self.store.values(), key=lambda m: -m.id):
                if not msg.deleted and predicate(msg):
                    return msg
            return None
        return await self.wait_for(find, timeout, "a matching message")

    # -- queries ----------------------------------------------------------------------------
    def dm_channel(self, user: User) -> Channel:
        """The bot's DM channel with `user` (messages_in(emu.dm_channel(u)) reads the DMs)."""
        return self.world.dm_channel(user)

    def interaction(self, interaction_id: int) -> Interaction:
        return self.interactions[interaction_id]

    def interaction_responses(self, interaction_id: int) -> list[RecordedRequest]:
        """Every request the bot made for this interaction (callback, follow-ups, edits)."""
        return [r for r in self.requests if r.interaction_id == interaction_id]

    def original_message(self, interaction_id: int) -> Message | None:
        mid = self.interactions[interaction_id].original_message_id
        return self.store.get(mid) if mid is not None else None

    def followups(self, interaction_id: int) -> list[Message]:
        inter = self.interactions[interaction_id]
        return [self.store[m] for m in inter.followup_ids
                if m != inter.original_message_id and not self.store[m].deleted]

    def requests_to(self, method: str, route: str) -> list[RecordedRequest]:
        """Requests by route template, e.g. requests_to("POST", "/channels/{channel_id}/messages")."""
        return [r for r in self.requests if r.method == method and r.route == route]

    def transcript(self, last: int = 50) -> str:
        """The last requests and their answers, one a line: paste it into a failing assert."""
        lines = []
        for r in self.requests[-last:]:
            body = r.json if r.json is not None else ""
            files = f" files={[f'{f.filename}:{len(f.data)}B' for f in r.files]}" if r.files else ""
            lines.append(f"{r.at - self.clock._wall_start:8.3f}s {r.method} {r.route} "
                         f"-> {r.status} {str(body)[:160]}{files}")
        return "\n".join(lines)

    @property
    def violations(self) -> list[Violation]:
        """Rules broken so far, including interactions still unanswered past the deadline."""
        now = self.clock.now()
        reported = {v.interaction_id for v in self._violations if v.rule == "late-callback"}
        late = [Violation("no-response", f"unanswered after {now - i.created_at:.1f} s",
                          i.created_at + self.response_deadline, i.id)
                for i in self.interactions.values()
                if not i.acknowledged and i.id not in reported
                and now - i.created_at > self.response_deadline]
        return self._violations + late
