"""A loopback Discord API (gateway + REST) that the real, unmodified discord.py bot talks to.

It backs ``imagine-bot playground`` (the whole bot in a browser, no Discord account) and the
end-to-end tests (which point discord.py at it with ``tests/emulator_client.py``).
"""

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
]
