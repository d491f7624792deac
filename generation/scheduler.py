"""Fair share of one GPU: which queued job runs next.

Why start-time fair queueing (SFQ, Goyal et al. 1996), applied twice: first across guilds, then
across users inside a guild. Each node (guild, user) carries a virtual *start tag*; the node with
the smallest start tag is served next and is then charged ``cost / weight`` (its *finish tag*
becomes its next start tag). A node that becomes backlogged starts at ``max(virtual time, its
old finish tag)``, so a user who was idle cannot bank credit, and a heavy user cannot starve one
who arrives later. The cost is the engine's estimate of GPU work, so a 4-image 1024² job counts
for more than a 1-image 512² one. Picking is two heap pops: fast with 10,000 jobs queued.

A guild (or the whole instance) can switch to plain FIFO: its users then share one arrival-order
queue. Each user's own jobs always run in the order they were submitted.

This module is pure logic (no I/O, no clock): the worker feeds it and asks it what is next.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["fair", "fifo"]
_EVERYONE = "*"  # the single flow (or guild) used for FIFO queues
_ANY = object()  # "any batch key"
_VERSIONS = itertools.count(1)


@dataclass(eq=False)
class Entry:
    """A queued job as the scheduler sees it: who, how expensive, and what it can batch with."""

    job_id: str
    user_id: int
    guild_id: int | None
    cost: float
    seq: int  # arrival order; ties between equal start tags go to the older job
    weight: float = 1.0
    batch_key: Hashable = None
    payload: Any = field(default=None, repr=False)  # whatever the caller wants back (a Job)


class _Flow:
    """One FIFO list of entries: a user's own queue, or a whole FIFO guild's queue."""

    __slots__ = ("key", "jobs", "start", "finish", "version", "fifo")

    def __init__(self, key: Hashable, start: float, fifo: bool) -> None:
        self.key = key
        self.jobs: deque[Entry] = deque()
        self.start = start
        self.finish = start
        self.version = 0
        self.fifo = fifo

    def first_eligible(self, eligible: Callable[[int], bool]) -> Entry | None:
        if not self.fifo:  # a user's jobs run in order: only the head may go
            head = self.jobs[0]
            return head if eligible(head.user_id) else None
        return next((e for e in self.jobs if eligible(e.user_id)), None)


class _Node:
    """SFQ over children (flows inside a guild, or guilds at the root)."""

    __slots__ = ("vtime", "heap", "children", "idle_finish")

    def __init__(self) -> None:
        self.vtime = 0.0
        # (start tag, tie-break seq, version, key); stale items are skipped on pop.
        self.heap: list[tuple[float, int, int, Hashable]] = []
        self.children: dict[Hashable, Any] = {}
        # Finish tags of children that went idle, so they re-enter without banked credit.
        self.idle_finish: dict[Hashable, float] = {}

    def entry_start(self, key: Hashable) -> float:
        return max(self.vtime, self.idle_finish.pop(key, 0.0))

    def push(self, child: Any, tie: int) -> None:
        # Globally unique versions: a re-created child never revives a stale heap item.
        child.version = next(_VERSIONS)
        heapq.heappush(self.heap, (child.start, tie, child.version, child.key))

    def valid(self, item: tuple[float, int, int, Hashable]) -> Any:
        child = self.children.get(item[3])
        return child if child is not None and child.version == item[2] else None

    def top_tie(self) -> int:
        while self.heap and self.valid(self.heap[0]) is None:
            heapq.heappop(self.heap)
        return self.heap[0][1] if self.heap else 0


class _Guild(_Node):
    __slots__ = ("key", "start", "finish", "version", "weight", "count")

    def __init__(self, key: Hashable, start: float, weight: float) -> None:
        super().__init__()
        self.key = key
        self.start = start
        self.finish = start
        self.version = 0
        self.weight = weight
        self.count = 0  # queued entries in this guild


class _FlowView:
    """A flow as the look-ahead sees it: its real deque, read from a position on."""

    __slots__ = ("key", "start", "version", "head", "_rest")

    def __init__(self, flow: _Flow) -> None:
        self.key, self.start, self.version = flow.key, flow.start, flow.version
        self._rest = iter(flow.jobs)  # raises if the deque changes while being read
        self.head: Entry = next(self._rest)

    def advance(self, charge: float) -> bool:
        """Serve the head; True if the flow still has work (and so a new start tag)."""
        head = next(self._rest, None)
        if head is None:
            self.version = -1  # gone: its heap items are stale
            return False
        self.head = head
        self.start += charge
        self.version = next(_VERSIONS)
        return True


class _GuildView:
    """A guild as the look-ahead sees it: a copy of its heap, flows read lazily."""

    __slots__ = ("start", "version", "weight", "count", "heap", "_real", "_flows")

    def __init__(self, guild: _Guild) -> None:
        self.start, self.version = guild.start, guild.version
        self.weight, self.count = guild.weight, guild.count
        self.heap = guild.heap.copy()
        self._real = guild.children
        self._flows: dict[Hashable, _FlowView] = {}

    def _valid(self, item: tuple[float, int, int, Hashable]) -> _FlowView | None:
        key = item[3]
        flow = self._flows.get(key)
        if flow is None:
            real = self._real.get(key)
            if real is None or real.version != item[2]:
                return None
            flow = self._flows[key] = _FlowView(real)
        return flow if flow.version == item[2] else None

    def next_flow(self) -> _FlowView:
        """Pop the flow with the smallest start tag (its item is replaced once it is served)."""
        while True:
            flow = self._valid(heapq.heappop(self.heap))
            if flow is not None:
                return flow

    def top_tie(self) -> int:
        while self.heap and self._valid(self.heap[0]) is None:
            heapq.heappop(self.heap)
        return self.heap[0][1] if self.heap else 0


class _State:
    """The whole two-level tree; ``lookahead`` previews its future picks without changing it."""

    def __init__(self) -> None:
        self.root = _Node()

    def add(self, entry: Entry, guild_key: Hashable, flow_key: Hashable, fifo: bool,
            guild_weight: float) -> None:
        root = self.root
        guild = root.children.get(guild_key)
        if guild is None:
            guild = _Guild(guild_key, root.entry_start(guild_key), guild_weight)
            root.children[guild_key] = guild
            root.push(guild, entry.seq)
        flow = guild.children.get(flow_key)
        if flow is None:
            flow = _Flow(flow_key, guild.entry_start(flow_key), fifo)
            guild.children[flow_key] = flow
            flow.jobs.append(entry)
            guild.push(flow, entry.seq)
        else:
            flow.jobs.append(entry)
        guild.count += 1

    def remove(self, entry: Entry, guild_key: Hashable, flow_key: Hashable) -> None:
        guild = self.root.children[guild_key]
        flow = guild.children[flow_key]
        was_head = flow.jobs[0] is entry
        flow.jobs.remove(entry)
        guild.count -= 1
        if not flow.jobs:
            # Leaving before being served costs nothing: keep the old finish tag only.
            del guild.children[flow_key]
            guild.idle_finish[flow_key] = flow.finish
        elif was_head:
            guild.push(flow, flow.jobs[0].seq)  # new head, new tie-break
        if guild.count == 0:
            del self.root.children[guild_key]
            self.root.idle_finish[guild_key] = guild.finish

    def pick(self, eligible: Callable[[int], bool], batch_key: Hashable = _ANY) -> Entry | None:
        """Serve the next entry; with ``batch_key``, only if the next one has that key."""
        found = self.select(eligible)
        if found is None:
            return None
        guild, flow, entry = found
        if batch_key is not _ANY and entry.batch_key != batch_key:
            return None
        self.charge(guild, flow, entry)
        return entry

    def select(self, eligible: Callable[[int], bool]) -> tuple[_Guild, _Flow, Entry] | None:
        """Find the next entry (smallest start tags, users under their cap); changes no tag."""
        root = self.root
        skipped = []
        found = None
        while root.heap:
            item = heapq.heappop(root.heap)
            guild = root.valid(item)
            if guild is None:
                continue  # stale
            skipped.append(item)
            found = self._select_in_guild(guild, eligible)
            if found is not None:
                break
            # every user of this guild is at their running cap: look at the next guild
        for item in skipped:
            heapq.heappush(root.heap, item)
        return found

    @staticmethod
    def _select_in_guild(
        guild: _Guild, eligible: Callable[[int], bool]
    ) -> tuple[_Guild, _Flow, Entry] | None:
        skipped = []
        found = None
        while guild.heap:
            item = heapq.heappop(guild.heap)
            flow = guild.valid(item)
            if flow is None:
                continue
            skipped.append(item)
            entry = flow.first_eligible(eligible)
            if entry is not None:
                found = (guild, flow, entry)
                break
        for item in skipped:
            heapq.heappush(guild.heap, item)
        return found

    def charge(self, guild: _Guild, flow: _Flow, entry: Entry) -> None:
        """Dequeue ``entry`` and advance the tags of its flow and guild (SFQ)."""
        root = self.root
        if flow.jobs[0] is entry:
            flow.jobs.popleft()
        else:  # FIFO flow: the head's user was at their running cap
            flow.jobs.remove(entry)
        guild.vtime = flow.start
        flow.finish = flow.start + entry.cost / entry.weight
        if flow.jobs:
            flow.start = flow.finish
            guild.push(flow, flow.jobs[0].seq)  # the version bump makes the old item stale
        else:
            del guild.children[flow.key]
            guild.idle_finish[flow.key] = flow.finish
        root.vtime = guild.start
        guild.finish = guild.start + entry.cost / guild.weight
        guild.count -= 1
        if guild.count:
            guild.start = guild.finish
            root.push(guild, guild.top_tie())
        else:
            del root.children[guild.key]
            root.idle_finish[guild.key] = guild.finish

    def lookahead(self) -> Iterator[Entry]:
        """The entries ``pick(_always)`` would return one after another, changing nothing.

        Why not simulate on a copy: copying every flow's deque costs O(queue) before the first
        answer, and the worker asks for one job's place on every submit. Here the root heap is
        copied, a guild's heap only when the simulation first reaches that guild, and a flow is
        a read position in its real deque plus its simulated tags, so the n-th answer costs
        O(n log n) plus the guilds reached. The steps mirror ``select`` and ``charge``; tags
        that only matter when something new arrives (vtime, finish, idle_finish) are skipped.
        """
        real_guilds = self.root.children
        heap = self.root.heap.copy()
        guilds: dict[Hashable, _GuildView] = {}
        while heap:
            _start, _tie, version, key = heapq.heappop(heap)  # for good: charging replaces it
            guild = guilds.get(key)
            if guild is None:
                real = real_guilds.get(key)
                if real is None or real.version != version:
                    continue  # stale
                guild = guilds[key] = _GuildView(real)
            elif guild.version != version or not guild.count:
                continue
            flow = guild.next_flow()
            entry = flow.head
            yield entry
            if flow.advance(entry.cost / entry.weight):
                heapq.heappush(guild.heap, (flow.start, flow.head.seq, flow.version, flow.key))
            guild.count -= 1
            if guild.count:
                guild.start += entry.cost / guild.weight
                guild.version = next(_VERSIONS)
                heapq.heappush(heap, (guild.start, guild.top_tie(), guild.version, key))


class Scheduler:
    """The fair-share queue. Not thread-safe: call it from the event loop only.

    ``mode="fifo"`` makes the whole instance one arrival-order queue; ``fifo_guilds`` does that
    for single guilds (they still get their fair share against other guilds).
    """

    def __init__(
        self,
        *,
        mode: Mode = "fair",
        max_running_per_user: int = 1,
        fifo_guilds: set[int] | None = None,
        guild_weights: dict[int, float] | None = None,
    ) -> None:
        self.mode: Mode = mode
        self.max_running_per_user = max_running_per_user
        self.fifo_guilds: set[int] = set(fifo_guilds or ())
        self.guild_weights = dict(guild_weights or {})
        self._state = _State()
        self._entries: dict[str, tuple[Entry, Hashable, Hashable]] = {}
        self._queued_by_user: dict[int, int] = {}
        self._queued_by_guild: dict[int | None, int] = {}
        self._running: dict[str, Entry] = {}
        self._running_by_user: dict[int, int] = {}
        self._changes = 0  # order() reads the live queue, so it must notice changes

    # --- feeding -------------------------------------------------------------------------------

    def push(self, entry: Entry) -> None:
        """Queue an entry (caps are checked separately, so recovered jobs are never refused)."""
        if entry.job_id in self._entries or entry.job_id in self._running:
            raise ValueError(f"job {entry.job_id} is already in the scheduler")
        if not entry.cost > 0 or not entry.weight > 0:
            raise ValueError(f"job {entry.job_id}: cost and weight must be positive")
        guild_key, flow_key, fifo = self._keys(entry)
        weight = self.guild_weights.get(entry.guild_id, 1.0) if guild_key != _EVERYONE else 1.0
        self._changes += 1
        self._state.add(entry, guild_key, flow_key, fifo, weight)
        self._entries[entry.job_id] = (entry, guild_key, flow_key)
        self._queued_by_user[entry.user_id] = self._queued_by_user.get(entry.user_id, 0) + 1
        self._queued_by_guild[entry.guild_id] = self._queued_by_guild.get(entry.guild_id, 0) + 1

    def remove(self, job_id: str) -> Entry | None:
        """Take a queued entry out (cancelled); None if it is not queued here."""
        found = self._entries.pop(job_id, None)
        if found is None:
            return None
        entry, guild_key, flow_key = found
        self._changes += 1
        self._state.remove(entry, guild_key, flow_key)
        self._dec(self._queued_by_user, entry.user_id)
        self._dec(self._queued_by_guild, entry.guild_id)
        return entry

    # --- serving -------------------------------------------------------------------------------

    def pick(self, *, batch_key: Hashable = _ANY) -> Entry | None:
        """Next entry in fair order among users under their running cap; it becomes running.

        With ``batch_key``: only if that next entry has this key (else None and nothing changes),
        which is how the worker co-batches without letting anyone jump the fair order.

        The running cap holds a user back only while someone else can go: when every queued
        job belongs to users at their cap, the next one is picked anyway (work-conserving), so
        a lone user's next job is prepared while their current one runs.
        """
        entry = self._state.pick(self._eligible, batch_key)
        if entry is None and batch_key is _ANY and self._entries:
            entry = self._state.pick(_always)
        if entry is not None:
            self._changes += 1
            del self._entries[entry.job_id]
            self._dec(self._queued_by_user, entry.user_id)
            self._dec(self._queued_by_guild, entry.guild_id)
            self._running[entry.job_id] = entry
            self._running_by_user[entry.user_id] = self._running_by_user.get(entry.user_id, 0) + 1
        return entry

    def peek(self) -> Entry | None:
        """What ``pick()`` would return now, without changing anything."""
        found = self._state.select(self._eligible)
        return found[2] if found else None

    def finished(self, job_id: str) -> None:
        """A running entry left the GPU: its user may run another."""
        entry = self._running.pop(job_id, None)
        if entry is not None:
            self._dec(self._running_by_user, entry.user_id)

    # --- looking ahead -------------------------------------------------------------------------

    def order(self, limit: int | None = None) -> Iterator[Entry]:
        """Queued entries in the order they will run if nothing else arrives.

        Running caps are ignored here: with one GPU a user's running job is done before their
        next one is picked, so the cap delays nobody in the simulated order.
        """
        changes = self._changes
        for entry in itertools.islice(self._state.lookahead(), limit):
            yield entry
            if self._changes != changes:
                raise RuntimeError("the scheduler changed while its order() was being read")

    def position(self, job_id: str) -> int | None:
        """1-based place of a queued job in ``order()``; None if it is not queued."""
        if job_id not in self._entries:
            return None
        for n, entry in enumerate(self.order(), start=1):
            if entry.job_id == job_id:
                return n
        return None  # unreachable while the state is consistent

    # --- introspection -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._entries

    def get(self, job_id: str) -> Entry | None:
        found = self._entries.get(job_id)
        return found[0] if found else None

    def queued_for_user(self, user_id: int) -> int:
        return self._queued_by_user.get(user_id, 0)

    def queued_by_guild(self) -> dict[int | None, int]:
        """Queued jobs per guild (None: DMs), kept as jobs come and go: no ``order()`` pass."""
        return dict(self._queued_by_guild)

    @property
    def running(self) -> list[Entry]:
        return list(self._running.values())

    # --- internals -----------------------------------------------------------------------------

    def _keys(self, entry: Entry) -> tuple[Hashable, Hashable, bool]:
        if self.mode == "fifo":
            return _EVERYONE, _EVERYONE, True
        guild_key = ("guild", entry.guild_id) if entry.guild_id is not None else ("dm",)
        if entry.guild_id in self.fifo_guilds:
            return guild_key, _EVERYONE, True
        return guild_key, entry.user_id, False

    def _eligible(self, user_id: int) -> bool:
        return self._running_by_user.get(user_id, 0) < self.max_running_per_user

    @staticmethod
    def _dec(counts: dict[Any, int], key: Any) -> None:
        left = counts[key] - 1
        if left:
            counts[key] = left
        else:
            del counts[key]


def _always(_user_id: int) -> bool:
    return True
