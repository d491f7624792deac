"""What the bot works with, gathered in one object so the client, cogs and tests share it.

The bot owns none of these: ``runner.py`` (or a test) builds them, and the same store can be
handed to a second bot after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.config import Settings
from core.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    engine: Any  # generation.engine.Engine
    worker: Any = None  # generation.worker.Worker; the bot registers itself as its listener
