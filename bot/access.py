"""Who may act on a job, and from where: one bot serves many servers, and they stay apart.

Every job action (``/show``, the U/V/reroll/remix/delete buttons, reaction shortcuts,
``/provenance``'s full report) goes through these checks, so a member or moderator of one server
can never read or act on another server's jobs, and a result from an age-restricted channel is
never re-posted outside one. In a DM (no server) a user may act only on their own jobs, and the
rules of the server the job was made in (bans, policy) still apply.
"""

from __future__ import annotations

from typing import Any

from core.errors import UserInputError
from core.jobs import Job


def is_moderator(actor: Any) -> bool:
    """A moderator of the server the interaction (or reaction) comes from: Manage Server or
    Administrator there. Never true in a DM. The one definition the whole bot uses."""
    if getattr(actor, "guild_id", None) is None:
        return False
    perms = getattr(actor, "permissions", None)
    if perms is None:  # a reaction: the member's own server permissions
        perms = getattr(getattr(actor, "user", None), "guild_permissions", None)
    return bool(perms and (perms.administrator or perms.manage_guild))


def is_nsfw(channel: Any) -> bool:
    """Whether a channel is age-restricted; partial channels and DMs count as not."""
    check = getattr(channel, "is_nsfw", None)
    try:
        return bool(check()) if callable(check) else False
    except Exception:  # noqa: BLE001 - partial channels may not know
        return False


def in_scope(job: Job, *, guild_id: int | None, user_id: int) -> bool:
    """A server sees its own jobs; a DM sees only the caller's own jobs."""
    if guild_id is not None:
        return job.guild_id == guild_id
    return job.user_id == user_id


def require_access(job: Job, actor: Any) -> None:
    """Raise a ``UserInputError`` saying why, unless ``actor`` (an interaction, or a reaction's
    stand-in with ``guild_id``, ``user`` and ``channel``) may use ``job`` where it is."""
    user_id = actor.user.id
    if not in_scope(job, guild_id=actor.guild_id, user_id=user_id):
        if actor.guild_id is None:
            raise UserInputError(
                f"job {job.id} is not yours; in direct messages you can use only your own jobs"
            )
        raise UserInputError(f"job {job.id} was made in another server; it can be used only there")
    if job.delivery.get("private") and job.user_id != user_id:
        raise UserInputError(f"job {job.id} was private to the person who made it")
    if job.delivery.get("nsfw_channel") and not is_nsfw(getattr(actor, "channel", None)):
        raise UserInputError(
            f"job {job.id} was made in an age-restricted channel; "
            "it can be shown or used only in one"
        )
