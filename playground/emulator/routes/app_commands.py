"""Application-command routes: the bot syncs its commands here, and `send_slash` reads their
option types back, so a test sends what Discord's client would."""

from __future__ import annotations

from typing import Any

from ..rules import ApiError
from ..state import RecordedRequest
from .shared import RouteGroup


class CommandRoutes(RouteGroup):
    def _command_list(self, app_id: str, guild_id: str | None) -> list[dict[str, Any]]:
        if app_id != str(self.world.application_id):
            raise ApiError(403, 50001, "Missing Access")
        if guild_id is None:
            return self.emu.global_commands
        if int(guild_id) not in self.world.guilds:
            raise ApiError(403, 50001, "Missing Access")
        return self.emu.guild_commands.setdefault(int(guild_id), [])

    def _stored_command(self, data: dict[str, Any], guild_id: str | None,
                        previous: list[dict[str, Any]]) -> dict[str, Any]:
        """The command as Discord keeps it: a re-synced name and type keeps its id."""
        same = next((c for c in previous if c["name"] == data["name"]
                     and c.get("type", 1) == data.get("type", 1)), None)
        cmd = dict(data)
        cmd.setdefault("type", 1)
        cmd.setdefault("description", "")
        cmd.setdefault("options", [])
        cmd["id"] = same["id"] if same else str(self.emu.ids.next())
        cmd["application_id"] = str(self.world.application_id)
        cmd["version"] = str(self.emu.ids.next())
        if guild_id is not None:
            cmd["guild_id"] = guild_id
        return cmd

    async def get_commands(self, record: RecordedRequest, app_id: str,
                           guild_id: str | None = None) -> Any:
        return self._command_list(app_id, guild_id)

    async def put_commands(self, record: RecordedRequest, app_id: str,
                           guild_id: str | None = None) -> Any:
        previous = list(self._command_list(app_id, guild_id))
        body = record.json or []
        names = [(c.get("name"), c.get("type", 1)) for c in body]
        if len(names) != len(set(names)):
            raise ApiError(400, 50035, "Invalid Form Body",
                           {"_errors": [{"code": "APPLICATION_COMMANDS_DUPLICATE_NAME",
                                         "message": "Application command names must be unique"}]})
        stored = [self._stored_command(c, guild_id, previous) for c in body]
        target = self._command_list(app_id, guild_id)
        target[:] = stored
        return stored

    async def post_command(self, record: RecordedRequest, app_id: str,
                           guild_id: str | None = None) -> Any:
        target = self._command_list(app_id, guild_id)
        cmd = self._stored_command(record.json or {}, guild_id, target)
        target[:] = [c for c in target if c["id"] != cmd["id"]] + [cmd]
        return cmd
