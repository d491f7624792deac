"""Accepting an interaction: the promise to the user starts at the ack, so it is made durable first.

Order for every interaction that can become a job (/imagine, a button, the remix modal):

1. presses (buttons, modals) are rate-limited per user;
2. a slot of the user's cap is reserved in one synchronous step (``generation/admission.py``),
   so concurrent submits cannot all pass the check;
3. the raw interaction (Discord's payload: token, user, channel, options) is committed to the
   store, many to one transaction when they arrive together (``AcceptJournal``);
4. only then the "thinking..." ack goes to Discord.

A refusal at 1 or 2 is the interaction's answer (ephemeral), so nothing needs recording. From 4
on, the row stays until the job row replaces it (``Store.add_job``) or the user was told why not
(``bot/replies.py`` ``reply_error``). At start-up ``recover`` replays every row left by a crash
through the same code path (without a second ack), so each becomes a job and is delivered, or
the user is told why not. Delivery is still claimed through ``mark_delivered``: exactly once.

The raw payload comes from discord.py's INTERACTION_CREATE parser (``keep_raw_interactions``),
the only place that sees it whole; a canary test checks that hook still exists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import discord

from bot.describe_view import DESCRIBE_COG
from bot.replies import BANNED, GENERIC_ERROR, NO_WORKER, reply_error
from bot.views import DYNAMIC_ITEMS, handle_modal_submit
from core.errors import UserInputError
from core.store import AcceptedInteraction
from generation.admission import RateLimiter

if TYPE_CHECKING:
    from bot.client import ImagineBot
    from bot.services import Services
    from bot.settings_store import GuildSettingsStore
    from core.store import Store

log = logging.getLogger(__name__)

RAW_KEPT = 2000  # raw payloads waiting to be accepted (others are dropped oldest first)
MAX_REPLAYS = 3  # an interaction whose replay crashed the bot this often is given up on
ACK_FIRST_S = 1.0  # the longest work after an ack waits for other acks to go out


def keep_raw_interactions(client: discord.Client) -> OrderedDict[int, dict[str, Any]]:
    """Keep each INTERACTION_CREATE payload as Discord sent it, by interaction id."""
    raw: OrderedDict[int, dict[str, Any]] = OrderedDict()
    state = client._connection  # noqa: SLF001 - the one place the raw payload passes
    parse = state.parsers["INTERACTION_CREATE"]

    def keep(data: dict[str, Any]) -> None:
        raw[int(data["id"])] = data
        while len(raw) > RAW_KEPT:
            raw.popitem(last=False)
        parse(data)

    state.parsers["INTERACTION_CREATE"] = keep
    return raw


class AcceptJournal:
    """Group commit: rows recorded while a write is in flight go together in the next one."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[AcceptedInteraction, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, row: AcceptedInteraction) -> None:
        """Return once ``row`` is committed (raises if the store refused it)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await future

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.store.record_accepted([row for row, _ in batch])
            except Exception as exc:  # noqa: BLE001 - each waiter gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)


class Acceptor:
    """Rate limit, cap reservation, durable record and ack, in that order; and recovery."""

    def __init__(self, services: Services, guild_settings: GuildSettingsStore) -> None:
        self.services = services
        self.store = services.store
        self.guild_settings = guild_settings
        self.journal = AcceptJournal(services.store)
        limits = services.settings.discord
        self.presses = RateLimiter(limits.press_limit, limits.press_window_s)
        self._told = RateLimiter(1, limits.press_window_s)  # one notice per window
        self.raw: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._live: set[int] = set()  # recorded by this process: not for recovery
        # Interactions between arrival and ack. Work after an ack (parsing, the prompt gate,
        # downloads) waits until none are left, up to ACK_FIRST_S: in a burst every ack goes
        # out before anyone's heavier work takes the event loop.
        self._acking = 0
        self._acks_done: asyncio.Event | None = None
        self._waiting = 0

    def attach(self, client: discord.Client) -> None:
        self.raw = keep_raw_interactions(client)

    async def accept(
        self, interaction: discord.Interaction, *, ephemeral: bool, press: bool = False
    ) -> None:
        """Make the promise: raises ``UserInputError`` (nothing recorded) when refused."""
        extras = interaction.extras
        worker = self.services.worker
        if worker is None:
            raise UserInputError(NO_WORKER)
        user_id = interaction.user.id
        if extras.get("accepted"):
            # A modal that goes on as a button press (one interaction, one promise), or one
            # accepted before a restart: that one is never refused for the cap now.
            if extras.get("replayed") and "reservation" not in extras:
                extras["reservation"] = worker.admission.reserve(user_id, check=False)
            return
        if press:
            self.presses.check(user_id, "that")
        self._acking += 1
        try:
            await self._accept(interaction, worker, user_id, ephemeral)
        finally:
            self._acking -= 1
            if self._acking == 0 and self._acks_done is not None:
                self._acks_done.set()
        await self._let_acks_go_first()

    async def _let_acks_go_first(self) -> None:
        if self._acking == 0:
            if self._waiting:
                # The burst's last ack: those acknowledged before it go on first (their
                # wake-ups are already scheduled), so work keeps the order of arrival.
                await asyncio.sleep(0)
            return
        if self._acks_done is None:
            self._acks_done = asyncio.Event()
        self._acks_done.clear()
        self._waiting += 1
        # A timer rather than wait_for: waking takes one hop, so the order above holds.
        timer = asyncio.get_running_loop().call_later(ACK_FIRST_S, self._acks_done.set)
        try:
            await self._acks_done.wait()
        finally:
            timer.cancel()
            self._waiting -= 1

    async def _accept(
        self, interaction: discord.Interaction, worker: Any, user_id: int, ephemeral: bool
    ) -> None:
        extras = interaction.extras
        guild = await self.guild_settings.get(interaction.guild_id)
        if user_id in guild.banned_user_ids:  # the clearer reason comes first
            raise UserInputError(BANNED)
        reservation = worker.admission.reserve(user_id, guild.cap_for(user_id))
        extras["reservation"] = reservation
        try:
            raw = self.raw.pop(interaction.id, None)
            if raw is not None:
                row = AcceptedInteraction(
                    id=interaction.id,
                    created_at=time.time(),
                    user_id=user_id,
                    guild_id=interaction.guild_id,
                    channel_id=interaction.channel_id,
                    ephemeral=ephemeral,
                    payload=raw,
                )
                try:
                    await self.journal.record(row)
                except Exception:  # noqa: BLE001 - the user hears it, the log has the cause
                    log.exception("could not record interaction %s", interaction.id)
                    raise UserInputError(
                        "the bot could not save your request (storage problem); try again"
                    ) from None
                self._live.add(interaction.id)
                extras["accepted_at"] = row.created_at
            else:
                log.warning(
                    "no raw payload for interaction %s; it is not crash-safe", interaction.id
                )
            extras.update(thinking=True, ephemeral=ephemeral)
            try:
                await interaction.response.defer(ephemeral=ephemeral, thinking=True)
            except discord.HTTPException:
                # Never acknowledged (e.g. Discord's 3 s passed): nothing was promised.
                await self.forget(interaction)
                raise
            extras["accepted"] = True
        except BaseException:
            reservation.release()
            raise

    def check_reaction(self, user_id: int) -> bool:
        """Reactions over the rate limit: the first is refused aloud (``UserInputError``; a
        channel message, as reactions have no ephemeral reply), the rest of the window is
        ignored (False) so toggling an emoji cannot flood the channel."""
        if not self.presses.retry_after(user_id):
            return True
        if self._told.retry_after(user_id):
            return False
        raise UserInputError(
            f"you are using reactions too fast (at most {self.presses.limit} every "
            f"{self.presses.per_s:g} s); wait a little"
        )

    async def reserve(self, actor: Any) -> None:
        """A cap slot for work that is not an interaction (a reaction shortcut)."""
        worker = self.services.worker
        if worker is None:
            raise UserInputError(NO_WORKER)
        user_id = actor.user.id
        guild = await self.guild_settings.get(actor.guild_id)
        actor.extras["reservation"] = worker.admission.reserve(user_id, guild.cap_for(user_id))

    async def answered(self, interaction: Any) -> None:
        """The user was told the outcome (a refusal or an error): nothing left to recover."""
        extras = getattr(interaction, "extras", None) or {}
        reservation = extras.get("reservation")
        if reservation is not None:
            reservation.release()
        if extras.get("accepted"):
            await self.forget(interaction)

    async def forget(self, interaction: Any) -> None:
        interaction_id = getattr(interaction, "id", None)
        if interaction_id is None:
            return
        self._live.discard(interaction_id)
        try:
            await self.store.forget_accepted(interaction_id)
        except Exception:  # noqa: BLE001 - at worst the refusal is repeated after a restart
            log.exception("could not forget interaction %s", interaction_id)

    # --- start-up recovery ------------------------------------------------------------------

    async def recover(self, client: ImagineBot) -> int:
        """Finish every interaction a crash left between its ack and its job; returns how many."""
        rows = [r for r in await self.store.accepted_interactions() if r.id not in self._live]
        for row in rows:
            try:
                await self._recover_one(client, row)
            except Exception:  # noqa: BLE001 - one bad row must not stop the others
                log.exception("recovering interaction %s failed", row.id)
        if rows:
            log.info("recovered %d interactions acknowledged before the restart", len(rows))
        return len(rows)

    async def _recover_one(self, client: ImagineBot, row: AcceptedInteraction) -> None:
        if await self.store.job_for_interaction(row.id) is not None:
            await self.store.forget_accepted(row.id)  # crashed between the job and the cleanup
            return
        interaction = rebuild_interaction(client, row)
        if row.attempts > MAX_REPLAYS:
            await reply_error(
                interaction,
                "your request could not be processed (the bot stopped while handling it "
                f"{row.attempts - 1} times); please try again",
                self,
            )
            return
        log.info("replaying interaction %s acknowledged before the restart", row.id)
        await replay(client, interaction)


def rebuild_interaction(client: discord.Client, row: AcceptedInteraction) -> discord.Interaction:
    """The acknowledged interaction again, from Discord's payload, already responded to."""
    interaction = discord.Interaction(data=row.payload, state=client._connection)  # noqa: SLF001
    # Acknowledged before the crash: answers go to its "thinking" message, not a second ack.
    interaction.response._response_type = (  # noqa: SLF001
        discord.InteractionResponseType.deferred_channel_message
    )
    interaction.extras.update(
        accepted=True,
        replayed=True,
        thinking=True,
        ephemeral=row.ephemeral,
        accepted_at=row.created_at,
    )
    return interaction


async def replay(client: ImagineBot, interaction: discord.Interaction) -> None:
    """Run an interaction through the action it asked for, as when it first arrived."""
    data: dict[str, Any] = dict(interaction.data or {})
    try:
        if interaction.type == discord.InteractionType.application_command:
            await _replay_command(client, interaction, data)
        elif interaction.type == discord.InteractionType.modal_submit:
            if not await handle_modal_submit(interaction):
                raise UserInputError("this form cannot be resumed after a restart")
        elif interaction.type == discord.InteractionType.component:
            custom_id = str(data.get("custom_id", ""))
            for cls in DYNAMIC_ITEMS:
                match = cls.__discord_ui_compiled_template__.fullmatch(custom_id)
                if match is not None:
                    item = await cls.from_custom_id(interaction, None, match)  # type: ignore[arg-type]
                    await item.callback(interaction)
                    break
            else:
                raise UserInputError("this button cannot be resumed after a restart")
        else:
            raise UserInputError("this request cannot be resumed after a restart")
    except UserInputError as exc:
        await reply_error(interaction, str(exc), client.acceptor)
    except Exception:
        log.exception("replaying interaction %s failed", interaction.id)
        await reply_error(interaction, GENERIC_ERROR, client.acceptor)


async def _replay_command(
    client: ImagineBot, interaction: discord.Interaction, data: dict[str, Any]
) -> None:
    """The slash commands that accept (and so record) an interaction: /imagine, /describe."""
    name = data.get("name")
    describe = client.get_cog(DESCRIBE_COG)
    if name == "imagine":
        options = _command_options(interaction, data)
        if "prompt" not in options:
            raise UserInputError("the recorded /imagine has no prompt")
        await client.submitter.imagine(interaction, **options)
    elif name == "describe" and describe is not None:
        await describe.run(interaction, **_command_options(interaction, data))
    else:
        raise UserInputError(f"/{name} cannot be resumed after a restart")


def _command_options(interaction: discord.Interaction, data: dict[str, Any]) -> dict[str, Any]:
    """A command's options from the raw payload (Discord already checked their types/ranges)."""
    resolved = (data.get("resolved") or {}).get("attachments") or {}
    options: dict[str, Any] = {}
    for option in data.get("options") or []:
        name, value = option.get("name"), option.get("value")
        if name == "image":
            raw = resolved.get(str(value))
            value = (
                discord.Attachment(data=raw, state=interaction._state)  # noqa: SLF001
                if raw
                else None
            )
        options[name] = value
    return options
