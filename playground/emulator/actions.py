"""`UserActions`: the half of the emulator that plays Discord's users and moderators.

Each helper sends the bot what Discord would (INTERACTION_CREATE, MESSAGE_REACTION_ADD,
CHANNEL_DELETE...) and refuses, with `EmulatorUsageError`, what Discord's client could not send,
so a test bug is not mistaken for a bot bug.
"""

from __future__ import annotations

from typing import Any

from .commands import EmulatorUsageError, build_command_data
from .core import EmulatorCore
from .gateway import GUILD_MESSAGE_REACTIONS, GUILDS
from .state import Channel, Interaction, Message, User, iter_components, new_token

COMMAND, COMPONENT, MODAL_SUBMIT = 2, 3, 5


class UserActions(EmulatorCore):
    async def send_slash(self, name: str, options: dict[str, Any] | None = None, *,
                         user: User | None = None, channel: Channel | int | None = None,
                         locale: str = "en-US") -> int:
        """A user runs /name (use "group sub" for subcommands); returns the interaction id."""
        channel = self._channel(channel or self.world.general)
        resolved: dict[str, dict[str, Any]] = {}
        data = build_command_data(self, name, options or {}, channel.guild_id, resolved)
        if resolved:
            data["resolved"] = resolved
        return await self._interact(COMMAND, data, user, channel, locale=locale)

    async def click(self, message: Message | int, custom_id: str, *, user: User | None = None,
                    values: list[str] | None = None) -> int:
        """A user presses a button (or picks `values` in a select) on a message."""
        msg = self.store[message if isinstance(message, int) else message.id]
        if msg.deleted:
            raise EmulatorUsageError(f"message {msg.id} was deleted; nobody can click on it")
        comp = next((c for c in _leaves(msg.components) if c.get("custom_id") == custom_id), None)
        if comp is None:
            raise EmulatorUsageError(
                f"message {msg.id} has no component {custom_id!r}; it has {msg.custom_ids()}")
        if comp.get("disabled"):
            raise EmulatorUsageError(f"component {custom_id!r} is disabled")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": comp.get("type", 2)}
        if values is not None:
            data["values"] = values
        return await self._interact(COMPONENT, data, user, self._channel(msg.channel_id),
                                    message=msg)

    async def submit_modal(self, opened_by: int, values: dict[str, str], *,
                           user: User | None = None) -> int:
        """A user fills in the modal the bot opened in answer to interaction `opened_by`."""
        opener = self.interactions[opened_by]
        if opener.modal is None:
            raise EmulatorUsageError(f"interaction {opened_by} did not open a modal")
        modal = opener.modal
        known = {c["custom_id"] for c in _leaves(modal.get("components", [])) if "custom_id" in c}
        unknown_ids = set(values) - known
        if unknown_ids:
            raise EmulatorUsageError(f"modal has no inputs {sorted(unknown_ids)}; it has {sorted(known)}")

        def answer(comp: dict[str, Any]) -> dict[str, Any]:
            if comp.get("type") == 1:
                return {"type": 1, "components": [answer(c) for c in comp.get("components", [])]}
            if comp.get("type") == 18:
                return {"type": 18, "component": answer(comp["component"])}
            out = {"type": comp.get("type", 4), "custom_id": comp.get("custom_id")}
            out["value"] = values.get(comp.get("custom_id"), comp.get("value") or "")
            return out

        data = {"custom_id": modal["custom_id"],
                "components": [answer(c) for c in modal.get("components", [])]}
        message = self.store.get(opener.message_id) if opener.message_id else None
        return await self._interact(MODAL_SUBMIT, data, user or opener.user,
                                    self._channel(opener.channel_id), message=message)

    async def add_reaction(self, message: Message | int, emoji: str, user: User) -> None:
        """A user reacts; the bot hears MESSAGE_REACTION_ADD (if it asked for the intent)."""
        msg = self.store[message if isinstance(message, int) else message.id]
        self._require_live_channel(self._channel(msg.channel_id))
        msg.reactions.setdefault(emoji, set()).add(user.id)
        data: dict[str, Any] = {
            "user_id": str(user.id), "channel_id": str(msg.channel_id),
            "message_id": str(msg.id), "emoji": {"id": None, "name": emoji},
            "message_author_id": str(msg.author.id), "burst": False, "type": 0,
        }
        if msg.guild_id is not None:
            guild = self.world.guilds[msg.guild_id]
            data["guild_id"] = str(guild.id)
            data["member"] = self.world.member_payload(user, guild)
        self._require_bot()
        await self.gateway.dispatch("MESSAGE_REACTION_ADD", data, intent=GUILD_MESSAGE_REACTIONS)

    async def delete_channel(self, channel: Channel | int) -> None:
        """A moderator deletes the channel: the bot hears CHANNEL_DELETE (guilds intent);
        posting, following up or any channel route there answers 404 Unknown Channel (10003),
        and editing, fetching or deleting its messages through an interaction token answers
        404 Unknown Message (10008). Nobody can use a command or a button there any more."""
        channel = self._channel(channel)
        if channel.deleted:
            raise EmulatorUsageError(f"channel {channel.name!r} was already deleted")
        channel.deleted = True
        await self.gateway.dispatch("CHANNEL_DELETE", channel.payload(), intent=GUILDS)

    async def delete_message(self, message: Message | int) -> None:
        """A moderator deletes a message (the bot's reply, say): the bot hears MESSAGE_DELETE and
        editing it, through its channel or the interaction token, answers 404 10008."""
        msg = self.store[message if isinstance(message, int) else message.id]
        if msg.deleted:
            raise EmulatorUsageError(f"message {msg.id} was already deleted")
        await self._delete_message(msg)

    async def reconnect_gateway(self) -> None:
        """Discord's op 7: the client reconnects and RESUMEs."""
        await self.gateway.reconnect_all()

    async def invalidate_sessions(self) -> None:
        """Discord's op 9 (d=false): the client must IDENTIFY afresh (a new READY)."""
        await self.gateway.invalidate_all()

    async def drop_gateway(self) -> None:
        """Cut the socket like a network blip; the client reconnects and RESUMEs."""
        await self.gateway.drop_all()

    # -- internals --------------------------------------------------------------------------
    def _require_live_channel(self, channel: Channel) -> None:
        if channel.deleted:
            raise EmulatorUsageError(
                f"channel {channel.name!r} was deleted; nobody can act in it any more")

    def _require_bot(self) -> None:
        if not self.gateway.live_sessions:
            raise EmulatorUsageError("no bot is connected to the emulator's gateway")

    async def _interact(self, kind: int, data: dict[str, Any], user: User | None,
                        channel: Channel, *, message: Message | None = None,
                        locale: str = "en-US") -> int:
        self._require_bot()
        self._require_live_channel(channel)
        if channel.guild_id is None:
            user = user or channel.recipient
            if user is not channel.recipient:
                raise EmulatorUsageError("only the DM's recipient can use the bot's DM with them")
        user = user or self.world.alice
        iid = self.ids.next()
        inter = Interaction(id=iid, token=new_token(iid), type=kind,
                            created_at=self.clock.now(), user=user, guild_id=channel.guild_id,
                            channel_id=channel.id, data=data,
                            message_id=message.id if message else None)
        inter.payload = self._interaction_payload(inter, channel, message, locale)
        self.interactions[iid] = inter
        self.tokens[inter.token] = inter
        await self.gateway.dispatch("INTERACTION_CREATE", inter.payload)
        return iid

    def _interaction_payload(self, inter: Interaction, channel: Channel,
                             message: Message | None, locale: str) -> dict[str, Any]:
        """INTERACTION_CREATE's data as Discord shapes it for a guild channel or the bot's DM."""
        world, user = self.world, inter.user
        payload: dict[str, Any] = {
            "id": str(inter.id),
            "application_id": str(world.application_id),
            "type": inter.type,
            "data": inter.data,
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "token": inter.token,
            "version": 1,
            "app_permissions": str(world.channel_permissions(world.bot, channel)),
            "locale": locale,
            "entitlements": [],
        }
        if channel.guild_id is None:  # a button in the bot's DM: a user, no member or guild
            payload |= {"user": user.payload(), "context": 1,
                        "authorizing_integration_owners": {"0": "0"},
                        "attachment_size_limit": self.default_upload_limit}
        else:
            guild = world.guilds[channel.guild_id]
            payload |= {
                "guild_id": str(guild.id),
                "guild": {"id": str(guild.id), "locale": guild.locale, "features": []},
                "member": world.member_payload(
                    user, guild, permissions=world.channel_permissions(user, channel)),
                "guild_locale": guild.locale,
                "authorizing_integration_owners": {"0": str(guild.id)},
                "context": 0,
                "attachment_size_limit": guild.attachment_size_limit,
            }
        if message is not None:
            payload["message"] = message.payload(self.clock)
        return payload


def _leaves(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The components a user can act on or fill in, without the rows and labels around them."""
    return [c for c in iter_components(components) if c.get("type") not in (1, 18)]
