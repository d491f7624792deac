"""Turn a test's `send_slash("policy set", {"field": ...})` into Discord's command data.

Option types come from the commands the bot synced (so a test sends exactly what Discord's
client would); for a command that was never synced they are inferred from the Python values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .state import Attachment, Channel, Role, Upload, User

if TYPE_CHECKING:
    from .core import EmulatorCore

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = (
    3, 4, 5, 6, 7, 8, 9, 10, 11)


class EmulatorUsageError(AssertionError):
    """The test asked for something Discord's client could not send (a test bug)."""


def _infer_type(value: Any) -> int:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, User):
        return USER
    if isinstance(value, Channel):
        return CHANNEL
    if isinstance(value, Role):
        return ROLE
    if isinstance(value, (Upload, Attachment)):
        return ATTACHMENT
    return STRING


def build_command_data(emu: EmulatorCore, name: str, options: dict[str, Any], guild_id: int | None,
                       resolved: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`name` may be "cmd", "group sub" or "group subgroup sub"."""
    top, *path = name.split()
    registered = emu.find_command(top, guild_id)
    schema = registered.get("options", []) if registered else None

    def nest(parts: list[str], schema: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        if parts:
            head, rest = parts[0], parts[1:]
            sub = None
            if schema is not None:
                sub = next((o for o in schema if o["name"] == head
                            and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)), None)
                if sub is None:
                    raise EmulatorUsageError(f"/{top} has no subcommand {head!r}")
            kind = sub["type"] if sub else (SUB_COMMAND_GROUP if rest else SUB_COMMAND)
            return [{"type": kind, "name": head,
                     "options": nest(rest, sub.get("options", []) if sub else None)}]
        return _leaf_options(emu, top, options, schema, guild_id, resolved)

    data: dict[str, Any] = {
        "id": registered["id"] if registered else str(emu.ids.next()),
        "name": top,
        "type": 1,
        "options": nest(path, schema),
    }
    if guild_id is not None and registered and registered.get("guild_id"):
        data["guild_id"] = str(guild_id)
    return data


def _leaf_options(emu: EmulatorCore, command: str, options: dict[str, Any],
                  schema: list[dict[str, Any]] | None, guild_id: int | None,
                  resolved: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {o["name"]: o for o in schema} if schema is not None else {}
    if schema is not None:
        missing = [o["name"] for o in schema if o.get("required") and o["name"] not in options]
        if missing:
            raise EmulatorUsageError(f"/{command} requires options {missing}")
    out = []
    for key, value in options.items():
        if schema is not None and key not in by_name:
            raise EmulatorUsageError(
                f"/{command} has no option {key!r}; it has {sorted(by_name)}")
        kind = by_name[key]["type"] if key in by_name else _infer_type(value)
        if key in by_name:
            _check_constraints(command, by_name[key], value)
        out.append({"name": key, "type": kind,
                    "value": _option_value(emu, kind, value, guild_id, resolved)})
    return out


def _check_constraints(command: str, schema: dict[str, Any], value: Any) -> None:
    """Discord's client refuses values outside an option's choices, range or length, so a
    test that sends one would be testing something no user can do."""
    name = schema["name"]
    choices = schema.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise EmulatorUsageError(f"/{command} {name}: {value!r} is not one of the choices "
                                 f"{[c['value'] for c in choices]}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = schema.get("min_value"), schema.get("max_value")
        if (low is not None and value < low) or (high is not None and value > high):
            raise EmulatorUsageError(f"/{command} {name}: {value} is outside [{low}, {high}]; "
                                     "Discord's client would not send it")
    if isinstance(value, str):
        low, high = schema.get("min_length"), schema.get("max_length")
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            raise EmulatorUsageError(f"/{command} {name}: length {len(value)} is outside "
                                     f"[{low}, {high}]; Discord's client would not send it")


def _option_value(emu: EmulatorCore, kind: int, value: Any, guild_id: int | None,
                  resolved: dict[str, dict[str, Any]]) -> Any:
    world = emu.world
    if kind in (USER, MENTIONABLE) and isinstance(value, User):
        resolved.setdefault("users", {})[str(value.id)] = value.payload()
        if guild_id is not None:
            guild = world.guilds[guild_id]
            resolved.setdefault("members", {})[str(value.id)] = world.member_payload(
                value, guild, permissions=world.guild_permissions(value, guild), with_user=False)
        return str(value.id)
    if kind in (ROLE, MENTIONABLE) and isinstance(value, Role):
        resolved.setdefault("roles", {})[str(value.id)] = value.payload()
        return str(value.id)
    if kind == CHANNEL and isinstance(value, Channel):
        resolved.setdefault("channels", {})[str(value.id)] = value.payload() | {
            "permissions": str(world.channel_permissions(world.bot, value))}
        return str(value.id)
    if kind == ATTACHMENT:
        att = value if isinstance(value, Attachment) else emu.upload(
            value.filename, value.data, content_type=value.content_type)
        resolved.setdefault("attachments", {})[str(att.id)] = att.payload()
        return str(att.id)
    if kind == INTEGER:
        return int(value)
    if kind == NUMBER:
        return float(value)
    if kind == BOOLEAN:
        return bool(value)
    return value
