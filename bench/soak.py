"""Soak: the bot process under a mixed load, killed (``kill -9``) at random moments.

    python -m bench.soak --minutes 5          # the "Done when" run
    python -m bench.soak --seconds 60 --kill-every 30   # short form (tests/test_soak.py)

Runs ``imagine-bot run`` (tiny model, CPU) as a real process against the loopback Discord
emulator in this process, and drives it as users would: /imagine (some with hostile uploads: a
40 MP PNG bomb, a text file posing as a PNG), buttons on delivered results (upscale, vary,
reroll), reaction shortcuts, /cancel. Now and then the bot is killed with SIGKILL, at a random
moment or right after Discord received one of its acks, and started again.

At the end it stops sending, waits for every accepted interaction to be finished, and prints:

- ``accepted``: interactions the bot acknowledged ("thinking..."): each is a promise;
- ``delivered``: of those, how many got their result, or a message saying why not (refused,
  failed, cancelled);
- ``duplicated``: how many got more than one result;
- ``lost``: how many got nothing (goal 0, like duplicated);
- ``peak_rss_mib`` per minute of the bot process (sampled every 0.5 s) and ``rss_last_vs_first``
  (goal within 10 %).

Timings depend on the machine; the counts do not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from tests.bot_process import BOT_TOKEN, BotProcess
from tests.emulator_client import running_emulator

REROLL = "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}"
PROGRESS = ("Queued", "Starting", "Generating")
SLASH, COMPONENT, DEFERRED = 2, 3, 5


def _results(emu: Any, iid: int) -> int:
    """Results (files and buttons) Discord accepted for interaction ``iid``."""
    return sum(
        1
        for r in emu.interaction_responses(iid)
        if r.ok and r.files and isinstance(r.json, dict) and r.json.get("components")
    )


def _told(emu: Any, iid: int) -> bool:
    """The user was told why there is no result (a refusal, a failure, a cancellation)."""
    if any(not m.deleted for m in emu.followups(iid)):
        return True
    msg = emu.original_message(iid)
    if msg is None or msg.deleted or msg.loading:
        return False
    return bool(msg.content) and not msg.content.startswith(PROGRESS)


def _hostile_files() -> list[tuple[str, bytes, str]]:
    bomb = io.BytesIO()
    Image.new("1", (8000, 5000)).save(bomb, format="PNG")
    return [
        ("bomb.png", bomb.getvalue(), "image/png"),
        ("fake.png", b"\x89PNG not really", "image/png"),
        ("notes.txt", b"hello", "text/plain"),
    ]


class RssSampler:
    def __init__(self, bot: BotProcess) -> None:
        self.bot = bot
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self._started = time.monotonic()

    async def run(self) -> None:
        while True:
            proc = self.bot.proc
            if proc is not None and proc.returncode is None:
                try:
                    status = Path(f"/proc/{proc.pid}/status").read_text()
                    kib = next(
                        int(line.split()[1])
                        for line in status.splitlines()
                        if line.startswith("VmRSS:")
                    )
                    self.samples.append((time.monotonic() - self._started, kib / 1024))
                except (OSError, StopIteration, ValueError):
                    pass
            await asyncio.sleep(0.5)

    def per_minute(self) -> list[float]:
        peaks: dict[int, float] = {}
        for at, mib in self.samples:
            peaks[int(at // 60)] = max(peaks.get(int(at // 60), 0.0), mib)
        return [round(peaks[m], 1) for m in sorted(peaks)]


async def soak(seconds: float, kill_every: float, rate: float, seed: int, drain_s: float) -> dict:
    rng = random.Random(seed)
    hostile = _hostile_files()
    async with running_emulator(token=BOT_TOKEN) as emu:
        users = [emu.alice, emu.bob, emu.owner] + [
            emu.world.add_user(f"soaker{i}", guild=emu.guild) for i in range(5)
        ]
        data = Path(tempfile.mkdtemp(prefix="imagine-soak-"))
        bot = BotProcess(emu, data, IMAGINE_DISCORD__DELIVERY_BACKOFF_S="0.5")
        await bot.start()
        rss = RssSampler(bot)
        sampler = asyncio.create_task(rss.run())
        started = time.monotonic()
        try:
            sent, kills = await _load(emu, bot, rng, users, hostile, seconds, kill_every, rate)
            if bot.killed():
                await bot.wait_dead()
                await bot.start()
            accepted, results, delivered = await _drain(emu, sent, drain_s)
            exit_code = await bot.stop()
        finally:
            sampler.cancel()
            bot.kill()
            await bot.wait_dead()
    peaks = rss.per_minute()
    return {
        "seconds": round(time.monotonic() - started, 1),
        "sent": len(sent),
        "accepted": len(accepted),
        "delivered": delivered,
        "duplicated": sum(1 for n in results.values() if n > 1),
        "lost": len(accepted) - delivered,
        "kills": kills,
        "clean_exit": exit_code == 0,
        "peak_rss_mib_per_minute": peaks,
        "rss_last_vs_first": round(peaks[-1] / peaks[0], 3) if len(peaks) > 1 else None,
        "goal": "0 lost, 0 duplicated, last minute's peak RSS within 10 % of the first's",
    }


async def _load(
    emu: Any,
    bot: BotProcess,
    rng: random.Random,
    users: list,
    hostile: list,
    seconds: float,
    kill_every: float,
    rate: float,
) -> tuple[list[int], int]:
    """Users act at ``rate`` per second for ``seconds`` while the bot is killed now and then
    (and started again); returns (the interactions sent, the number of kills)."""
    sent: list[int] = []
    kills = 0
    started = time.monotonic()
    # The first kill comes by half-time at the latest, so even a short run has one.
    next_kill = (
        started + min(rng.expovariate(1 / kill_every), seconds / 2)
        if kill_every > 0
        else float("inf")
    )
    armed: asyncio.Event | None = None  # kill after the next ack
    armed_at = 0.0
    while time.monotonic() - started < seconds:
        now = time.monotonic()
        if armed is None and now >= next_kill:
            kills += 1
            if rng.random() < 0.5:  # right after an ack: the narrowest window
                armed = bot.kill_after_ack(lambda inter, ack: ack.get("type") == DEFERRED)
                armed_at = now
            else:
                bot.kill()
        if armed is not None and (armed.is_set() or now - armed_at > 20):
            emu.on_request, armed = None, None
            bot.kill()  # (a no-op when the ack already killed it)
        if bot.killed():
            await bot.wait_dead()
            await bot.start()
            next_kill = time.monotonic() + rng.expovariate(1 / kill_every)
        try:
            iid = await _one_action(emu, rng, users, hostile)
        except Exception as exc:  # noqa: BLE001 - e.g. no result to press yet
            logging.debug("action skipped: %s", exc)
            iid = None
        if iid is not None:
            sent.append(iid)
        await asyncio.sleep(rng.expovariate(rate))
    emu.on_request = None
    return sent, kills


async def _drain(
    emu: Any, sent: list[int], drain_s: float
) -> tuple[list[int], dict[int, int], int]:
    """Wait until every promise is kept or explained: (accepted, results per accepted
    interaction, how many got a result or a message saying why not)."""
    accepted = [i for i in sent if emu.interaction(i).initial_response == DEFERRED]

    def finished() -> bool:
        return all(_results(emu, i) or _told(emu, i) for i in accepted)

    with contextlib.suppress(TimeoutError):
        await emu.wait_for(finished, drain_s, "every accepted interaction finished")
    results = {i: _results(emu, i) for i in accepted}
    delivered = sum(1 for i in accepted if results[i] or _told(emu, i))
    return accepted, results, delivered


async def _one_action(emu: Any, rng: random.Random, users: list, hostile: list) -> int | None:
    user = rng.choice(users)
    roll = rng.random()
    results = [
        m
        for m in emu.messages_in(emu.general, include_ephemeral=False)
        if m.attachments and m.custom_ids() and not m.deleted
    ]
    if roll < 0.45 or not results:
        options: dict[str, Any] = {"prompt": f"a lighthouse {rng.randrange(10**6)} --count 1"}
        if rng.random() < 0.15:
            name, data, kind = rng.choice(hostile)
            options["image"] = emu.upload(name, data, content_type=kind)
        return await emu.send_slash("imagine", options, user=user)
    msg = rng.choice(results)
    if roll < 0.75:
        ids = [c for c in msg.custom_ids() if c.startswith(("ib:u:", "ib:v:", "ib:r:"))]
        return await emu.click(msg, rng.choice(ids), user=user)
    if roll < 0.9:
        await emu.add_reaction(msg, REROLL, user)
        return None
    await emu.send_slash("cancel", {}, user=user)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="how long to send load")
    parser.add_argument("--seconds", type=float, default=60.0, help="(or) in seconds")
    parser.add_argument("--kill-every", type=float, default=45.0, help="mean seconds between kills")
    parser.add_argument("--rate", type=float, default=0.7, help="mean user actions per second")
    parser.add_argument("--drain", type=float, default=300.0, help="seconds to wait at the end")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    seconds = args.minutes * 60 if args.minutes is not None else args.seconds
    result = asyncio.run(soak(seconds, args.kill_every, args.rate, args.seed, args.drain))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
