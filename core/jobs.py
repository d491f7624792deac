"""What a job is, as the store, the scheduler, the worker and the bot all see it.

A job is one user request (``/imagine``, a variation, an upscale, a reroll) from the moment it is
accepted until its images are delivered. Its row in the store is the source of truth; this module
only gives that row a typed shape so nobody passes raw ``sqlite3.Row`` objects around.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"

    @property
    def finished(self) -> bool:
        """Terminal statuses: the job will never run again."""
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


class JobKind(str, Enum):
    IMAGINE = "imagine"
    VARIATION = "variation"
    UPSCALE = "upscale"
    REROLL = "reroll"
    ZOOM = "zoom"  # Zoom Out 1.5x / 2x: the image shrunk into its canvas, the border painted
    PAN = "pan"  # the canvas extended on one side, that strip painted
    REGION = "region"  # Vary (Region): one part of the image painted again
    BLEND = "blend"  # /blend: 2-5 images steer the model through an IP-Adapter


class JobBlocked(Exception):
    """Raised by a post-processing step when moderation refuses the result.

    The worker records the job as ``blocked`` with this message (shown to the user) instead of
    ``failed``, so moderators can tell a policy decision from a crash.
    """


# Lowercase letters and digits only: safe in Discord custom_ids, file names and URLs, and easy
# to read out loud ("job k3x9q2m7ab"). 10 characters = 51 bits, collisions are not a concern.
_ID_ALPHABET = string.ascii_lowercase + string.digits
JOB_ID_LENGTH = 10


def new_job_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(JOB_ID_LENGTH))


@dataclass
class Job:
    """One row of the ``jobs`` table."""

    id: str
    user_id: int
    kind: JobKind
    params: dict[str, Any]
    est_cost: float
    guild_id: int | None = None
    channel_id: int | None = None
    parent_job_id: str | None = None
    parent_image_index: int | None = None
    credited_user_ids: list[int] = field(default_factory=list)
    status: JobStatus = JobStatus.QUEUED
    weight: float = 1.0
    seq: int = 0  # arrival order, assigned by the store; FIFO tie-breaker everywhere
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    delivered_at: float | None = None
    measured_seconds: float | None = None
    energy_joules: float | None = None  # GPU energy charged to it; None: not measured
    error: str | None = None
    result_dir: str | None = None
    grid_path: str | None = None
    delivery: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls(
            id=row["id"],
            seq=row["seq"],
            guild_id=row["guild_id"],
            channel_id=row["channel_id"],
            user_id=row["user_id"],
            kind=JobKind(row["kind"]),
            params=json.loads(row["params"]),
            parent_job_id=row["parent_job_id"],
            parent_image_index=row["parent_image_index"],
            credited_user_ids=json.loads(row["credited_user_ids"]),
            status=JobStatus(row["status"]),
            weight=row["weight"],
            est_cost=row["est_cost"],
            measured_seconds=row["measured_seconds"],
            energy_joules=row["energy_joules"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            delivered_at=row["delivered_at"],
            error=row["error"],
            result_dir=row["result_dir"],
            grid_path=row["grid_path"],
            delivery=json.loads(row["delivery"]),
            attempts=row["attempts"],
        )


@dataclass
class ProcessedImage:
    """One finished image on disk, as returned by the post-processing step."""

    index: int
    seed: int
    path: Path
    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    watermark_payload: str | None = None
    moderation: dict[str, Any] = field(default_factory=dict)


@dataclass
class Processed:
    """Everything post-processing produced for a job: the images and, optionally, a grid."""

    images: list[ProcessedImage]
    grid_path: Path | None = None


@dataclass
class ImageRecord:
    """One row of the ``images`` table."""

    id: int
    job_id: str
    index: int
    seed: int
    path: str
    width: int | None
    height: int | None
    sha256: str | None
    watermark_payload: str | None
    moderation: dict[str, Any]

    @property
    def blocked(self) -> bool:
        """Withheld by moderation: never sent, and its buttons refuse to use it."""
        mod = self.moderation or {}
        return bool(mod.get("blocked")) or mod.get("action") == "block"

    @classmethod
    def from_row(cls, row: Any) -> ImageRecord:
        return cls(
            id=row["id"],
            job_id=row["job_id"],
            index=row["idx"],
            seed=row["seed"],
            path=row["path"],
            width=row["width"],
            height=row["height"],
            sha256=row["sha256"],
            watermark_payload=row["watermark_payload"],
            moderation=json.loads(row["moderation"]),
        )
