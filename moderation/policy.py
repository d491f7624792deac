"""Per-server moderation policy, stored as JSON in the store's ``policies`` table.

A guild row (``channel_id`` 0) holds the server's policy; a channel row holds only the fields
that channel overrides, so changing the server policy later still reaches every channel that
did not override that field. Defaults are the safe choice for a community server.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import UserInputError

log = logging.getLogger(__name__)

GUILD_ROW = 0  # channel_id of the server-wide row
MAX_TERMS = 200
MAX_TERM_CHARS = 100
MAX_REGEXES = 50
MAX_REGEX_CHARS = 200
# A quantified group that itself ends in a quantifier, e.g. (a+)+ or (\w*)*: the classic
# catastrophic-backtracking shape. Matching also runs under a timeout (prompt_gate.py).
_NESTED_QUANTIFIER = regex.compile(r"\((?:[^()\\]|\\.)*[+*}]\)[+*{]")


class Policy(BaseModel):
    """What a server allows. Field docs are shown by ``/policy show``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deepfake_level: Literal["strict", "balanced", "off"] = Field(
        "balanced",
        description="strict: block any named real person; balanced: block real people with "
        "photo cues or sensitive context; off: no real-person check (minors rule stays)",
    )
    nsfw_mode: Literal["block", "spoiler", "allow"] = Field(
        "block", description="sexual content in age-restricted channels: block, spoiler or allow"
    )
    spoiler_instead_of_block: bool = Field(
        False,
        description="outside age-restricted channels, spoiler detected nudity instead of blocking",
    )
    nsfw_threshold: float = Field(
        0.45, ge=0.05, le=0.95, description="NudeNet score from which exposed nudity counts"
    )
    face_threshold: float = Field(
        0.5, ge=0.05, le=0.95, description="NudeNet score from which a realistic face counts"
    )
    banned_terms: tuple[str, ...] = Field((), description="extra words or phrases to block")
    banned_regexes: tuple[str, ...] = Field((), description="extra regular expressions to block")
    allowlist: tuple[str, ...] = Field(
        (), description="words or phrases that override bans (never the minors rule)"
    )
    public_figures: tuple[str, ...] = Field(
        (), description="extra real people's names for the deepfake check"
    )
    others_can_press_buttons: bool = Field(
        True, description="anyone may press upscale/variation buttons, not only the author"
    )
    ai_label: bool = Field(False, description="add a visible 'AI' badge to images")
    include_prompt_in_metadata: bool = Field(
        True, description="write the prompt into the image's metadata"
    )

    @classmethod
    def default(cls, settings: Any = None) -> Policy:
        """The safe defaults, with this instance's thresholds and names when ``settings`` is given."""
        if settings is None:
            return cls()
        mod = settings.moderation
        return cls(
            nsfw_threshold=mod.nsfw_threshold,
            face_threshold=mod.face_threshold,
            public_figures=tuple(mod.extra_public_figures),
        )

    @field_validator("banned_terms", "allowlist", "public_figures", mode="before")
    @classmethod
    def _split_terms(cls, value: Any) -> Any:
        if isinstance(value, str):  # "/policy set banned_terms a, b" passes one string
            value = [v for v in value.split(",")]
        if isinstance(value, (list, tuple)):
            value = tuple(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))
            if len(value) > MAX_TERMS:
                raise ValueError(f"at most {MAX_TERMS} entries, got {len(value)}")
            for v in value:
                if len(v) > MAX_TERM_CHARS:
                    raise ValueError(
                        f"entry {v[:20]!r}... is longer than {MAX_TERM_CHARS} characters"
                    )
        return value

    @field_validator("banned_regexes", mode="before")
    @classmethod
    def _check_regexes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value] if value.strip() else []
        if isinstance(value, (list, tuple)):
            value = tuple(dict.fromkeys(str(v) for v in value if str(v).strip()))
            if len(value) > MAX_REGEXES:
                raise ValueError(f"at most {MAX_REGEXES} regexes, got {len(value)}")
            for pattern in value:
                validate_regex(pattern)
        return value


def validate_regex(pattern: str) -> None:
    """Refuse patterns that do not compile, are too long, or can backtrack catastrophically."""
    if len(pattern) > MAX_REGEX_CHARS:
        raise ValueError(f"regex is {len(pattern)} characters; the limit is {MAX_REGEX_CHARS}")
    try:
        regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"regex {pattern!r} does not compile: {exc}") from None
    if _NESTED_QUANTIFIER.search(pattern):
        raise ValueError(
            f"regex {pattern!r} repeats a repeated group (like (a+)+), which can hang; simplify it"
        )


FIELDS = tuple(Policy.model_fields)


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "policy"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown setting; known settings: {', '.join(FIELDS)}"
        elif err["type"] == "literal_error":
            msg = f"must be one of {err['ctx']['expected']}"
        elif err["type"] in ("less_than_equal", "greater_than_equal", "float_parsing"):
            msg = f"must be a number from 0.05 to 0.95 (got {err['input']!r})"
        elif err["type"] == "bool_parsing":
            msg = f"must be true or false (got {err['input']!r})"
        parts.append(f"{name}: {msg}")
    return "invalid policy: " + "; ".join(parts)


def make_policy(base: Policy | None = None, **changes: Any) -> Policy:
    """``base`` with ``changes`` applied and validated; bad input raises ``UserInputError``."""
    data = (base or Policy()).model_dump()
    data.update(changes)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise UserInputError(_explain(exc)) from None


async def _read_row(store: Any, guild_id: int, channel_id: int) -> dict[str, Any]:
    stored = await store.policy_data(guild_id, channel_id)
    if stored is None:
        return {}
    try:
        data = json.loads(stored)
    except (TypeError, json.JSONDecodeError):
        log.warning("policy row guild=%s channel=%s is not JSON; ignored", guild_id, channel_id)
        return {}
    if not isinstance(data, dict):
        return {}
    # Fields from a newer or older version are dropped rather than failing the whole policy.
    return {k: v for k, v in data.items() if k in Policy.model_fields}


def _merge(base: Policy, overrides: dict[str, Any], where: str) -> Policy:
    """Field by field; a server's extra real people add to the instance's, never replace them."""
    merged = {**base.model_dump(), **overrides}
    if overrides.get("public_figures"):
        names = [
            *base.public_figures,
            *Policy(public_figures=overrides["public_figures"]).public_figures,
        ]
        merged["public_figures"] = tuple(dict.fromkeys(names))
    try:
        return Policy.model_validate(merged)
    except ValidationError as exc:
        log.warning("stored policy for %s is invalid (%s); using the safer base", where, exc)
        return base


async def load_policy(
    store: Any, guild_id: int | None, channel_id: int | None = None, *, base: Policy | None = None
) -> Policy:
    """The effective policy for a channel: defaults, then the guild row, then the channel row."""
    policy = base or Policy.default()
    if guild_id is None:  # direct messages: defaults only
        return policy
    policy = _merge(policy, await _read_row(store, guild_id, GUILD_ROW), f"guild {guild_id}")
    if channel_id:
        overrides = await _read_row(store, guild_id, channel_id)
        policy = _merge(policy, overrides, f"channel {channel_id}")
    return policy


async def channel_overrides(store: Any, guild_id: int, channel_id: int) -> dict[str, Any]:
    """Only the fields a channel overrides (for ``/policy show``)."""
    return await _read_row(store, guild_id, channel_id)


async def _write_row(
    store: Any, guild_id: int, channel_id: int, data: dict[str, Any], by_user: int | None
) -> None:
    await store.put_policy_data(guild_id, channel_id, json.dumps(data, sort_keys=True), by_user)


def _jsonable(policy: Policy) -> dict[str, Any]:
    return policy.model_dump(mode="json")


async def save_policy(
    store: Any, guild_id: int, channel_id: int | None, policy: Policy, by_user: int | None
) -> None:
    """Store a whole policy for the guild, or for a channel as its differences from the guild."""
    if channel_id is None or channel_id == GUILD_ROW:
        await _write_row(store, guild_id, GUILD_ROW, _jsonable(policy), by_user)
        return
    guild = _jsonable(await load_policy(store, guild_id, None))
    diff = {k: v for k, v in _jsonable(policy).items() if guild.get(k) != v}
    await _write_row(store, guild_id, channel_id, diff, by_user)


async def update_policy(
    store: Any,
    guild_id: int,
    channel_id: int | None,
    by_user: int | None,
    *,
    base: Policy | None = None,
    **changes: Any,
) -> Policy:
    """Change some fields (what ``/policy set`` calls) and return the new effective policy.

    ``base`` is the instance's defaults (``Policy.default(settings)``). A row stores only the
    fields moderators changed, so instance settings (thresholds, extra real people) keep
    applying to every field a server did not set. Unknown fields and bad values raise
    ``UserInputError`` naming the field and what is allowed; nothing is written then.
    """
    if not changes:
        raise UserInputError(f"nothing to change; known settings: {', '.join(FIELDS)}")
    unknown = [k for k in changes if k not in Policy.model_fields]
    if unknown:
        raise UserInputError(
            f"unknown policy setting {', '.join(unknown)}; known settings: {', '.join(FIELDS)}"
        )
    row = GUILD_ROW if channel_id is None else channel_id
    current = await load_policy(store, guild_id, channel_id, base=base)
    fresh = _jsonable(make_policy(current, **changes))  # validates; nothing written on error
    stored = await _read_row(store, guild_id, row)
    stored.update({k: fresh[k] for k in changes})
    await _write_row(store, guild_id, row, stored, by_user)
    return _merge(current, {k: fresh[k] for k in changes}, f"guild {guild_id}")
