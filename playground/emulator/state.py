"""The emulated Discord world: users, guilds, channels, messages, interactions and a clock.

Plain dataclasses that render themselves as the JSON payloads Discord sends, so the REST and
gateway halves of the emulator agree on one source of truth and tests can inspect it directly.
"""

from __future__ import annotations

import itertools
import mimetypes
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

DISCORD_EPOCH_MS = 1420070400000

# Permission bits the emulator reasons about (Discord's values).
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
ALL_PERMISSIONS = (1 << 51) - 1

EVERYONE_DEFAULT = (
    VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY
    | ADD_REACTIONS | USE_EXTERNAL_EMOJIS | USE_APPLICATION_COMMANDS
)
BOT_DEFAULT = EVERYONE_DEFAULT | MANAGE_MESSAGES

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


class Clock:
    """Real monotonic time plus an offset, so tests can jump 15 minutes without waiting."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._wall_start = time.time()
        self._mono_start = time.monotonic()

    def now(self) -> float:
        """Seconds since the Unix epoch on the emulator's timeline."""
        return self._wall_start + (time.monotonic() - self._mono_start) + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds

    def iso(self, at: float | None = None) -> str:
        return datetime.fromtimestamp(self.now() if at is None else at, timezone.utc).isoformat()


class Snowflakes:
    """Discord-shaped ids whose embedded time follows the emulator clock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._counter = itertools.count(1)

    def next(self) -> int:
        ms = int(self._clock.now() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._counter) & 0x3FFFFF)


@dataclass
class User:
    id: int
    name: str
    bot: bool = False
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    dms_closed: bool = False  # sending them a DM answers 403 50007

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.name,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
        }

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass
class Role:
    id: int
    name: str
    permissions: int
    position: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": True,
            "flags": 0,
        }


@dataclass
class Channel:
    id: int
    guild_id: int | None  # None for a DM channel (type 1)
    name: str
    nsfw: bool = False
    type: int = 0  # GUILD_TEXT
    bot_denied: int = 0  # permissions removed from the bot here (e.g. SEND_MESSAGES)
    deleted: bool = False
    position: int = 0
    recipient: User | None = None  # DM channels only

    def payload(self) -> dict[str, Any]:
        if self.recipient is not None:
            return {"id": str(self.id), "type": 1, "recipients": [self.recipient.payload()],
                    "last_message_id": None, "flags": 0}
        return {
            "id": str(self.id),
            "guild_id": str(self.guild_id),
            "name": self.name,
            "type": self.type,
            "nsfw": self.nsfw,
            "position": self.position,
            "permission_overwrites": [],
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    member_ids: list[int] = field(default_factory=list)
    attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT
    locale: str = "en-US"

    @property
    def everyone(self) -> Role:
        return self.roles[self.id]


@dataclass
class Attachment:
    """A stored file: one the bot uploaded, or one a test user attached to a slash command."""

    id: int
    filename: str
    data: bytes
    content_type: str
    url: str
    description: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def spoiler(self) -> bool:
        return self.filename.startswith("SPOILER_")

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            out["description"] = self.description
        if self.width is not None:
            out["width"], out["height"] = self.width, self.height
        return out


def guess_content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def image_size(data: bytes) -> tuple[int | None, int | None]:
    """Discord reports width/height for images; bots sometimes rely on them."""
    try:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return None, None


EPHEMERAL = 1 << 6
LOADING = 1 << 7


@dataclass
class Message:
    id: int
    channel_id: int
    guild_id: int | None
    author: User
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    created_at: float = 0.0
    edited_at: float | None = None
    deleted: bool = False
    interaction_id: int | None = None  # set for interaction responses and follow-ups
    webhook_id: int | None = None
    reactions: dict[str, set[int]] = field(default_factory=dict)
    edit_times: list[float] = field(default_factory=list)  # emulator clock, one per edit
    mentions: list[User] = field(default_factory=list)  # users this message really pings
    interaction_meta: dict[str, Any] | None = None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in iter_components(self.components) if "custom_id" in c]

    def button_labels(self) -> list[str]:
        return [c.get("label", "") for c in iter_components(self.components) if c.get("type") == 2]

    def payload(self, clock: Clock) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": clock.iso(self.created_at),
            "edited_timestamp": clock.iso(self.edited_at) if self.edited_at else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [u.payload() for u in self.mentions],
            "mention_roles": [],
            "attachments": [a.payload() for a in self.attachments],
            "embeds": self.embeds,
            "components": self.components,
            "reactions": [
                {"emoji": {"id": None, "name": name}, "count": len(users), "me": False,
                 "count_details": {"burst": 0, "normal": len(users)}, "burst_colors": [],
                 "me_burst": False, "burst_me": False, "burst_count": 0}
                for name, users in self.reactions.items() if users
            ],
            "pinned": False,
            "type": 20 if self.interaction_id is not None else 0,  # 20: CHAT_INPUT_COMMAND reply
            "flags": self.flags,
        }
        if self.guild_id is not None:
            out["guild_id"] = str(self.guild_id)
        if self.interaction_meta is not None:
            out["interaction_metadata"] = self.interaction_meta
        if self.webhook_id is not None:
            out["webhook_id"] = str(self.webhook_id)
            out["application_id"] = str(self.webhook_id)
        return out


def iter_components(components: list[dict[str, Any]]):
    """Walk rows, labels and containers down to the leaf components."""
    for comp in components:
        yield comp
        if "components" in comp:
            yield from iter_components(comp["components"])
        if "component" in comp:
            yield from iter_components([comp["component"]])
        if "accessory" in comp:
            yield from iter_components([comp["accessory"]])


@dataclass
class Upload:
    """A file a test user attaches to a slash command option (type 11)."""

    filename: str
    data: bytes
    content_type: str | None = None


@dataclass
class Interaction:
    id: int
    token: str
    type: int
    created_at: float
    user: User
    guild_id: int | None
    channel_id: int
    data: dict[str, Any]
    payload: dict[str, Any] = field(default_factory=dict)
    message_id: int | None = None  # the component's message for type 3/5 from a component
    initial_response: int | None = None  # the callback type once acknowledged
    responded_at: float | None = None
    original_message_id: int | None = None
    modal: dict[str, Any] | None = None  # the modal the bot opened (callback type 9)
    followup_ids: list[int] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return self.initial_response is not None


def new_token(interaction_id: int) -> str:
    return f"aW50ZXJhY3Rpb24.{interaction_id}.{secrets.token_urlsafe(24)}"


@dataclass
class RecordedFile:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """One HTTP request the bot made, as the emulator saw and answered it."""

    method: str
    path: str
    route: str
    query: dict[str, str]
    json: Any
    files: list[RecordedFile]
    at: float
    status: int = 0
    response: Any = None
    interaction_id: int | None = None
    injected: bool = False  # answered by a fault the test injected (``emu.fail_next``)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Violation:
    """A Discord rule the bot broke; real Discord would have rejected or expired it."""

    rule: str
    detail: str
    at: float
    interaction_id: int | None = None
