"""The moderation audit log: every block and spoiler, so moderators can see what happened and why.

Only the decision and a SHA-256 of a blocked image are kept, never the image itself: the log
must not become a store of the very content it blocked.
"""

from __future__ import annotations

import json
import time
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
    cur = await store.db.execute(
        "INSERT INTO audit_log (at, guild_id, channel_id, user_id, job_id, stage, action, "
        "categories, evidence, reason, image_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            time.time(), guild_id, channel_id, user_id, job_id, stage, decision.action,
            json.dumps(list(decision.categories)), json.dumps(list(decision.evidence)),
            decision.reason, image_sha256,
        ),
    )
    await store.db.commit()
    if decision.blocked:
        metrics.record_moderation_block(stage, decision.categories)
    return cur.lastrowid


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
    where = ["guild_id IS ?"]
    args: list[Any] = [guild_id]
    if user_id is not None:
        where.append("user_id = ?")
        args.append(user_id)
    if job_id is not None:
        where.append("job_id = ?")
        args.append(job_id)
    sql = (
        "SELECT id, at, guild_id, channel_id, user_id, job_id, stage, action, categories, "
        f"evidence, reason, image_sha256 FROM audit_log WHERE {' AND '.join(where)} "
        "ORDER BY at DESC, id DESC LIMIT ?"
    )
    async with store.db.execute(sql, (*args, limit)) as cur:
        rows = await cur.fetchall()
    return [
        AuditEntry(
            id=r[0], at=r[1], guild_id=r[2], channel_id=r[3], user_id=r[4], job_id=r[5],
            stage=r[6], action=r[7], categories=tuple(json.loads(r[8] or "[]")),
            evidence=tuple(json.loads(r[9] or "[]")), reason=r[10] or "", image_sha256=r[11],
        )
        for r in rows
    ]
