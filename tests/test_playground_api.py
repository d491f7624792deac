"""The playground page's JSON API: one member's view, and clear errors for bad requests.

The stand-in alone answers what is asked here; the whole bot in a browser is
``test_playground_browser.py``.
"""

from __future__ import annotations

import base64
import socket

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.cli import main
from playground.emulator import Emulator
from playground.emulator.state import EPHEMERAL, Interaction, Message
from playground.web import make_app


@pytest.fixture
async def page():
    emu = Emulator()
    await emu.start()
    client = TestClient(TestServer(make_app(emu)))
    await client.start_server()
    try:
        yield emu, client
    finally:
        await client.close()
        await emu.stop()


async def test_world_lists_members_and_channels_the_bot_can_use(page) -> None:
    emu, client = page
    world = await (await client.get("/api/world")).json()
    assert [m["name"] for m in world["members"]] == ["alice", "bob", "mod"]
    assert [m["moderator"] for m in world["members"]] == [False, False, True]
    names = [c["name"] for c in world["channels"]]
    assert "nsfw-art" in names and "no-bot-posting" not in names
    assert world["commands"] == []  # nothing synced yet: the page says the bot is starting


async def test_ephemeral_replies_are_shown_only_to_their_member(page) -> None:
    emu, client = page
    iid = emu.ids.next()
    emu.interactions[iid] = Interaction(
        id=iid,
        token="t",
        type=2,
        created_at=emu.clock.now(),
        user=emu.alice,
        guild_id=emu.guild.id,
        channel_id=emu.general.id,
        data={"name": "imagine"},
    )
    for flags, text in ((0, "for everyone"), (EPHEMERAL, "only alice")):
        msg = Message(
            id=emu.ids.next(),
            channel_id=emu.general.id,
            guild_id=emu.guild.id,
            author=emu.bot,
            content=text,
            flags=flags,
            interaction_id=iid,
        )
        emu.store[msg.id] = msg

    async def seen(user) -> list[str]:
        query = {"as": str(user.id), "channel": str(emu.general.id)}
        state = await (await client.get("/api/state", params=query)).json()
        return [m["content"] for m in state["messages"]]

    assert await seen(emu.alice) == ["for everyone", "only alice"]
    assert await seen(emu.bob) == ["for everyone"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"as": "1", "action": "click"}, "no member"),
        (
            {"as": "ALICE", "action": "slash", "channel": "GENERAL", "command": "nope"},
            "has no command /nope",
        ),
        ({"as": "ALICE", "action": "slash", "channel": "123", "command": "imagine"}, "no channel"),
        ({"as": "ALICE", "action": "click", "message": "999", "custom_id": "x"}, "incomplete"),
        ({"as": "ALICE", "action": "fly"}, "unknown action"),
        ({"as": "BOT", "action": "click"}, "cannot act as the bot"),
    ],
)
async def test_bad_requests_get_a_clear_error(page, body: dict, error: str) -> None:
    emu, client = page
    ids = {"ALICE": str(emu.alice.id), "BOT": str(emu.bot.id), "GENERAL": str(emu.general.id)}
    body = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    res = await client.post("/api/act", json=body)
    assert res.status == 400
    assert error in (await res.json())["error"]


async def test_malformed_json_and_someone_elses_dm_are_refused(page) -> None:
    emu, client = page
    res = await client.post("/api/act", data=b"{not json")
    assert res.status == 400 and "not JSON" in (await res.json())["error"]
    bobs_dm = emu.dm_channel(emu.bob)
    res = await client.get(
        "/api/state", params={"as": str(emu.alice.id), "channel": str(bobs_dm.id)}
    )
    assert res.status == 400 and "someone else's DM" in (await res.json())["error"]


async def test_attachments_are_served_by_the_page(page) -> None:
    emu, client = page
    att = emu.upload(
        "x.png",
        base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
        ),
    )
    res = await client.get(f"/attachments/{att.id}/x.png")
    assert res.status == 200 and (await res.read()) == att.data
    assert (await client.get("/attachments/1/missing.png")).status == 404


def test_a_port_in_use_is_a_clear_error(capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["playground", "--model", "tiny", "--port", str(port)]) == 2
    assert f"port {port} is in use" in capsys.readouterr().err
