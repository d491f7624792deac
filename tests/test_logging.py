"""Structured logs: job ids attached, tokens never written, prompts only when the admin allows."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

import bot  # noqa: F401 - adds Discord's token shapes to the redaction
from core.config import Settings
from core.errors import UserInputError
from core.logging_setup import (
    REDACTED,
    Redactor,
    job_context,
    setup_logging,
)

# Shaped like a real bot token (base64 user id . timestamp . hmac) but not a real one.
FAKE_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"
OTHER_TOKEN = "OTg3NjU0MzIxMDk4NzY1NDMyMQ.Xy12_z.ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210-_"


@pytest.fixture
def capture():
    """Install the imagine-bot handler writing into a buffer; restore the root logger after."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging.getLogger("discord").level)
    buffers: list[io.StringIO] = []

    def install(**ops: object) -> io.StringIO:
        buf = io.StringIO()
        settings = Settings(discord={"token": FAKE_TOKEN}, ops=ops)
        setup_logging(settings, stream=buf)
        buffers.append(buf)
        return buf

    yield install
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])
    logging.getLogger("discord").setLevel(saved[2])


def lines(buf: io.StringIO) -> list[str]:
    return [line for line in buf.getvalue().splitlines() if line]


def test_json_lines_carry_job_id_from_context_and_extras(capture):
    buf = capture(log_json=True)
    log = logging.getLogger("generation.worker")
    with job_context("job-42"):
        log.info("started %s images", 4, extra={"guild_id": 7})
    log.info("idle")
    first, second = (json.loads(line) for line in lines(buf))
    assert first["message"] == "started 4 images"
    assert first["job_id"] == "job-42"
    assert first["guild_id"] == 7
    assert first["level"] == "INFO" and first["logger"] == "generation.worker"
    assert first["ts"].endswith("Z")
    assert "job_id" not in second


async def test_job_id_follows_asyncio_tasks(capture):
    buf = capture(log_json=True)
    log = logging.getLogger("generation.worker")

    async def step(n: int) -> None:
        await asyncio.sleep(0)
        log.info("step %d", n)

    with job_context("job-a"):
        task_a = asyncio.create_task(step(1))
    with job_context("job-b"):
        task_b = asyncio.create_task(step(2))
    await asyncio.gather(task_a, task_b)
    records = {json.loads(line)["message"]: json.loads(line)["job_id"] for line in lines(buf)}
    assert records == {"step 1": "job-a", "step 2": "job-b"}


def test_text_format_shows_job_and_extras(capture):
    buf = capture()
    with job_context("job-7"):
        logging.getLogger("bot.delivery").warning("upload failed", extra={"status": 413})
    (line,) = lines(buf)
    assert "WARNING" in line and "[job job-7]" in line
    assert "upload failed" in line and "status=413" in line


@pytest.mark.parametrize("log_json", [False, True])
def test_configured_token_is_never_written(capture, log_json):
    buf = capture(log_json=log_json)
    log = logging.getLogger("bot.runner")
    log.info("logging in with %s", FAKE_TOKEN)
    log.info("token in extra", extra={"header": f"Authorization: Bot {FAKE_TOKEN}"})
    try:
        raise RuntimeError(f"login failed for {FAKE_TOKEN}")
    except RuntimeError:
        log.exception("crash")
    out = buf.getvalue()
    assert FAKE_TOKEN not in out
    assert out.count(REDACTED) >= 3
    assert "RuntimeError" in out  # the traceback itself is kept


def test_unknown_discord_like_tokens_and_webhook_urls_are_masked(capture):
    buf = capture(log_json=True)
    log = logging.getLogger("discord.http")
    log.warning("other bot token %s", OTHER_TOKEN)
    url = "https://discord.com/api/v10/webhooks/123456789012345678/aW50ZXJhY3Rpb246MTIzNDU2Nzg5OnNlY3JldA"
    log.warning("PATCH %s failed", url)
    out = buf.getvalue()
    assert OTHER_TOKEN not in out
    assert "aW50ZXJhY3Rpb246MTIzNDU2Nzg5OnNlY3JldA" not in out
    assert "/webhooks/123456789012345678/" + REDACTED in out


def test_token_from_file_is_redacted(tmp_path, monkeypatch):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    secret = "a-token-with-no-discord-shape-0123456789"
    token_file = tmp_path / "discord_token"
    token_file.write_text(secret + "\n")
    redactor_settings = Settings(discord={"token_file": token_file})
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        setup_logging(redactor_settings, stream=buf)
        logging.getLogger("x").error("oops %s", secret)
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
    assert secret not in buf.getvalue()
    assert REDACTED in buf.getvalue()


def test_prompt_hidden_unless_admin_enables_it(capture):
    buf = capture(log_json=True)
    log = logging.getLogger("bot.cogs.imagine")
    log.info("queued", extra={"prompt": "a secret birthday cake for Alice"})
    (entry,) = (json.loads(line) for line in lines(buf))
    assert "Alice" not in json.dumps(entry)
    assert "hidden" in entry["prompt"] and "32 chars" in entry["prompt"]

    buf = capture(log_json=True, log_prompts=True)
    log.info("queued", extra={"prompt": "a secret birthday cake for Alice"})
    (entry,) = (json.loads(line) for line in lines(buf))
    assert entry["prompt"] == "a secret birthday cake for Alice"


def test_setup_replaces_its_own_handler_and_sets_level(capture):
    capture()
    buf = capture(log_level="warning")
    root = logging.getLogger()
    assert sum(h.get_name() == "imagine-bot" for h in root.handlers) == 1
    logging.getLogger("y").info("quiet")
    logging.getLogger("y").warning("loud")
    assert [line.split()[-1] for line in lines(buf)] == ["loud"]


def test_bad_log_level_is_a_clear_error():
    with pytest.raises(UserInputError, match="ops.log_level 'LOUD' is not a log level"):
        setup_logging(Settings(ops={"log_level": "LOUD"}), stream=io.StringIO())


def test_redactor_ignores_short_secrets_and_masks_longest_first():
    redact = Redactor(["abc", "supersecretvalue", "supersecretvalue-extended"])
    assert redact("abc supersecretvalue-extended") == f"abc {REDACTED}"


async def test_worker_log_lines_carry_the_job_id(capture, tmp_path, tiny_engine, tiny_settings):
    """Lines logged in the post-processing thread and by the bot's listener name their job."""
    from core.store import Store
    from generation.request import GenerationRequest
    from generation.worker import NullListener, Worker, save_pngs

    settings = tiny_settings.model_copy(update={"data_dir": tmp_path})
    buf = capture(log_json=True)
    save = save_pngs(settings.images_dir)

    def postprocess(job, result):
        logging.getLogger("moderation.postprocess").info("checking images")  # in a thread
        return save(job, result)

    class Listener(NullListener):
        async def on_done(self, job, images) -> None:
            logging.getLogger("bot.delivery").info("delivering")

    store = await Store.open(settings.db_path)
    worker = Worker(store, tiny_engine, settings, postprocess=postprocess, listener=Listener())
    try:
        await worker.start()
        job = await worker.submit(GenerationRequest("a fox", seed=1, count=1, steps=2), user_id=1)
        await worker.join()
    finally:
        await worker.stop()
        await store.close()
    entries = [json.loads(line) for line in lines(buf)]
    by_message = {e["message"]: e.get("job_id") for e in entries}
    assert by_message["checking images"] == job.id
    assert by_message["delivering"] == job.id
