"""The bot as an admin runs it (``python -m bot.cli run``, a real process) against a loopback
emulator, with ways to kill it hard (``kill -9``) at chosen moments: right after Discord received
one of its acks, or at random. Used by the crash tests and by ``bench/soak.py``."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playground.emulator import Emulator, RecordedRequest

# Shaped like a real bot token (base64 user id . timestamp . hmac), so preflight accepts it.
BOT_TOKEN = (
    base64.urlsafe_b64encode(b"112233445566778899").decode().rstrip("=") + ".GaBcDe." + "k" * 38
)
CALLBACK = "/interactions/{interaction_id}/{token}/callback"


class BotProcess:
    """Start, kill and restart ``imagine-bot run`` on one data directory."""

    def __init__(self, emu: Emulator, data_dir: Path, *, umask: int = 0o022, **env: str) -> None:
        self.emu = emu
        self.data_dir = data_dir
        self.umask = umask  # the admin's; the bot must make its files private anyway
        self.extra_env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.output = bytearray()
        self._reader: asyncio.Task[None] | None = None
        self._killed = False

    def env(self) -> dict[str, str]:
        emu = self.emu
        env = {
            **os.environ,
            "DISCORD_TOKEN": emu.token,
            "IMAGINE_DATA_DIR": str(self.data_dir),
            "IMAGINE_MODEL__NAME": "tiny",
            "IMAGINE_MODEL__DEVICE": "cpu",
            "IMAGINE_MODEL__DEFAULT_STEPS": "2",
            "IMAGINE_DISCORD__API_BASE": emu.api_base,
            "IMAGINE_DISCORD__GATEWAY_URL": emu.gateway_url,
            "IMAGINE_DISCORD__DEV_GUILDS": json.dumps([emu.guild.id]),
            "IMAGINE_DISCORD__PROGRESS_INTERVAL_S": "0.5",
            "IMAGINE_OPS__MIN_FREE_DISK_MB": "10",
            **self.extra_env,
        }
        env.pop("IMAGINE_CONFIG", None)
        return env

    async def start(self, timeout: float = 240) -> None:
        """Start the bot and wait until it is connected and its commands are synced."""
        umask = self.umask
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            env=self.env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=lambda: os.umask(umask),
        )
        self.starts += 1
        self._killed = False
        self._reader = asyncio.create_task(self._drain(self.proc))
        connected = asyncio.ensure_future(
            self.emu.wait_until_connected(timeout=timeout, identifies=self.starts)
        )
        exited = asyncio.ensure_future(self.proc.wait())
        await asyncio.wait({connected, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not connected.done():  # it died before connecting: say why, not "timed out"
            connected.cancel()
            await self._reader
            raise AssertionError(f"the bot exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
        exited.cancel()
        try:
            connected.result()
        except TimeoutError as exc:  # hung, not dead: show what it was doing
            raise AssertionError(f"{exc}\nthe bot's log:\n{self.log()[-3000:]}") from None
        await self.emu.wait_for(
            lambda: self.emu.find_command("imagine", self.emu.guild.id), 60, "synced commands"
        )
        await self.ready(timeout)

    async def ready(self, timeout: float) -> None:
        """Until start-up recovery ran (the log line follows it)."""
        marker = b"ready as "
        for _ in range(int(timeout / 0.05)):
            if self.output.count(marker) >= self.starts:
                return
            if self.proc is not None and self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"the bot did not get ready:\n{self.log()[-3000:]}")

    async def _drain(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            self.output.extend(chunk)

    def kill(self) -> None:
        """``kill -9``: no clean-up of any kind runs."""
        if self.proc is not None and self.proc.returncode is None and not self._killed:
            os.kill(self.proc.pid, signal.SIGKILL)
            self._killed = True

    def killed(self) -> bool:
        """Killed (by ``kill``) and not started again yet."""
        return self._killed

    async def wait_dead(self) -> None:
        if self.proc is not None:
            await self.proc.wait()
        if self._reader is not None:
            await self._reader

    async def stop(self) -> int | None:
        """SIGTERM (graceful) and wait; kill -9 if it hangs. Returns the exit code."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            await self.wait_dead()
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 90)
        except TimeoutError:
            self.kill()
        await self.wait_dead()
        return proc.returncode

    def kill_after_ack(self, match: Callable[[Any, dict[str, Any]], bool]) -> asyncio.Event:
        """Kill the bot the moment Discord (the emulator) records its ack of an interaction
        that ``match(interaction, ack_payload)`` accepts, before the bot sees the answer."""
        killed = asyncio.Event()

        def on_request(record: RecordedRequest) -> None:
            if killed.is_set() or record.route != CALLBACK or not record.ok:
                return
            inter = self.emu.interactions.get(record.interaction_id or 0)
            if inter is not None and match(inter, record.json or {}):
                self.kill()
                killed.set()

        self.emu.on_request = on_request
        return killed

    def log(self) -> str:
        return self.output.decode(errors="replace")
