"""``imagine-bot run`` as an admin starts it: a real process, settings from the environment,
pointed at the loopback emulator; it serves a prompt and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import discord
import yarl

from bot.cli import main
from bot.client import point_at
from tests.bot_process import BOT_TOKEN, BotProcess
from tests.emulator_client import running_emulator


def test_point_at_moves_discord_py_to_another_host() -> None:
    """Canary: the two undocumented attributes the emulator override relies on still exist."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    try:
        point_at("http://127.0.0.1:9/api/v10/", "ws://127.0.0.1:9/gateway")
        assert discord.http.Route.BASE == "http://127.0.0.1:9/api/v10"
        assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == yarl.URL(
            "ws://127.0.0.1:9/gateway"
        )
        route = discord.http.Route("GET", "/users/@me")
        assert route.url.startswith("http://127.0.0.1:9/api/v10/")
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


def test_run_without_a_token_explains_how_to_set_one(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("IMAGINE_CONFIG", raising=False)
    monkeypatch.setenv("IMAGINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IMAGINE_MODEL__NAME", "tiny")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "DISCORD_TOKEN" in err and "Traceback" not in err


async def test_run_serves_a_prompt_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    async with running_emulator(token=BOT_TOKEN) as emu:
        await _serve_and_stop(emu, tmp_path)


async def _serve_and_stop(emu, tmp_path: Path) -> None:
    bot = BotProcess(emu, tmp_path)
    try:
        await bot.start(timeout=180)  # connected, commands synced, start-up recovery done
        iid = await emu.send_slash("imagine", {"prompt": "a windmill --count 1"})
        await emu.wait_for(
            lambda: (m := emu.original_message(iid)) and m.attachments and m.custom_ids() and m,
            180,
            "the result",
        )
        assert await bot.stop() == 0, bot.log()[-3000:]
    finally:
        bot.kill()
        await bot.wait_dead()
    log = bot.log()
    assert "stopping" in log
    assert emu.token not in log, "the bot token must never reach the log"
    assert emu.interaction(iid).token not in log, "nor an interaction token"


def test_run_refuses_to_start_with_a_broken_nsfw_model(tmp_path: Path) -> None:
    """Fail closed: no silent fallback to unmoderated images. One line names the broken file."""
    broken = tmp_path / "320n.onnx"
    broken.write_bytes(b"this is not an ONNX model")
    env = {
        **os.environ,
        "DISCORD_TOKEN": BOT_TOKEN,
        "IMAGINE_DATA_DIR": str(tmp_path / "data"),
        "IMAGINE_MODEL__NAME": "tiny",
        "IMAGINE_MODEL__DEVICE": "cpu",
        "IMAGINE_MODERATION__NSFW_MODEL": str(broken),
        "IMAGINE_DISCORD__API_BASE": "http://127.0.0.1:9",  # never reached
    }
    env.pop("IMAGINE_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "run"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("imagine-bot:")]
    assert len(lines) == 1, done.stderr
    assert "cannot start" in lines[0] and str(broken) in lines[0] and "NSFW model" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
