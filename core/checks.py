"""What every doctor check returns: one line of the report, with a status an admin can act on.

The checks themselves live next to what they check (``generation/checks.py``,
``core/store_checks.py``, ``moderation/checks.py``, ``bot/doctor.py``); this shape is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    status: Status
    message: str
    fix: str = ""
