"""Self-tests of the loopback Discord emulator, driven by a minimal real discord.py client.

The client here is deliberately not the product bot: it proves the emulator speaks the
protocol discord.py expects, so the bot's end-to-end tests can trust it.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import discord
import discord.gateway
import discord.http
import pytest
from discord import app_commands

from playground.emulator import Emulator, EmulatorUsageError

PNG_1PX = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)


# --- canary: the undocumented discord.py attributes the emulator relies on ---------------------


def test_discord_py_attributes_canary() -> None:
    assert discord.http.Route.BASE == "https://discord.com/api/v10"
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "wss://gateway.discord.gg/"
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    low, high = re.search(r'"discord\.py>=([\d.]+),<([\d.]+)"', pyproject).groups()

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(x) for x in text.split(".")[:3])

    assert version(low) <= version(discord.__version__) < version(high)


async def test_fixture_restores_discord_py(discord_emulator: Emulator) -> None:
    assert discord.http.Route.BASE == discord_emulator.api_base
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == discord_emulator.gateway_url


def test_route_base_is_restored_after_fixture() -> None:
    assert discord.http.Route.BASE == "https://discord.com/api/v10"


# --- a minimal bot ------------------------------------------------------------------------------


class AgainButton(discord.ui.View):
    def __init__(self, bot: MiniBot) -> None:
        super().__init__(timeout=None)
        self.bot = bot

    @discord.ui.button(label="Again", custom_id="again:1")
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.bot.clicks.append(interaction.user.id)
        await interaction.response.send_message(f"again by {interaction.user.name}",
                                                ephemeral=True)


class EditButtons(discord.ui.View):
    """Type 7 (update the message) and type 6 (defer, then edit it through the token)."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Update", custom_id="edit:update")
    async def update(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.edit_message(content="updated", view=None)

    @discord.ui.button(label="Later", custom_id="edit:later")
    async def later(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content="edited after defer")


class StylePicker(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.select(custom_id="style", options=[discord.SelectOption(label="anime"),
                                                   discord.SelectOption(label="photo")])
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        await interaction.response.send_message(f"style {select.values[0]}", ephemeral=True)


class PromptModal(discord.ui.Modal, title="Remix"):
    prompt = discord.ui.TextInput(label="Prompt", custom_id="remix:prompt")

    def __init__(self, bot: MiniBot) -> None:
        super().__init__(custom_id="remix:modal")
        self.bot = bot

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.bot.remixes.append(self.prompt.value)
        await interaction.response.send_message(
            f"remixing {self.prompt.value}", file=discord.File(_bytes_io(PNG_1PX), "remix.png"))


class MiniBot(discord.Client):
    def __init__(self) -> None:
        intents = discord.Intents.default()
        super().__init__(intents=intents, guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.clicks: list[int] = []
        self.remixes: list[str] = []
        self.reactions: list[tuple[int, str]] = []
        self.errors: list[discord.HTTPException] = []
        self.release = asyncio.Event()
        self.ack_gate = asyncio.Event()
        self.add_view(AgainButton(self))
        self.add_view(EditButtons())
        self.add_view(StylePicker())

        @self.tree.command(name="draw", description="Draw something")
        async def draw(interaction: discord.Interaction, prompt: str,
                       image: discord.Attachment | None = None, wait: bool = False) -> None:
            await interaction.response.defer(thinking=True)
            data = await image.read() if image else PNG_1PX
            if wait:
                await self.release.wait()
            try:
                await interaction.followup.send(f"drew {prompt}", view=AgainButton(self),
                                                file=discord.File(_bytes_io(data), "grid.png"))
            except discord.HTTPException as exc:
                self.errors.append(exc)
                await interaction.channel.send(f"{interaction.user.mention} drew {prompt}")

        @self.tree.command(name="slowack", description="Answer only when the test says so")
        async def slowack(interaction: discord.Interaction) -> None:
            await self.ack_gate.wait()
            try:
                await interaction.response.defer()
            except discord.HTTPException as exc:
                self.errors.append(exc)

        @self.tree.command(name="progress", description="Edit the original a few ways")
        async def progress(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await interaction.edit_original_response(content="step 1 of 2")
            await interaction.edit_original_response(
                content="step 2 of 2", attachments=[discord.File(_bytes_io(PNG_1PX), "p.png")])
            webhook = discord.Webhook.partial(interaction.application_id, interaction.token,
                                              client=self)
            await webhook.edit_message("@original", content="done", view=EditButtons())
            extra = await interaction.followup.send("extra", wait=True)
            await extra.delete()

        @self.tree.command(name="remix", description="Open a modal")
        async def remix(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(PromptModal(self))

        @self.tree.command(name="big", description="Upload too much")
        async def big(interaction: discord.Interaction,
                      megabytes: app_commands.Range[int, 1, 30]) -> None:
            await interaction.response.defer()
            try:
                await interaction.followup.send(
                    file=discord.File(_bytes_io(b"\0" * (megabytes << 20)), "big.png"))
            except discord.HTTPException as exc:
                self.errors.append(exc)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s before re-identifying (Discord's identify limit); not here."""

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.reactions.append((payload.user_id, str(payload.emoji)))


def _bytes_io(data: bytes):
    import io

    return io.BytesIO(data)


@pytest.fixture
async def bot(discord_emulator: Emulator):
    client = MiniBot()
    task = asyncio.create_task(client.start(discord_emulator.token))
    try:
        await asyncio.wait_for(client.wait_until_ready(), 30)
        await client.tree.sync()
        yield client
    finally:
        await client.close()
        await asyncio.wait_for(task, 30)


# --- behaviour ----------------------------------------------------------------------------------


async def test_login_ready_and_guild_state(discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    assert bot.user.id == emu.bot.id
    assert bot.application_id == emu.application_id
    guild = bot.get_guild(emu.guild.id)
    assert guild is not None and guild.get_channel(emu.nsfw_channel.id).is_nsfw()
    assert guild.get_role(emu.moderator_role.id).permissions.manage_guild
    assert guild.me.guild_permissions.send_messages
    assert {r.route for r in emu.requests} >= {"/users/@me", "/oauth2/applications/@me"}
    assert emu.find_command("draw", emu.guild.id)["options"][0]["name"] == "prompt"


async def test_slash_defer_followup_with_file_and_button(discord_emulator: Emulator,
                                                         bot: MiniBot) -> None:
    emu = discord_emulator
    iid = await emu.send_slash("draw", {"prompt": "a cat"}, user=emu.alice)
    inter = await emu.wait_for_response(iid)
    assert inter.initial_response == 5
    assert inter.responded_at - inter.created_at < emu.response_deadline

    msg = await emu.wait_for(lambda: (m := emu.original_message(iid)) and not m.loading and m)
    assert msg.content == "drew a cat"
    assert msg.attachments[0].filename == "grid.png"
    assert msg.attachments[0].data == PNG_1PX
    assert msg.custom_ids() == ["again:1"]
    upload = [r for r in emu.interaction_responses(iid) if r.files][0]
    assert upload.files[0].data == PNG_1PX

    click = await emu.click(msg, "again:1", user=emu.bob)
    await emu.wait_for(lambda: emu.original_message(click))
    reply = emu.original_message(click)
    assert reply.content == "again by bob" and reply.ephemeral
    assert bot.clicks == [emu.bob.id]
    assert emu.violations == []


async def test_slash_attachment_option_is_downloadable(discord_emulator: Emulator,
                                                       bot: MiniBot) -> None:
    emu = discord_emulator
    image = emu.upload("sketch.png", PNG_1PX)
    iid = await emu.send_slash("draw", {"prompt": "x", "image": image})
    assert emu.interaction(iid).data["resolved"]["attachments"][str(image.id)]["width"] == 1
    msg = await emu.wait_for(lambda: (m := emu.original_message(iid)) and m.attachments and m)
    assert msg.attachments[0].data == PNG_1PX


async def test_unknown_option_is_a_test_error(discord_emulator: Emulator, bot: MiniBot) -> None:
    with pytest.raises(EmulatorUsageError, match="no option 'colour'"):
        await discord_emulator.send_slash("draw", {"prompt": "x", "colour": "red"})
    with pytest.raises(EmulatorUsageError, match="requires options"):
        await discord_emulator.send_slash("draw", {})
    with pytest.raises(EmulatorUsageError, match="outside"):
        await discord_emulator.send_slash("big", {"megabytes": 31})


async def test_wrong_token_is_refused(discord_emulator: Emulator) -> None:
    client = MiniBot()
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    await client.close()
    assert discord_emulator.requests[-1].status == 401


async def test_modal_submit(discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    opener = await emu.send_slash("remix", user=emu.bob)
    inter = await emu.wait_for_response(opener)
    assert inter.initial_response == 9 and inter.modal["title"] == "Remix"
    submit = await emu.submit_modal(opener, {"remix:prompt": "a dog"})
    msg = await emu.wait_for(lambda: emu.original_message(submit))
    assert msg.content == "remixing a dog" and bot.remixes == ["a dog"]
    assert msg.attachments[0].data == PNG_1PX  # type 4 callback as multipart


async def test_reaction_reaches_the_bot(discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    sent = await bot.get_channel(emu.general.id).send("react to me")
    await emu.add_reaction(sent.id, "🔁", emu.bob)
    await emu.wait_for(lambda: bot.reactions, what="reaction event")
    assert bot.reactions == [(emu.bob.id, "🔁")]


async def test_expired_token_gives_401_and_channel_fallback_works(discord_emulator: Emulator,
                                                                  bot: MiniBot) -> None:
    emu = discord_emulator
    iid = await emu.send_slash("draw", {"prompt": "slow", "wait": True})
    await emu.wait_for_response(iid)
    emu.clock.advance(15 * 60 + 1)
    bot.release.set()
    msg = await emu.wait_for_message(lambda m: m.content.endswith("drew slow"))
    assert msg.content == f"<@{emu.alice.id}> drew slow" and msg.interaction_id is None
    assert [(e.status, e.code) for e in bot.errors] == [(401, 50027)]
    assert [v.rule for v in emu.violations] == ["http-401-50027"]


async def test_late_and_double_acknowledgement(discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    sent = await bot.get_channel(emu.general.id).send("x", view=AgainButton(bot))
    iid = await emu.click(sent.id, "again:1")
    inter = await emu.wait_for_response(iid)
    route = discord.http.Route("POST", "/interactions/{i}/{t}/callback", i=iid, t=inter.token)
    with pytest.raises(discord.HTTPException) as again:
        await bot.http.request(route, json={"type": 6})
    assert (again.value.status, again.value.code) == (400, 40060)

    late = await emu.send_slash("slowack")
    emu.clock.advance(emu.response_deadline + 0.5)
    bot.ack_gate.set()
    await emu.wait_for(lambda: bot.errors, what="the late defer to fail")
    assert [(e.status, e.code) for e in bot.errors] == [(404, 10062)]
    assert not emu.interaction(late).acknowledged
    assert [v.rule for v in emu.violations] == ["http-400-40060", "late-callback",
                                                "http-404-10062"]


async def test_six_action_rows_are_rejected(discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    rows = [{"type": 1, "components": [{"type": 2, "style": 1, "label": str(i),
                                         "custom_id": f"b{i}"}]} for i in range(6)]
    route = discord.http.Route("POST", "/channels/{c}/messages", c=emu.general.id)
    with pytest.raises(discord.HTTPException) as err:
        await bot.http.request(route, json={"content": "rows", "components": rows})
    assert (err.value.status, err.value.code) == (400, 50035)
    assert "components" in err.value.text or "components" in str(emu.violations[-1].detail)
    assert emu.messages_in(emu.general) == []


async def test_long_custom_id_duplicate_and_label_rejected(discord_emulator: Emulator,
                                                           bot: MiniBot) -> None:
    emu = discord_emulator
    route = discord.http.Route("POST", "/channels/{c}/messages", c=emu.general.id)
    bad = [
        [{"type": 2, "style": 1, "label": "x", "custom_id": "c" * 101}],
        [{"type": 2, "style": 1, "label": "x", "custom_id": "a"},
         {"type": 2, "style": 1, "label": "y", "custom_id": "a"}],
        [{"type": 2, "style": 1, "label": "L" * 81, "custom_id": "b"}],
    ]
    for buttons in bad:
        with pytest.raises(discord.HTTPException) as err:
            await bot.http.request(route, json={"components": [{"type": 1, "components": buttons}]})
        assert err.value.code == 50035
    with pytest.raises(discord.HTTPException) as err:
        await bot.http.request(route, json={"content": "c" * 2001})
    assert err.value.code == 50035


async def test_oversized_file_gets_413(discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    iid = await emu.send_slash("big", {"megabytes": 11})
    await emu.wait_for(lambda: bot.errors, what="the upload to fail")
    assert [(e.status, e.code) for e in bot.errors] == [(413, 40005)]
    assert emu.followups(iid) == []


async def test_unknown_channel_and_missing_permissions(discord_emulator: Emulator,
                                                       bot: MiniBot) -> None:
    emu = discord_emulator
    locked = bot.get_channel(emu.locked_channel.id)
    with pytest.raises(discord.Forbidden) as forbidden:
        await locked.send("hello")
    assert forbidden.value.code == 50013
    mod_log = bot.get_channel(emu.mod_log.id)
    await emu.delete_channel(emu.mod_log)
    await emu.wait_for(lambda: bot.get_channel(emu.mod_log.id) is None, what="CHANNEL_DELETE")
    with pytest.raises(discord.NotFound) as missing:
        await mod_log.send("hello")
    assert missing.value.code == 10003


async def test_direct_messages(discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    user = await bot.fetch_user(emu.bob.id)
    await user.send("your image is ready", file=discord.File(_bytes_io(PNG_1PX), "a.png"))
    [dm] = emu.messages_in(emu.dm_channel(emu.bob))
    assert dm.content == "your image is ready" and dm.attachments[0].data == PNG_1PX
    emu.alice.dms_closed = True
    with pytest.raises(discord.Forbidden) as closed:
        await (await bot.fetch_user(emu.alice.id)).send("hi")
    assert closed.value.code == 50007


async def test_gateway_resume_after_drop(discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    session = emu.gateway.live_sessions[0]
    await emu.drop_gateway()
    await emu.wait_for(lambda: session.resumes == 1 and session.connected, what="RESUME")
    assert emu.gateway.identify_count == 1
    iid = await emu.send_slash("draw", {"prompt": "after resume"})
    await emu.wait_for_response(iid)


async def test_unknown_session_forces_a_fresh_identify(discord_emulator: Emulator,
                                                       bot: MiniBot) -> None:
    emu = discord_emulator
    await emu.invalidate_sessions()
    await emu.wait_until_connected(identifies=2)
    iid = await emu.send_slash("draw", {"prompt": "after identify"})
    await emu.wait_for_response(iid)

    await emu.reconnect_gateway()  # op 7: the client will try to RESUME...
    emu.gateway.sessions.clear()  # ...a session Discord forgot: op 9, then IDENTIFY
    await emu.wait_until_connected(identifies=3)
    iid = await emu.send_slash("draw", {"prompt": "after another identify"})
    await emu.wait_for_response(iid)


async def test_edits_of_the_original_and_component_updates(discord_emulator: Emulator,
                                                            bot: MiniBot) -> None:
    emu = discord_emulator
    iid = await emu.send_slash("progress")
    await emu.wait_for(lambda: any(r.method == "DELETE" for r in emu.interaction_responses(iid)),
                       what="the follow-up to be deleted")
    msg = emu.original_message(iid)
    assert msg.content == "done", [(r.method, r.json) for r in emu.interaction_responses(iid)]
    assert len(msg.edit_times) == 3 and msg.edit_times == sorted(msg.edit_times)
    assert [a.filename for a in msg.attachments] == ["p.png"]  # kept by the last edit
    assert emu.followups(iid) == []  # "extra" was posted then deleted
    assert msg.custom_ids() == ["edit:update", "edit:later"]

    later = await emu.click(msg, "edit:later", user=emu.bob)
    await emu.wait_for(lambda: msg.content == "edited after defer")
    assert emu.interaction(later).initial_response == 6
    update = await emu.click(msg, "edit:update")
    await emu.wait_for(lambda: msg.content == "updated")
    assert emu.interaction(update).initial_response == 7 and msg.components == []
    assert emu.violations == []


async def test_mentions_follow_allowed_mentions(discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    channel = bot.get_channel(emu.general.id)
    text = f"<@{emu.alice.id}> and <@{emu.bob.id}>"
    only_alice = discord.AllowedMentions(users=[discord.Object(emu.alice.id)])
    pinged = await channel.send(text, allowed_mentions=only_alice)
    silent = await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
    assert [u.name for u in emu.store[pinged.id].mentions] == ["alice"]
    assert emu.store[silent.id].mentions == []
    assert [u.id for u in pinged.mentions] == [emu.alice.id]  # discord.py parsed our payload


async def test_embed_and_modal_limits(discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    channel = bot.get_channel(emu.general.id)
    with pytest.raises(discord.HTTPException) as err:
        await channel.send(embed=discord.Embed(title="t" * 257))
    assert err.value.code == 50035
    await channel.send(embed=discord.Embed(title="ok", description="d" * 4096))

    # a command the bot does not know: the test answers it itself, through discord.py's HTTP
    iid = await emu.send_slash("ghost")
    inter = emu.interaction(iid)
    route = discord.http.Route("POST", "/interactions/{i}/{t}/callback", i=iid, t=inter.token)
    text_input = {"type": 1, "components": [{"type": 4, "custom_id": "p", "label": "P", "style": 1}]}
    with pytest.raises(discord.HTTPException) as err:
        await bot.http.request(route, json={"type": 9, "data": {
            "custom_id": "m", "title": "T" * 46, "components": [text_input]}})
    assert err.value.code == 50035 and "title" in emu.violations[-1].detail
    await bot.http.request(route, json={"type": 9, "data": {
        "custom_id": "m", "title": "Remix", "components": [text_input]}})
    assert inter.initial_response == 9 and inter.modal["title"] == "Remix"


async def test_rate_limits(discord_emulator: Emulator, bot: MiniBot) -> None:
    import aiohttp

    emu = discord_emulator
    route = "/channels/{channel_id}/messages"
    emu.set_rate_limit("POST", route, 2, 60.0)
    url = f"{emu.api_base}/channels/{emu.mod_log.id}/messages"
    headers = {"Authorization": f"Bot {emu.token}"}
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(3):
            async with session.post(url, json={"content": "x"}, headers=headers) as resp:
                statuses.append((resp.status, resp.headers.get("X-RateLimit-Remaining")))
                body = await resp.json()
    assert statuses == [(200, "1"), (200, "0"), (429, "0")]
    assert body["retry_after"] > 59 and body["global"] is False

    emu.set_rate_limit("POST", route, 2, 0.2)
    channel = bot.get_channel(emu.general.id)
    for i in range(4):  # discord.py reads the headers and waits on its own: no 429
        await channel.send(str(i))
    assert [m.content for m in emu.messages_in(emu.general)] == ["0", "1", "2", "3"]
    assert [v.rule for v in emu.violations] == ["http-429-0"]  # only the raw client's


async def test_guild_upload_limit_reaches_the_bot(discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    emu.guild.attachment_size_limit = 50 << 20  # a boosted server
    iid = await emu.send_slash("big", {"megabytes": 11})
    assert emu.interaction(iid).payload["attachment_size_limit"] == 50 << 20
    msg = await emu.wait_for(lambda: (m := emu.original_message(iid)) and m.attachments and m)
    assert msg.attachments[0].size == 11 << 20 and bot.errors == []


def test_file_count_and_request_size_rules() -> None:
    from playground.emulator.rules import ApiError, check_message
    from playground.emulator.state import RecordedFile

    def files(n: int, size: int = 1) -> list[RecordedFile]:
        return [RecordedFile(f"files[{i}]", f"{i}.png", "image/png", b"\0" * size)
                for i in range(n)]

    check_message({}, files(10), 10 << 20)
    with pytest.raises(ApiError) as err:
        check_message({}, files(11), 10 << 20)
    assert (err.value.status, err.value.code) == (400, 50035) and "files" in err.value.errors
    with pytest.raises(ApiError) as err:  # each file fits, the request (25 MiB cap) does not
        check_message({}, files(3, 9 << 20), 50 << 20)
    assert (err.value.status, err.value.code) == (413, 40005)


async def test_ephemeral_messages_are_not_reachable_through_the_channel(
        discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    sent = await bot.get_channel(emu.general.id).send("x", view=AgainButton(bot))
    iid = await emu.click(sent.id, "again:1")
    reply = await emu.wait_for(lambda: emu.original_message(iid))
    assert reply.ephemeral
    assert [m.id for m in emu.messages_in(emu.general, include_ephemeral=False)] == [sent.id]
    with pytest.raises(discord.NotFound):
        await bot.get_channel(emu.general.id).fetch_message(reply.id)
    assert "GET /channels/{channel_id}/messages/{message_id} -> 404" in emu.transcript()


async def test_first_followup_fills_the_deferred_message_unless_it_was_deleted(
        discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    iid = await emu.send_slash("ghost")  # answered by hand below, through discord.py's HTTP
    inter = emu.interaction(iid)
    http = bot.http

    async def call(method: str, path: str, **kw):
        route = discord.http.Route(method, path, i=iid, t=inter.token, a=emu.application_id)
        return await http.request(route, **kw)

    await call("POST", "/interactions/{i}/{t}/callback", json={"type": 5})
    thinking = emu.original_message(iid)
    assert thinking.loading and not thinking.ephemeral
    first = await call("POST", "/webhooks/{a}/{t}?wait=true", json={"content": "one", "flags": 64})
    assert int(first["id"]) == thinking.id and not thinking.loading
    assert not thinking.ephemeral  # the deferral decided that, as on Discord
    await call("DELETE", "/webhooks/{a}/{t}/messages/@original")
    second = await call("POST", "/webhooks/{a}/{t}?wait=true", json={"content": "two", "flags": 64})
    assert int(second["id"]) != thinking.id and emu.store[int(second["id"])].ephemeral
    assert [m.content for m in emu.followups(iid)] == ["two"]


async def test_blocked_event_loop_shows_as_late_heartbeat() -> None:
    import time

    from tests.emulator_client import running_emulator

    async with running_emulator(heartbeat_interval_ms=300) as emu:
        client = MiniBot()
        task = asyncio.create_task(client.start(emu.token))
        try:
            await emu.wait_until_connected()
            await emu.wait_for(lambda: emu.gateway.live_sessions[0].heartbeats >= 2)
            assert emu.violations == []
            time.sleep(1.0)  # the bug under test: blocking work on the event loop
            await emu.wait_for(lambda: [v for v in emu.violations if v.rule == "heartbeat-late"])
        finally:
            await client.close()
            await asyncio.wait_for(task, 30)


class UpscaleButton(discord.ui.DynamicItem[discord.ui.Button], template=r"up:(?P<job>\d+):(?P<i>\d)"):
    """State lives in the custom_id only, so a restarted client can still answer it."""

    def __init__(self, job: int, i: int) -> None:
        super().__init__(discord.ui.Button(label=f"U{i}", custom_id=f"up:{job}:{i}"))
        self.job, self.i = job, i

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(int(match["job"]), int(match["i"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"upscaling {self.job}/{self.i}")


async def test_dynamic_buttons_work_after_a_client_restart(discord_emulator: Emulator) -> None:
    emu = discord_emulator

    async def start() -> tuple[MiniBot, asyncio.Task]:
        client = MiniBot()
        client.add_dynamic_items(UpscaleButton)
        return client, asyncio.create_task(client.start(emu.token))

    first, task = await start()
    await emu.wait_until_connected()
    await asyncio.wait_for(first.wait_until_ready(), 30)
    view = discord.ui.View(timeout=None).add_item(UpscaleButton(42, 2))
    sent = await first.get_channel(emu.general.id).send("grid", view=view)
    await first.close()
    await asyncio.wait_for(task, 30)

    second, task = await start()
    try:
        await emu.wait_until_connected(identifies=2)
        iid = await emu.click(sent.id, "up:42:2", user=emu.bob)
        reply = await emu.wait_for(lambda: emu.original_message(iid))
        assert reply.content == "upscaling 42/2"
    finally:
        await second.close()
        await asyncio.wait_for(task, 30)


async def test_select_menu(discord_emulator: Emulator, bot: MiniBot) -> None:
    emu = discord_emulator
    sent = await bot.get_channel(emu.general.id).send("pick", view=StylePicker())
    iid = await emu.click(sent.id, "style", values=["photo"], user=emu.bob)
    reply = await emu.wait_for(lambda: emu.original_message(iid))
    assert reply.content == "style photo" and reply.ephemeral
    with pytest.raises(EmulatorUsageError, match="no component 'nope'"):
        await emu.click(sent.id, "nope")
