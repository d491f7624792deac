"""End to end: /describe through the loopback Discord, with the tiny random captioner (no
download), the real worker and store; its buttons run /imagine, also after a restart."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.cogs import describe as describe_cog
from core.jobs import JobStatus
from generation.describe import LazyCaptioner
from tests.test_bot_e2e import Harness, _ephemeral_reply, _harness


@pytest.fixture
async def describe_harness(
    discord_emulator: Any, tiny_engine: Any, tmp_path: Path
) -> AsyncIterator[Harness]:
    async with _harness(
        discord_emulator,
        tiny_engine,
        tmp_path,
        real_postprocess=False,
        model={"captioner": "tiny"},
    ) as h:
        yield h


def _png(size: tuple[int, int] = (96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (180, 90, 30)).save(buf, format="PNG")
    return buf.getvalue()


async def _describe(harness: Harness, **kwargs: Any) -> tuple[int, Any]:
    emu = harness.emu
    upload = emu.upload("photo.png", _png(), content_type="image/png")
    iid = await emu.send_slash("describe", {"image": upload}, **kwargs)
    answer = await emu.wait_for(
        lambda: _answered(emu.original_message(iid)), 60, f"/describe {iid}"
    )
    return iid, answer


def _answered(msg: Any) -> Any:
    return msg if msg is not None and "Prompt ideas" in msg.content else None


def _suggestions(content: str) -> list[str]:
    return [line.split("** ", 1)[1] for line in content.splitlines()[1:]]


async def test_describe_suggests_four_prompts_whose_buttons_imagine_them(
    describe_harness: Harness,
) -> None:
    harness, emu = describe_harness, describe_harness.emu
    _, answer = await _describe(harness, user=emu.alice)
    suggestions = _suggestions(answer.content)
    assert len(suggestions) == 4 and len(set(suggestions)) == 4
    assert all(s.endswith("--ar 3:2") and s.isprintable() for s in suggestions)
    ids = answer.custom_ids()
    assert len(ids) == 4 and answer.button_labels() == ["1", "2", "3", "4"]
    describe_id = ids[0].split(":")[2]

    press = await emu.click(answer, f"ib:ds:{describe_id}:1", user=emu.bob)
    await harness.result_of(press)
    job = await harness.delivered(press)
    assert job.status == JobStatus.DONE and job.user_id == emu.bob.id
    assert job.delivery["prompt"] + " --ar 3:2" == suggestions[1]

    # A restart: the old message's buttons still work (the suggestions are in the store).
    await harness.stop()
    await harness.start()
    again = await emu.click(answer, f"ib:ds:{describe_id}:3", user=emu.alice)
    await harness.result_of(again)
    job = await harness.delivered(again)
    assert job.delivery["prompt"] + " --ar 3:2" == suggestions[3]

    await harness.store.db.execute("DELETE FROM describes")
    expired = await emu.click(answer.id, f"ib:ds:{describe_id}:2", user=emu.alice)
    assert "no longer available" in (await _ephemeral_reply(emu, expired)).content
    assert not emu.violations


async def test_a_suggestion_the_gate_refuses_is_withheld_without_a_button(
    describe_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness, emu = describe_harness, describe_harness.emu
    # The model is random; the thing under test is the gate, so its words are given here.
    said = ["a red fox", "a pineapple on a table", "a green fox", "a castle at night"]
    monkeypatch.setattr(LazyCaptioner, "suggest", lambda self, *a: [f"{s} --ar 3:2" for s in said])
    ban = await emu.send_slash("policy ban", {"term": "pineapple"}, user=emu.moderator)
    await _ephemeral_reply(emu, ban)
    _, answer = await _describe(harness, user=emu.bob)
    shown = _suggestions(answer.content)
    assert shown[1] == "(a suggestion was withheld by moderation)"
    assert "pineapple" not in answer.content
    assert [i.rsplit(":", 1)[1] for i in answer.custom_ids()] == ["0", "2", "3"]
    async with harness.store.db.execute(
        "SELECT action, stage FROM audit_log WHERE user_id = ?", (emu.bob.id,)
    ) as cur:
        assert [tuple(r) for r in await cur.fetchall()] == [("block", "prompt")]


async def test_describe_explains_bad_uploads_and_a_missing_model(
    describe_harness: Harness,
) -> None:
    harness, emu = describe_harness, describe_harness.emu
    text = emu.upload("notes.txt", b"hello", content_type="text/plain")
    iid = await emu.send_slash("describe", {"image": text})
    assert "not an image" in (await _ephemeral_reply(emu, iid)).content
    cog = harness.bot.get_cog("Describe")
    cog.captioner = LazyCaptioner(str(harness.settings.data_dir / "no-such-model"))
    upload = emu.upload("photo.png", _png(), content_type="image/png")
    iid = await emu.send_slash("describe", {"image": upload})
    reply = (await _ephemeral_reply(emu, iid)).content
    assert "not available" in reply and "model.captioner" in reply
    cog.captioner = LazyCaptioner("off")
    iid = await emu.send_slash("describe", {"image": upload})
    assert "switched off" in (await _ephemeral_reply(emu, iid)).content
    assert not emu.violations


async def test_a_describe_acked_before_a_crash_is_answered_after_the_restart(
    describe_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness, emu = describe_harness, describe_harness.emu
    acceptor = harness.bot.acceptor

    async def die(*args: Any, **kwargs: Any) -> Any:
        raise asyncio.CancelledError  # no answer, no refusal: what a kill leaves behind

    monkeypatch.setattr(describe_cog, "read_upload", die)
    upload = emu.upload("photo.png", _png(), content_type="image/png")
    iid = await emu.send_slash("describe", {"image": upload})
    await emu.wait_for_response(iid)
    await emu.wait_for(lambda: iid in acceptor._live, 10, "recorded")
    monkeypatch.undo()
    acceptor._live.clear()  # as seen by the next process
    assert await acceptor.recover(harness.bot) == 1
    answer = await emu.wait_for(lambda: _answered(emu.original_message(iid)), 60, "answer")
    assert len(answer.custom_ids()) == 4
    assert await harness.store.accepted_interactions() == []
