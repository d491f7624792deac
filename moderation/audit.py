"""The moderation audit log: every block and spoiler, so moderators can see what happened and why.

Only the decision and a SHA-256 of a blocked image are kept, never the image itself: the log
must not become a store of the very content it blocked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core import metrics
from core.errors import UserInputError
from moderation.decision import Decision

STAGES = ("prompt", "input_image", "output_image", "button")
MAX_LIST = 500


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    guild_id: int | None
    channel_id: int | None
    user_id: int | None
    job_id: str | None
    stage: str
    action: str
    categories: tuple[str, ...]
    evidence: tuple[str, ...]
    reason: str
    image_sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["categories"], d["evidence"] = list(self.categories), list(self.evidence)
        return d


async def record(
    store: Any,
    *,
    guild_id: int | None,
    channel_id: int | None,
    user_id: int | None,
    job_id: str | None,
    stage: str,
    decision: Decision,
    image_sha256: str | None = None,
) -> int | None:
    """Write a block or spoiler (allows are not logged); returns the entry id, or None."""
    if stage not in STAGES:
        raise ValueError(f"unknown audit stage {stage!r}; one of {', '.join(STAGES)}")
    if not decision.needs_audit:
        return None
    entry_id = await store.add_audit_entry(
        guild_id=guild_id,
        channel_id=channel_id,
        user_id=user_id,
        job_id=job_id,
        stage=stage,
        action=decision.action,
        categories=list(decision.categories),
        evidence=list(decision.evidence),
        reason=decision.reason,
        image_sha256=image_sha256,
    )
    if decision.blocked:
        metrics.record_moderation_block(stage, decision.categories)
    return entry_id


async def list_entries(
    store: Any,
    guild_id: int | None,
    *,
    limit: int = 20,
    user_id: int | None = None,
    job_id: str | None = None,
) -> list[AuditEntry]:
    """Newest first, for the bot's moderator commands; ``guild_id`` None lists direct messages."""
    if not 1 <= limit <= MAX_LIST:
        raise UserInputError(f"limit must be from 1 to {MAX_LIST} (got {limit})")
    rows = await store.audit_rows(guild_id, limit=limit, user_id=user_id, job_id=job_id)
    return [
        AuditEntry(
            id=r[0], at=r[1], guild_id=r[2], channel_id=r[3], user_id=r[4], job_id=r[5],
            stage=r[6], action=r[7], categories=tuple(json.loads(r[8] or "[]")),
            evidence=tuple(json.loads(r[9] or "[]")), reason=r[10] or "", image_sha256=r[11],
        )
        for r in rows
    ]
