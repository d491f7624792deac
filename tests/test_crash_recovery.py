"""The promise starts at the ack: the bot process is killed (``kill -9``) the moment Discord
received its "thinking..." for a /imagine, and again for a button press; after a restart each
gets exactly one result. A real process against the loopback Discord, nothing mocked."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from tests.bot_process import BOT_TOKEN, BotProcess
from tests.emulator_client import running_emulator

SLASH, COMPONENT, DEFERRED = 2, 3, 5


def _results(emu: Any, iid: int) -> list[Any]:
    """Requests that put a finished result (files and buttons) on interaction ``iid``."""
    return [
        r
        for r in emu.interaction_responses(iid)
        if r.ok and r.files and isinstance(r.json, dict) and r.json.get("components")
    ]


async def _result(emu: Any, iid: int) -> Any:
    return await emu.wait_for(
        lambda: (m := emu.original_message(iid)) and m.attachments and m.custom_ids() and m,
        240,
        f"the result of {iid}",
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_kill_9_right_after_the_ack_loses_nothing_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    async with running_emulator(token=BOT_TOKEN) as emu:
        bot = BotProcess(emu, tmp_path / "data", umask=0o022)
        try:
            await bot.start()
            # 1. /imagine: killed as Discord records the ack.
            killed = bot.kill_after_ack(
                lambda inter, ack: inter.type == SLASH and ack.get("type") == DEFERRED
            )
            iid = await emu.send_slash("imagine", {"prompt": "a windmill --count 1"})
            await emu.wait_for(killed.is_set, 60, "the kill after the ack")
            await bot.wait_dead()
            assert emu.interaction(iid).initial_response == DEFERRED
            assert emu.original_message(iid).attachments == []  # nothing delivered yet
            await bot.start()
            result = await _result(emu, iid)
            assert "windmill" in result.content

            # 2. A button on that result (upscale): killed as Discord records that ack.
            killed = bot.kill_after_ack(
                lambda inter, ack: inter.type == COMPONENT and ack.get("type") == DEFERRED
            )
            upscale = next(c for c in result.custom_ids() if c.startswith("ib:u:"))
            press = await emu.click(result, upscale)
            await emu.wait_for(killed.is_set, 60, "the kill after the press's ack")
            await bot.wait_dead()
            await bot.start()
            upscaled = await _result(emu, press)
            assert "Upscale of" in upscaled.content

            emu.on_request = None
            assert await bot.stop() == 0
        finally:
            bot.kill()
            await bot.wait_dead()
        # Exactly once each, and nothing else posted anywhere with files.
        assert len(_results(emu, iid)) == 1, bot.log()[-3000:]
        assert len(_results(emu, press)) == 1, bot.log()[-3000:]
        stray = [
            m for m in emu.messages_in(emu.general) if m.attachments and m.interaction_id is None
        ]
        assert stray == []
        assert "replaying interaction" in bot.log()
        # Under the admin's umask 022 the bot's files are still its own.
        data = tmp_path / "data"
        assert _mode(data) == 0o700 and _mode(data / "imagine.db") == 0o600
        pngs = list((data / "images").rglob("*.png"))
        assert pngs and all(_mode(p) == 0o600 for p in pngs)
        assert all(_mode(p) == 0o600 for p in (data / "keys").rglob("*") if p.is_file())
