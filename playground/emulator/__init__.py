"""A loopback Discord API (gateway + REST) for end-to-end tests of the real discord.py bot."""

from .client_helpers import patch_discord, running_emulator
from .commands import EmulatorUsageError
from .rules import ApiError
from .server import Emulator
from .state import (
    Attachment,
    Channel,
    Guild,
    Interaction,
    Message,
    RecordedRequest,
    Role,
    Upload,
    User,
    Violation,
)

__all__ = [
    "ApiError",
    "Attachment",
    "Channel",
    "Emulator",
    "EmulatorUsageError",
    "Guild",
    "Interaction",
    "Message",
    "RecordedRequest",
    "Role",
    "Upload",
    "User",
    "Violation",
    "patch_discord",
    "running_emulator",
]
