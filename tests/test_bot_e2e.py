"""End to end: the real discord.py bot, real worker and tiny diffusion model, real SQLite store,
against the loopback Discord emulator. Each test is one thing a community member would do."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.client import ImagineBot, start_bot, stop_bot
from bot.services import Services
from core.config import Settings
from core.jobs import JobStatus
from core.store import Store
from generation.worker import Worker

GRID_BUTTONS = 15  # U1-4, V1-4 subtle, V1-4 strong, reroll, remix, delete


@dataclass
class Harness:
    emu: Any
    settings: Settings
    store: Store
    engine: Any
    real_postprocess: bool = True
    bot: ImagineBot | None = None

    async def start(self, *, start_worker: bool = True) -> ImagineBot:
        worker = Worker(
            self.store,
            self.engine,
            self.settings,
            postprocess=_postprocess(self.settings, self.store) if self.real_postprocess else None,
        )
        services = Services(
            settings=self.settings, store=self.store, engine=self.engine, worker=worker
        )
        self.bot = await start_bot(services, timeout=20, start_worker=start_worker)
        await self.emu.wait_until_connected()
        return self.bot

    async def stop(self, *, finish_running: bool = True) -> None:
        if self.bot is not None:
            await stop_bot(self.bot, finish_running=finish_running)
            self.bot = None

    async def imagine(self, prompt: str, **options: Any) -> int:
        user = options.pop("user", None)
        channel = options.pop("channel", None)
        return await self.emu.send_slash(
            "imagine", {"prompt": prompt, **options}, user=user, channel=channel
        )

    async def result_of(self, iid: int, timeout: float = 120) -> Any:
        """The message that carries a finished job's images for interaction ``iid``."""
        return await self.emu.wait_for(
            lambda: _with_files(self.emu.original_message(iid)), timeout, f"result of {iid}"
        )

    async def delivered(self, iid: int, timeout: float = 30) -> Any:
        """The job of interaction ``iid`` once the store says it was delivered."""
        job = await self.job_for(iid)
        for _ in range(int(timeout / 0.05)):
            job = await self.store.get_job(job.id)
            if job.delivered_at is not None:
                return job
            await asyncio.sleep(0.05)
        raise AssertionError(f"job {job.id} was not marked delivered")

    async def job_for(self, iid: int) -> Any:
        """The job row created for interaction ``iid`` (matched by its token)."""
        token = self.emu.interaction(iid).token

        async def find() -> Any:
            async with self.store.db.execute("SELECT id FROM jobs") as cur:
                ids = [r[0] for r in await cur.fetchall()]
            for job_id in ids:
                job = await self.store.get_job(job_id)
                if job and job.delivery.get("token") == token:
                    return job
            return None

        for _ in range(400):
            job = await find()
            if job is not None:
                return job
            await asyncio.sleep(0.05)
        raise AssertionError(f"no job for interaction {iid}")


def _postprocess(settings: Settings, store: Store) -> Any:
    from bot.runner import make_postprocess

    return make_postprocess(settings, store)


def _with_files(msg: Any) -> Any:
    return msg if msg is not None and msg.attachments and msg.components else None


@contextlib.asynccontextmanager
async def _harness(
    emu: Any,
    engine: Any,
    tmp_path: Path,
    *,
    real_postprocess: bool,
    start_worker: bool = True,
    model: dict[str, Any] | None = None,
    **discord: Any,
) -> AsyncIterator[Harness]:
    settings = Settings(
        data_dir=tmp_path,
        model={"name": "tiny", "device": "cpu", "default_steps": 2, **(model or {})},
        discord={
            "token": emu.token,
            "api_base": emu.api_base,
            "gateway_url": emu.gateway_url,
            "dev_guilds": [emu.guild.id],
            "progress_interval_s": 0.2,
            **discord,
        },
    )
    store = await Store.open(settings.db_path)
    h = Harness(emu, settings, store, engine, real_postprocess=real_postprocess)
    await h.start(start_worker=start_worker)
    try:
        yield h
    finally:
        await h.stop()
        await store.close()


@pytest.fixture
async def harness(discord_emulator, tiny_engine, tmp_path: Path) -> AsyncIterator[Harness]:
    """The bot with the real post-processing: moderation, watermark, provenance."""
    async with _harness(discord_emulator, tiny_engine, tmp_path, real_postprocess=True) as h:
        yield h


@pytest.fixture
async def quick_harness(discord_emulator, tiny_engine, tmp_path: Path) -> AsyncIterator[Harness]:
    """The bot with the worker's plain PNG saver (its default without moderation), for tests
    about Discord behaviour only: the watermark costs about a second per image on a busy CPU, and
    the real post-processing is covered by the tests that use ``harness``."""
    async with _harness(discord_emulator, tiny_engine, tmp_path, real_postprocess=False) as h:
        yield h


def hold_steps(
    engine: Any,
    monkeypatch: pytest.MonkeyPatch,
    until: Callable[[], bool],
    picture: Image.Image | None = None,
) -> None:
    """Each denoising step waits (on the GPU thread, up to 1 s) for ``until``: whether a
    progress edit gets through must not depend on how fast this machine runs the steps relative
    to the progress throttle. ``picture`` replaces the latents' preview."""
    generate = engine.generate

    def held(reqs: Any, *, progress: Any = None, **kwargs: Any) -> Any:
        def report(event: Any) -> None:
            if picture is not None:
                event.__dict__["preview"] = picture  # what the cached property would return
            if progress is not None:
                progress(event)
            deadline = time.monotonic() + 1
            while not until() and time.monotonic() < deadline:
                time.sleep(0.02)

        return generate(reqs, progress=report, **kwargs)

    monkeypatch.setattr(engine, "generate", held)


def step_edits(emu: Any, iid: int | None = None) -> list[Any]:
    """The "Generating... step" edits (of interaction ``iid``, or of any)."""
    requests = emu.interaction_responses(iid) if iid is not None else list(emu.requests)
    return [
        r
        for r in requests
        if r.method == "PATCH" and "Generating" in str((r.json or {}).get("content", ""))
    ]


async def test_imagine_defers_shows_progress_and_delivers_grid_with_buttons(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = harness.emu
    hold_steps(harness.engine, monkeypatch, lambda: bool(step_edits(emu)))
    iid = await harness.imagine("a lighthouse at dusk --ar 3:2 --seed 7 --steps 8")
    inter = await emu.wait_for_response(iid, timeout=3)
    assert inter.initial_response == 5 and inter.responded_at - inter.created_at < 3
    result = await harness.result_of(iid)
    assert len(result.custom_ids()) == GRID_BUTTONS
    assert "seed" in result.content and "7" in result.content
    assert f"<@{emu.alice.id}>" in result.content
    edits = [r for r in emu.interaction_responses(iid) if r.method == "PATCH"]
    texts = [str((r.json or {}).get("content", "")) for r in edits]
    assert any("position" in t or "Queued" in t for t in texts), texts
    assert any(t.startswith("Generating\u2026 step") for t in texts), texts
    # Throttled: at most one edit per interval (arrival times carry HTTP latency, hence +2).
    progress_at = [r.at for r in edits if not (r.json or {}).get("components")]
    interval = harness.settings.discord.progress_interval_s
    span = progress_at[-1] - progress_at[0]
    assert len(progress_at) - 1 <= span / interval + 2, f"not throttled: {progress_at}"
    grid = Image.open(io.BytesIO(result.attachments[0].data))
    assert grid.width > grid.height  # 3:2 grid of 3:2 images
    assert not emu.violations
    job = await harness.delivered(iid)
    assert job.status == JobStatus.DONE


async def test_provenance_names_the_job_of_a_delivered_image(harness: Harness) -> None:
    emu = harness.emu
    iid = await harness.imagine("a red fox in snow --count 1 --steps 2")
    result = await harness.result_of(iid)
    job = await harness.delivered(iid)
    png = result.attachments[0].data
    ask = await emu.send_slash(
        "provenance", {"image": emu.upload("found-online.png", png)}, user=emu.bob
    )
    answer = await emu.wait_for(
        lambda: (m := emu.original_message(ask)) and job.id in m.content and m, 60, "provenance"
    )
    assert answer.ephemeral
    assert f"<@{emu.alice.id}>" in answer.content

    again = await emu.send_slash("show", {"job": job.id}, user=emu.bob)
    reposted = await harness.result_of(again)
    assert reposted.id != result.id and reposted.custom_ids() == result.custom_ids()
    assert "GPU energy: not measured" in reposted.content  # no energy counter on a CPU


async def test_collaboration_upscale_variation_reroll_remix_and_reaction(
    quick_harness: Harness,
) -> None:
    harness = quick_harness
    emu = harness.emu
    iid = await harness.imagine("a paper boat on a pond --count 2 --steps 2 --seed 3")
    grid = await harness.result_of(iid)
    parent = await harness.delivered(iid)

    # U2 by the author: an upscale of image 2, twice the size.
    up = await emu.click(grid, f"ib:u:{parent.id}:1", user=emu.alice)
    up_msg = await harness.result_of(up)
    upscaled = await harness.delivered(up)
    assert upscaled.kind.value == "upscale" and upscaled.parent_image_index == 1
    big = Image.open(io.BytesIO(up_msg.attachments[0].data))
    assert big.width == 2 * parent.params["width"]
    assert "Upscale of" in up_msg.content and "image 2" in up_msg.content

    # V1 by someone else: charged to bob, credited to both, and it says whose image it varies.
    v1 = await emu.click(grid, f"ib:v:{parent.id}:0:s", user=emu.bob)
    v1_msg = await harness.result_of(v1)
    variation = await harness.delivered(v1)
    assert variation.user_id == emu.bob.id
    assert set(variation.credited_user_ids) == {emu.alice.id, emu.bob.id}
    assert f"Variation of <@{emu.alice.id}>'s image 1 by <@{emu.bob.id}>" in v1_msg.content

    # A reaction is a shortcut for reroll; the result replaces the bot's "queued" message.
    await emu.add_reaction(
        grid, "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}", emu.bob
    )
    rerolled = await emu.wait_for_message(
        lambda m: m.interaction_id is None and m.attachments and "Reroll of" in m.content, 120
    )
    assert f"<@{emu.bob.id}>" in rerolled.content

    # Remix: a modal to edit the prompt, then new images with it.
    opened = await emu.click(grid, f"ib:m:{parent.id}", user=emu.bob)
    await emu.wait_for(lambda: emu.interaction(opened).modal, 10, "remix modal")
    sub = await emu.submit_modal(
        opened, {"prompt": "a paper boat on a stormy sea --steps 2"}, user=emu.bob
    )
    remix_msg = await harness.result_of(sub)
    remixed = await harness.delivered(sub)
    assert remixed.params["prompt"].startswith("a paper boat on a stormy sea")
    assert "Remix" in remix_msg.content
    assert not [v for v in emu.violations if v.rule != "heartbeat-late"]

    # The author deletes the original; its buttons then answer with a clear message.
    gone = await emu.click(grid, f"ib:d:{parent.id}", user=emu.alice)
    await emu.wait_for(lambda: emu.store[grid.id].deleted, 10, "deleted grid")
    assert emu.interaction(gone).acknowledged


async def _ephemeral_reply(emu: Any, iid: int, timeout: float = 20) -> Any:
    """The ephemeral message the user sees for interaction ``iid`` (follow-up or edited original)."""

    def find() -> Any:
        for msg in [emu.original_message(iid), *emu.followups(iid)]:
            if msg is not None and msg.ephemeral and msg.content and not msg.deleted:
                return msg
        return None

    return await emu.wait_for(find, timeout, f"ephemeral reply to {iid}")


async def test_blocked_prompt_gets_a_reason_and_reaches_the_moderation_log(
    harness: Harness,
) -> None:
    emu = harness.emu
    setup = await emu.send_slash("policy log-channel", {"channel": emu.mod_log}, user=emu.moderator)
    await _ephemeral_reply(emu, setup)
    iid = await harness.imagine("a naked woman on a beach", user=emu.bob)
    reply = await _ephemeral_reply(emu, iid)
    assert "blocked" in reply.content.lower()
    public = emu.original_message(iid)
    assert public is None or public.deleted, "the public 'thinking' message is removed"
    report = await emu.wait_for_message(lambda m: m.channel_id == emu.mod_log.id and m.embeds, 10)
    embed = report.embeds[0]
    assert "naked woman" in embed["description"]
    assert str(emu.bob.id) in str(embed["fields"])
    async with harness.store.db.execute(
        "SELECT action, stage, user_id FROM audit_log WHERE user_id = ?", (emu.bob.id,)
    ) as cur:
        assert [tuple(r) for r in await cur.fetchall()] == [("block", "prompt", emu.bob.id)]
    async with harness.store.db.execute("SELECT COUNT(*) FROM jobs") as cur:
        assert (await cur.fetchone())[0] == 0, "a blocked prompt never becomes a job"
    audit = await emu.send_slash("policy audit", {}, user=emu.moderator)
    entry = (await _ephemeral_reply(emu, audit)).content
    assert "block (prompt)" in entry and f"<@{emu.bob.id}>" in entry


async def test_policy_change_applies_to_the_next_prompt_and_needs_a_moderator(
    harness: Harness,
) -> None:
    emu = harness.emu
    denied = await emu.send_slash("policy ban", {"term": "pineapple"}, user=emu.bob)
    assert "only moderators" in (await _ephemeral_reply(emu, denied)).content
    done = await emu.send_slash("policy ban", {"term": "pineapple"}, user=emu.moderator)
    assert "pineapple" in (await _ephemeral_reply(emu, done)).content
    iid = await harness.imagine("a pineapple pizza", user=emu.bob)
    assert "blocked" in (await _ephemeral_reply(emu, iid)).content.lower()
    shown = await emu.send_slash("policy show", {}, user=emu.moderator)
    assert "pineapple" in (await _ephemeral_reply(emu, shown)).content
    assert int(emu.find_command("policy", emu.guild.id)["default_member_permissions"]) == 1 << 5


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ("\u200b\u200d ", "empty"),
        ("a fox --zoom 3", "unknown parameter --zoom"),
        ("a fox --ar 10:1", "1:4 to 4:1"),
        ("x" * 2001, "limit is 2000"),
    ],
    ids=["invisible", "unknown-param", "extreme-ratio", "too-long"],
)
async def test_bad_prompts_get_a_clear_ephemeral_message(
    harness: Harness, prompt: str, words: str
) -> None:
    iid = await harness.imagine(prompt)
    reply = await _ephemeral_reply(harness.emu, iid)
    assert words in reply.content
    assert not harness.emu.violations


async def test_bad_attachments_are_refused_clearly(harness: Harness) -> None:
    emu = harness.emu
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    bomb = io.BytesIO()  # 50 megapixels in a few kilobytes: decoding it would eat the machine
    Image.new("1", (10_000, 5_000)).save(bomb, format="PNG")
    cases = [
        (emu.upload("notes.txt", b"hello", content_type="text/plain"), "not an image"),
        (
            emu.upload("fake.png", b"\x89PNG not really", content_type="image/png"),
            "not a recognised image",
        ),
        (emu.upload("anim.gif", gif.getvalue(), content_type="image/gif"), "animated"),
        (emu.upload("bomb.png", bomb.getvalue(), content_type="image/png"), "megapixels"),
    ]
    for attachment, words in cases:
        iid = await harness.imagine("a fox", image=attachment)
        assert words in (await _ephemeral_reply(emu, iid)).content
    assert not emu.violations


async def test_caps_bans_and_dead_buttons_are_explained(harness: Harness) -> None:
    emu = harness.emu
    cap = await emu.send_slash("policy user-cap", {"user": emu.bob, "cap": 0}, user=emu.moderator)
    await _ephemeral_reply(emu, cap)
    iid = await harness.imagine("a fox", user=emu.bob)
    assert "limit" in (await _ephemeral_reply(emu, iid)).content
    ban = await emu.send_slash("policy ban-user", {"user": emu.bob}, user=emu.moderator)
    await _ephemeral_reply(emu, ban)
    iid = await harness.imagine("a fox", user=emu.bob)
    assert "banned" in (await _ephemeral_reply(emu, iid)).content
    # A message with buttons whose job does not exist (deleted from the store, or forged).
    ghost = await emu.send_slash("help", {}, user=emu.alice)
    await _ephemeral_reply(emu, ghost)
    from bot.views import result_view

    channel = harness.bot.get_partial_messageable(emu.general.id, guild_id=emu.guild.id)
    fake = await channel.send("old result", view=result_view("zzzzzzzzzz", 4))
    press = await emu.click(fake.id, "ib:v:zzzzzzzzzz:0:s", user=emu.alice)
    assert "deleted" in (await _ephemeral_reply(emu, press)).content
    press = await emu.click(fake.id, "ib:u:zzzzzzzzzz:0", user=emu.bob)
    assert (
        "deleted" in (await _ephemeral_reply(emu, press)).content
        or "banned" in (await _ephemeral_reply(emu, press)).content
    )
    assert not emu.violations


async def _wait_status(store: Store, status: JobStatus, timeout: float = 120) -> Any:
    for _ in range(int(timeout / 0.05)):
        async with store.db.execute(
            "SELECT id FROM jobs WHERE status = ? LIMIT 1", (status.value,)
        ) as cur:
            row = await cur.fetchone()
        if row:
            return row[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no job reached {status.value}")


def _final_edits(emu: Any, iid: int) -> list[Any]:
    """Requests that put a result (buttons) on interaction ``iid``'s message."""
    return [
        r
        for r in emu.interaction_responses(iid)
        if r.method == "PATCH" and r.ok and isinstance(r.json, dict) and r.json.get("components")
    ]


@pytest.mark.parametrize("finish_running", [True, False], ids=["finish-running", "requeue-running"])
async def test_restart_delivers_every_job_exactly_once_and_old_buttons_work(
    quick_harness: Harness, finish_running: bool
) -> None:
    harness = quick_harness
    emu = harness.emu
    before = await harness.imagine("a cabin in the woods --count 1 --steps 2")
    old_result = await harness.result_of(before)
    old_job = await harness.delivered(before)

    users = [emu.alice, emu.bob, emu.moderator]
    # Different shapes, so the worker cannot co-batch them into one running batch.
    iids = [
        await harness.imagine(f"a cabin number {i} --count 1 --steps 2 --ar {ratio}", user=user)
        for i, (user, ratio) in enumerate(zip(users, ["1:1", "3:2", "2:3"], strict=True))
    ]
    remix = await emu.click(old_result, f"ib:m:{old_job.id}", user=emu.bob)
    await emu.wait_for(lambda: emu.interaction(remix).modal, 10, "remix modal before restart")
    await _wait_status(harness.store, JobStatus.RUNNING)
    # Graceful: the running job finishes (or stops at its next step and goes back to the
    # queue); the others stay queued in the store.
    await harness.stop(finish_running=finish_running)
    async with harness.store.db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'") as cur:
        assert (await cur.fetchone())[0] >= 1, "jobs were still queued at the stop"

    await harness.start()  # a new client and worker on the same store
    for iid in iids:
        await harness.result_of(iid)
        await harness.delivered(iid)
    for iid in [before, *iids]:
        assert len(_final_edits(emu, iid)) == 1, "each result is delivered exactly once"

    # A modal opened before the restart is understood after it (ids + store, no memory).
    submitted = await emu.submit_modal(remix, {"prompt": "a cabin in the snow --count 1"})
    await harness.result_of(submitted)
    assert (await harness.delivered(submitted)).parent_job_id == old_job.id

    # Buttons on a message from before the restart still work (rebuilt from custom_id + store).
    opened = await emu.click(old_result, f"ib:m:{old_job.id}", user=emu.bob)
    await emu.wait_for(lambda: emu.interaction(opened).modal, 10, "remix modal after restart")
    gone = await emu.click(old_result, f"ib:d:{old_job.id}", user=emu.alice)
    await emu.wait_for(lambda: emu.store[old_result.id].deleted, 10, "deleted after restart")
    assert emu.interaction(gone).acknowledged


async def test_after_token_expiry_results_arrive_as_channel_messages(
    quick_harness: Harness,
) -> None:
    harness = quick_harness
    emu = harness.emu
    emu.guild.attachment_size_limit = 6000  # a PNG of noise is bigger: it must be re-encoded
    locked = await harness.imagine(
        "a locked door --count 1 --steps 2", user=emu.alice, channel=emu.locked_channel
    )
    iid = await harness.imagine("a clock tower --count 1 --steps 2", user=emu.bob)
    await emu.wait_for_response(locked)
    await emu.wait_for_response(iid)
    emu.clock.advance(15 * 60 + 1)  # both interaction tokens are now dead

    msg = await emu.wait_for_message(
        lambda m: m.interaction_id is None and m.channel_id == emu.general.id and m.attachments,
        120,
    )
    assert f"<@{emu.bob.id}>" in msg.content
    assert [u.id for u in msg.mentions] == [emu.bob.id], "the user is pinged, nobody else"
    assert msg.custom_ids(), "the channel message carries the buttons too"
    image = msg.attachments[0]
    assert image.size <= 6000 and image.filename.endswith((".webp", ".jpg"))
    Image.open(io.BytesIO(image.data)).load()
    job = await harness.delivered(iid)
    assert job.delivery["result_message_id"] == msg.id

    # The bot may not post in the locked channel: the job records why, nothing hangs.
    stuck = await harness.delivered(locked)
    assert "permission" in stuck.delivery["failed"]


async def test_queue_cancel_settings_stats_and_help(quick_harness: Harness) -> None:
    """With the worker paused, jobs stay queued: the user commands can be checked exactly."""
    harness = quick_harness
    emu = harness.emu
    await harness.stop()
    await harness.start(start_worker=False)

    saved = await emu.send_slash(
        "settings", {"aspect_ratio": "16:9", "private": True}, user=emu.bob
    )
    assert "16:9" in (await _ephemeral_reply(emu, saved)).content
    first = await harness.imagine("a quiet harbour", user=emu.alice)
    # Commands are handled concurrently: Alice's is queued before Bob's is sent.
    await emu.wait_for(
        lambda: (m := emu.original_message(first)) and "position 1" in m.content, 30
    )
    second = await harness.imagine("a quiet harbour at night", user=emu.bob)
    queued = await emu.wait_for(
        lambda: (m := emu.original_message(second)) and "position 2" in m.content and m, 10
    )
    assert queued.ephemeral, "bob's default is private replies"
    bob_job = await harness.job_for(second)
    assert bob_job.params["width"] > bob_job.params["height"], "bob's default 16:9 applies"
    assert bob_job.delivery["private"] is True

    mine = await emu.send_slash("queue", {}, user=emu.bob)
    listing = (await _ephemeral_reply(emu, mine)).content
    assert bob_job.id in listing and "position 2" in listing and "2 jobs waiting" in listing

    alice_job = await harness.job_for(first)
    refused = await emu.send_slash("cancel", {"job": alice_job.id}, user=emu.bob)
    assert "not yours" in (await _ephemeral_reply(emu, refused)).content
    cancel = await emu.send_slash("cancel", {}, user=emu.bob)
    assert "cancelled" in (await _ephemeral_reply(emu, cancel)).content
    assert (await harness.store.get_job(bob_job.id)).status == JobStatus.CANCELLED
    await emu.wait_for(
        lambda: "Cancelled" in (emu.original_message(second).content or ""), 10, "cancel shown"
    )

    stats = await emu.send_slash("stats", {}, user=emu.alice)
    text = (await _ephemeral_reply(emu, stats)).content
    assert "Images made" in text and "not measured" in text  # no GPU energy counter on CPU
    helped = await emu.send_slash("help", {}, user=emu.alice)
    assert "--ar" in (await _ephemeral_reply(emu, helped)).content
    assert not emu.violations


async def test_imagine_from_an_uploaded_picture(quick_harness: Harness) -> None:
    harness = quick_harness
    from skimage import data

    emu = harness.emu
    buf = io.BytesIO()
    Image.fromarray(data.coffee()).resize((96, 64)).save(buf, format="PNG")
    upload = emu.upload("sketch.png", buf.getvalue(), content_type="image/png")
    iid = await harness.imagine("a cup of tea, watercolor --count 1 --steps 4", image=upload)
    await harness.result_of(iid)
    job = await harness.delivered(iid)
    assert job.status == JobStatus.DONE
    assert Path(job.params["init_image"]).is_file(), "the upload is kept for reruns"


async def test_author_only_policy_and_a_deleted_channel(quick_harness: Harness) -> None:
    harness = quick_harness
    emu = harness.emu
    iid = await harness.imagine("a kite over a field --count 1 --steps 2", user=emu.alice)
    result = await harness.result_of(iid)
    job = await harness.delivered(iid)
    restrict = await emu.send_slash(
        "policy set",
        {"field": "others_can_press_buttons", "value": "false"},
        user=emu.moderator,
    )
    assert "others_can_press_buttons" in (await _ephemeral_reply(emu, restrict)).content
    press = await emu.click(result, f"ib:v:{job.id}:0:S", user=emu.bob)
    assert "only the person who made" in (await _ephemeral_reply(emu, press)).content

    # The channel disappears while a job waits (worker paused to make "waits" certain): the
    # result comes by DM (tests/test_bot_channel_gone.py has the details), the queue goes on.
    await harness.stop()
    bot = await harness.start(start_worker=False)
    doomed = emu.world.add_channel(emu.guild, "doomed")
    lost = await harness.imagine("a kite in the rain --count 1 --steps 2", channel=doomed)
    await harness.job_for(lost)
    await emu.delete_channel(doomed)
    # (Past the token's life the bot posts to the channel; the emulator answers 404 there.)
    emu.clock.advance(15 * 60 + 1)
    await bot.services.worker.start()
    gone = await harness.delivered(lost, timeout=120)
    assert "gone" in gone.delivery["rerouted"]
    [dm] = emu.messages_in(emu.dm_channel(emu.alice))
    assert dm.id == gone.delivery["result_message_id"] and dm.attachments
    after = await harness.imagine("a kite at night --count 1 --steps 2", user=emu.bob)
    await harness.result_of(after)


async def test_age_restricted_channel_with_spoiler_policy_sends_spoilers(
    quick_harness: Harness,
) -> None:
    harness = quick_harness
    emu = harness.emu
    setting = await emu.send_slash(
        "policy set", {"field": "nsfw_mode", "value": "spoiler"}, user=emu.moderator
    )
    await _ephemeral_reply(emu, setting)
    outside = await harness.imagine("a nude figure study --steps 2", user=emu.bob)
    assert "age-restricted" in (await _ephemeral_reply(emu, outside)).content
    iid = await harness.imagine(
        "a nude figure study --steps 2", user=emu.bob, channel=emu.nsfw_channel
    )
    result = await harness.result_of(iid)
    assert all(a.spoiler for a in result.attachments), [a.filename for a in result.attachments]
