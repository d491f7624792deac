"""Per-server policy in the real SQLite store, its validation, and the audit log."""

from __future__ import annotations

import json

import pytest

from core.errors import UserInputError
from core.store import Store
from moderation import audit
from moderation.decision import Decision
from moderation.policy import Policy, load_policy, save_policy, update_policy
from moderation.prompt_gate import check_prompt

GUILD, CHANNEL, OTHER_CHANNEL, MOD = 100, 200, 300, 42


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "imagine.db")
    yield s
    await s.close()


def test_defaults_are_safe() -> None:
    p = Policy.default()
    assert p.deepfake_level == "balanced"
    assert p.nsfw_mode == "block" and not p.spoiler_instead_of_block
    assert p.others_can_press_buttons and not p.ai_label and p.include_prompt_in_metadata
    assert p.banned_terms == p.allowlist == ()


async def test_unknown_guild_gets_defaults(store: Store) -> None:
    assert await load_policy(store, GUILD, CHANNEL) == Policy.default()
    assert await load_policy(store, None, None) == Policy.default()  # direct messages


async def test_channel_overrides_guild_field_by_field(store: Store) -> None:
    await update_policy(store, GUILD, None, MOD, deepfake_level="strict", ai_label=True)
    await update_policy(store, GUILD, CHANNEL, MOD, nsfw_mode="spoiler")
    channel = await load_policy(store, GUILD, CHANNEL)
    assert (channel.deepfake_level, channel.ai_label, channel.nsfw_mode) == ("strict", True, "spoiler")
    other = await load_policy(store, GUILD, OTHER_CHANNEL)
    assert other.nsfw_mode == "block" and other.deepfake_level == "strict"
    # A later guild change still reaches the channel for fields it does not override.
    await update_policy(store, GUILD, None, MOD, deepfake_level="off")
    assert (await load_policy(store, GUILD, CHANNEL)).deepfake_level == "off"
    async with store.db.execute(
        "SELECT data, updated_by FROM policies WHERE guild_id=? AND channel_id=?", (GUILD, CHANNEL)
    ) as cur:
        data, by = await cur.fetchone()
    assert json.loads(data) == {"nsfw_mode": "spoiler"} and by == MOD


async def test_save_policy_for_a_channel_stores_only_differences(store: Store) -> None:
    await save_policy(store, GUILD, None, Policy(ai_label=True), MOD)
    await save_policy(store, GUILD, CHANNEL, Policy(ai_label=True, banned_terms=("clown",)), MOD)
    async with store.db.execute(
        "SELECT data FROM policies WHERE channel_id=?", (CHANNEL,)
    ) as cur:
        (data,) = await cur.fetchone()
    assert json.loads(data) == {"banned_terms": ["clown"]}
    p = await load_policy(store, GUILD, CHANNEL)
    assert p.ai_label and p.banned_terms == ("clown",)
    assert check_prompt("a clown", p).blocked


async def test_update_accepts_strings_as_a_slash_command_sends_them(store: Store) -> None:
    p = await update_policy(
        store, GUILD, None, MOD, ai_label="true", nsfw_threshold="0.3",
        banned_terms="clown, mime ,", allowlist="clown fish",
    )
    assert p.ai_label is True and p.nsfw_threshold == 0.3
    assert p.banned_terms == ("clown", "mime") and p.allowlist == ("clown fish",)
    assert await load_policy(store, GUILD, CHANNEL) == p


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, "unknown policy setting colour; known settings: deepfake_level"),
        ({"deepfake_level": "paranoid"}, "must be one of 'strict', 'balanced' or 'off'"),
        ({"nsfw_mode": "maybe"}, "must be one of 'block', 'spoiler' or 'allow'"),
        ({"nsfw_threshold": 1.5}, "from 0.05 to 0.95"),
        ({"ai_label": "perhaps"}, "must be true or false"),
        ({"banned_regexes": ["[unclosed"]}, "does not compile"),
        ({"banned_regexes": ["(a+)+$"]}, "can hang"),
        ({"banned_regexes": ["x" * 201]}, "limit is 200"),
        ({"banned_terms": ["x" * 101]}, "longer than 100"),
        ({"banned_terms": [f"t{i}" for i in range(201)]}, "at most 200"),
        ({}, "nothing to change"),
    ],
)
async def test_bad_changes_are_clear_errors_and_write_nothing(store: Store, changes, message) -> None:
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await update_policy(store, GUILD, CHANNEL, MOD, **changes)
    async with store.db.execute("SELECT COUNT(*) FROM policies") as cur:
        assert (await cur.fetchone())[0] == 0


async def test_damaged_rows_fall_back_to_safe_values(store: Store) -> None:
    await store.db.execute(
        "INSERT INTO policies (guild_id, channel_id, data) VALUES (?, 0, ?), (?, ?, ?)",
        (GUILD, json.dumps({"deepfake_level": "bogus", "future_field": 1}), GUILD, CHANNEL, "{not json"),
    )
    await store.db.commit()
    assert await load_policy(store, GUILD, CHANNEL) == Policy.default()


# --- audit log -----------------------------------------------------------------------------------


async def test_blocks_and_spoilers_are_recorded_allows_are_not(store: Store) -> None:
    block = check_prompt("a nude woman", Policy.default())
    spoiler = Decision("spoiler", ("nsfw_image",), ("FEMALE_BREAST_EXPOSED 0.81",), "spoilered")
    first = await audit.record(store, guild_id=GUILD, channel_id=CHANNEL, user_id=7, job_id="j1",
                               stage="prompt", decision=block)
    await audit.record(store, guild_id=GUILD, channel_id=CHANNEL, user_id=8, job_id="j2",
                       stage="output_image", decision=spoiler, image_sha256="ab" * 32)
    assert await audit.record(store, guild_id=GUILD, channel_id=CHANNEL, user_id=7, job_id="j3",
                              stage="prompt", decision=Decision.allow()) is None
    entries = await audit.list_entries(store, GUILD, limit=10)
    assert [e.job_id for e in entries] == ["j2", "j1"]
    assert entries[1].id == first and entries[1].categories == ("sexual",)
    assert entries[1].evidence == block.evidence and entries[1].reason == block.reason
    assert entries[0].image_sha256 == "ab" * 32 and entries[0].action == "spoiler"
    assert [e.job_id for e in await audit.list_entries(store, GUILD, limit=10, user_id=7)] == ["j1"]
    assert [e.job_id for e in await audit.list_entries(store, GUILD, limit=10, job_id="j2")] == ["j2"]
    assert await audit.list_entries(store, 999, limit=10) == []
    assert len(await audit.list_entries(store, GUILD, limit=1)) == 1


async def test_audit_rejects_bad_arguments(store: Store) -> None:
    with pytest.raises(UserInputError, match="from 1 to 500"):
        await audit.list_entries(store, GUILD, limit=0)
    with pytest.raises(ValueError, match="unknown audit stage"):
        await audit.record(store, guild_id=GUILD, channel_id=None, user_id=None, job_id=None,
                           stage="somewhere", decision=Decision("block"))


async def test_audited_blocks_move_the_moderation_metric(store: Store) -> None:
    from core import metrics

    def count() -> float:
        value = metrics.REGISTRY.get_sample_value(
            "imagine_moderation_blocks_total", {"stage": "prompt", "category": "sexual"}
        )
        return value or 0.0

    before = count()
    await audit.record(store, guild_id=GUILD, channel_id=CHANNEL, user_id=7, job_id="j9",
                       stage="prompt", decision=check_prompt("a nude woman", Policy.default()))
    await audit.record(store, guild_id=GUILD, channel_id=CHANNEL, user_id=7, job_id="j10",
                       stage="prompt", decision=Decision.allow())
    assert count() == before + 1
