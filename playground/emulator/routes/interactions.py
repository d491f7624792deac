"""Routes an interaction's token reaches: the initial callback, follow-ups and the webhook's
messages, with Discord's 3-second and 15-minute rules."""

from __future__ import annotations

from typing import Any

from ..rules import (
    ALREADY_ACKNOWLEDGED,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    ApiError,
    check_modal,
    unknown,
)
from ..state import LOADING, Interaction, Message, RecordedRequest
from .shared import RouteGroup

UNSUPPORTED = "Interaction type does not support this response type"


class InteractionRoutes(RouteGroup):
    async def callback(self, record: RecordedRequest, interaction_id: str, token: str) -> Any:
        inter = self._callable(record, interaction_id, token)
        payload = record.json or {}
        kind = int(payload.get("type", 0))
        msg = await self._respond(inter, kind, payload.get("data") or {}, record)
        inter.initial_response = kind
        inter.responded_at = self.emu.clock.now()
        if record.query.get("with_response") not in ("1", "true", "True"):
            return None
        resource: dict[str, Any] = {"type": kind}
        if msg is not None and kind in (4, 5, 7):
            resource["message"] = msg.payload(self.emu.clock)
        return {
            "interaction": {
                "id": str(inter.id),
                "type": inter.type,
                "response_message_id": str(msg.id) if msg else None,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(msg and msg.ephemeral),
            },
            "resource": resource,
        }

    def _callable(self, record: RecordedRequest, interaction_id: str, token: str) -> Interaction:
        """The interaction, if it may still get its one initial callback (3 s, once)."""
        inter = self.emu.interactions.get(int(interaction_id)) if interaction_id.isdigit() else None
        if inter is None or inter.token != token:
            raise ApiError(404, UNKNOWN_INTERACTION, "Unknown interaction")
        record.interaction_id = inter.id
        if inter.acknowledged:
            raise ApiError(400, ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged.")
        age = self.emu.clock.now() - inter.created_at
        if age > self.emu.response_deadline:
            self.emu._violate("late-callback", f"first response after {age:.2f} s", inter.id)
            raise ApiError(404, UNKNOWN_INTERACTION, "Unknown interaction")
        return inter

    async def _respond(self, inter: Interaction, kind: int, data: dict[str, Any],
                       record: RecordedRequest) -> Message | None:
        """Carry out a callback of type `kind`; the message it made or changed, if any."""
        msg: Message | None = None
        if kind == 4:
            msg = await self.messages.create(inter.channel_id, inter.guild_id, data,
                                             record.files, interaction=inter)
            inter.original_message_id = msg.id
        elif kind == 5:
            msg = await self.messages.create(inter.channel_id, inter.guild_id,
                                             {"flags": data.get("flags", 0)}, [],
                                             interaction=inter, extra_flags=LOADING)
            inter.original_message_id = msg.id
        elif kind in (6, 7):
            if inter.message_id is None:
                raise ApiError(400, 40043, UNSUPPORTED)
            msg = self.emu.store[inter.message_id]
            if kind == 7:
                await self.messages.edit(msg, data, record.files)
            inter.original_message_id = msg.id
        elif kind == 9:
            if inter.type == 5:
                raise ApiError(400, 40043, UNSUPPORTED)
            check_modal(data)
            inter.modal = data
        elif kind not in (1, 8, 10, 12):
            raise ApiError(400, 50035, "Invalid Form Body",
                           {"type": {"_errors": [{"code": "BASE_TYPE_CHOICES",
                                                  "message": f"Value must be one of (1, 4, 5, 6, 7, 8, 9, 10, 12). Got {kind}"}]}})
        return msg

    async def followup(self, record: RecordedRequest, app_id: str, token: str) -> Any:
        inter = self.messages.interaction_by_token(app_id, token, record)
        self.messages.channel(str(inter.channel_id))  # a deleted channel takes its messages
        payload = record.json or {}
        original = self.emu.store.get(inter.original_message_id or 0)
        if (inter.initial_response == 5 and original is not None and original.loading
                and not original.deleted):
            # Discord fills the "thinking..." message with the first follow-up after a defer.
            msg = await self.messages.edit(original, payload, record.files)
        else:
            msg = await self.messages.create(inter.channel_id, inter.guild_id, payload,
                                             record.files, interaction=inter)
        inter.followup_ids.append(msg.id)
        wait = record.query.get("wait", "false").lower() in ("1", "true")
        return msg.payload(self.emu.clock) if wait else None

    def _webhook_message(self, inter: Interaction, message_id: str) -> Message:
        """`@original` or one of this interaction's own messages; any other is unknown to it."""
        if message_id == "@original":
            if inter.original_message_id is None:
                raise unknown("Message", UNKNOWN_MESSAGE)
            return self.messages.message(str(inter.original_message_id))
        msg = self.messages.message(message_id)
        if msg.interaction_id != inter.id and msg.id != inter.original_message_id:
            raise unknown("Message", UNKNOWN_MESSAGE)
        return msg

    async def get_webhook_message(self, record: RecordedRequest, app_id: str, token: str,
                                  message_id: str) -> Any:
        inter = self.messages.interaction_by_token(app_id, token, record)
        return self._webhook_message(inter, message_id).payload(self.emu.clock)

    async def edit_webhook_message(self, record: RecordedRequest, app_id: str, token: str,
                                   message_id: str) -> Any:
        inter = self.messages.interaction_by_token(app_id, token, record)
        msg = self._webhook_message(inter, message_id)
        await self.messages.edit(msg, record.json or {}, record.files)
        return msg.payload(self.emu.clock)

    async def delete_webhook_message(self, record: RecordedRequest, app_id: str, token: str,
                                     message_id: str) -> Any:
        inter = self.messages.interaction_by_token(app_id, token, record)
        await self.emu._delete_message(self._webhook_message(inter, message_id))
        return None
