"""Fair-share order, caps, weights, FIFO switch and ETAs of the pure scheduler."""

from __future__ import annotations

import copy
import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generation.eta import CostModel, Estimate, EtaEstimator
from generation.scheduler import Entry, Scheduler


class Queue:
    """A scheduler plus a job-name counter, so scenarios read like the order they expect."""

    def __init__(self, **kwargs) -> None:
        self.s = Scheduler(**kwargs)
        self.seq = itertools.count(1)
        self.per_user: dict[str, int] = {}

    def add(self, user: str, guild: int | None = 1, cost: float = 1.0, weight: float = 1.0,
            key: object = None, n: int = 1) -> None:
        for _ in range(n):
            k = self.per_user[user] = self.per_user.get(user, 0) + 1
            self.s.push(Entry(f"{user}{k}", _uid(user), guild, cost, next(self.seq), weight, key))

    def run(self, n: int | None = None) -> list[str]:
        """Pick (and finish at once, as a single GPU does) ``n`` jobs or all of them."""
        out = []
        while n is None or len(out) < n:
            entry = self.s.pick()
            if entry is None:
                break
            out.append(entry.job_id)
            self.s.finished(entry.job_id)
        return out


def _uid(name: str) -> int:
    return ord(name[0])


def test_heavy_user_cannot_starve_a_light_one_arriving_later() -> None:
    q = Queue()
    q.add("a", n=5)
    assert q.run(2) == ["a1", "a2"]
    q.add("b", n=2)
    assert q.run() == ["b1", "a3", "b2", "a4", "a5"]


def test_idle_user_cannot_bank_credit() -> None:
    q = Queue()
    q.add("a", n=10)
    q.add("b", n=1)
    assert q.run(4) == ["a1", "b1", "a2", "a3"]
    # b was idle while a ran 3 jobs; coming back, b gets its turn but no burst of 3.
    q.add("b", n=3)
    assert q.run(6) == ["b2", "a4", "b3", "a5", "b4", "a6"]


def test_guilds_share_first_then_users_inside_a_guild() -> None:
    q = Queue()
    q.add("a", guild=1, n=3)
    q.add("b", guild=1, n=3)
    q.add("c", guild=2, n=3)
    # Guild 2 (one user) gets half the GPU; a and b split guild 1's half.
    assert q.run() == ["a1", "c1", "b1", "c2", "a2", "c3", "b2", "a3", "b3"]


def test_weights_give_proportional_service() -> None:
    q = Queue()
    q.add("a", weight=2.0, n=6)
    q.add("b", weight=1.0, n=6)
    assert q.run() == ["a1", "b1", "a2", "a3", "b2", "a4", "a5", "b3", "a6", "b4", "b5", "b6"]


def test_cost_counts_not_job_count() -> None:
    q = Queue()
    q.add("a", cost=3.0, n=2)
    q.add("b", cost=1.0, n=6)
    # One 3-unit job of a is worth three 1-unit jobs of b.
    assert q.run() == ["a1", "b1", "b2", "b3", "a2", "b4", "b5", "b6"]


def test_each_users_jobs_stay_in_submission_order() -> None:
    q = Queue()
    for user in "abcab":
        q.add(user, guild=ord(user) % 2, cost=1 + ord(user) % 3)
    q.add("a", n=3)
    order = q.run()
    for user in "abc":
        mine = [j for j in order if j[0] == user]
        assert mine == sorted(mine, key=lambda j: int(j[1:]))


def test_global_fifo_switch_serves_in_arrival_order() -> None:
    q = Queue(mode="fifo")
    q.add("a", n=3)
    q.add("b", guild=2, n=2)
    assert q.run() == ["a1", "a2", "a3", "b1", "b2"]


def test_per_guild_fifo_keeps_fair_share_between_guilds() -> None:
    q = Queue(fifo_guilds={1})
    q.add("a", guild=1, n=2)
    q.add("b", guild=1, n=2)
    q.add("c", guild=2, n=2)
    q.add("d", guild=2, n=2)
    # Guild 1 is FIFO inside (a, a, b, b); guild 2 is fair inside (c, d, c, d).
    assert q.run() == ["a1", "c1", "a2", "d1", "b1", "c2", "b2", "d2"]


def test_running_cap_skips_a_user_while_others_wait() -> None:
    s = Scheduler(max_running_per_user=1)
    s.push(Entry("b0", 2, 1, 1.0, 0))
    s.push(Entry("b1", 2, 1, 1.0, 1))
    assert s.pick().job_id == "b0"
    s.finished("b0")
    for i in range(3):  # a heavily weighted user: due again almost at once
        s.push(Entry(f"a{i}", 1, 1, 1.0, 2 + i, weight=10.0))
    assert s.pick().job_id == "a0"
    # a1 is due next, but user 1 is at their running cap while user 2 can go.
    assert [e.job_id for e in s.order(1)] == ["a1"]
    assert s.pick().job_id == "b1"
    s.finished("a0")
    assert s.pick().job_id == "a1"
    # Everyone left is at their cap: the cap does not idle the GPU, the next job goes anyway.
    assert s.pick().job_id == "a2"
    assert s.pick() is None


def test_running_cap_never_lets_a_user_fill_a_batch() -> None:
    s = Scheduler(max_running_per_user=1)
    for i in range(3):
        s.push(Entry(f"j{i}", 1, 1, 1.0, i, batch_key="k"))
    assert s.pick().job_id == "j0"
    assert s.pick(batch_key="k") is None  # co-batching respects the cap strictly


def test_running_cap_in_a_fifo_queue_looks_past_the_head() -> None:
    s = Scheduler(mode="fifo", max_running_per_user=1)
    for i, user in enumerate([1, 1, 2]):
        s.push(Entry(f"j{i}", user, 1, 1.0, i))
    assert [s.pick().job_id, s.pick().job_id] == ["j0", "j2"]


def test_remove_takes_a_queued_job_out() -> None:
    q = Queue()
    q.add("a", n=3)
    q.add("b", n=1)
    assert q.s.remove("a2").job_id == "a2"
    assert q.s.remove("a2") is None
    assert q.run() == ["a1", "b1", "a3"]


def test_batch_key_pick_only_takes_the_next_job_in_fair_order() -> None:
    q = Queue()
    q.add("a", key="x", n=2)
    q.add("b", key="y")
    q.add("c", key="x")
    assert q.s.pick().job_id == "a1"
    before = [e.job_id for e in q.s.order()]
    assert before == ["b1", "c1", "a2"]
    # c1 could batch with a1, but b1 is next in fair order: nobody jumps ahead of b.
    assert q.s.pick(batch_key="x") is None
    assert [e.job_id for e in q.s.order()] == before
    assert q.s.pick(batch_key="y").job_id == "b1"


def test_order_predicts_picks_and_changes_nothing() -> None:
    q = Queue()
    q.add("a", cost=2, n=3)
    q.add("b", guild=2, n=4)
    q.add("c", cost=0.5, n=2)
    predicted = [e.job_id for e in q.s.order()]
    assert [e.job_id for e in q.s.order()] == predicted
    assert q.s.position(predicted[3]) == 4
    assert q.s.position("nope") is None
    assert q.run() == predicted


def test_rejects_nonsense_entries() -> None:
    s = Scheduler()
    s.push(Entry("j", 1, 1, 1.0, 1))
    with pytest.raises(ValueError, match="already"):
        s.push(Entry("j", 1, 1, 1.0, 2))
    with pytest.raises(ValueError, match="positive"):
        s.push(Entry("k", 1, 1, 0.0, 3))


def test_ten_thousand_jobs_from_a_thousand_users_all_come_out_fairly() -> None:
    s = Scheduler()
    for seq in range(10_000):
        s.push(Entry(f"j{seq}", seq % 1000, seq % 7, 1.0, seq))
    first_round = set()
    for _ in range(1000):
        entry = s.pick()
        s.finished(entry.job_id)
        first_round.add(entry.user_id)
    # Guilds have 142-143 users each; the first 1000 picks reach nearly every user once.
    assert len(first_round) >= 990
    n = 1000
    while (entry := s.pick()) is not None:
        s.finished(entry.job_id)
        n += 1
    assert n == 10_000 and len(s) == 0


jobs_strategy = st.lists(
    st.tuples(
        st.integers(0, 5),  # user
        st.integers(0, 2),  # guild
        st.sampled_from([0.5, 1.0, 2.0, 4.0]),  # cost
        st.sampled_from([1.0, 2.0]),  # weight
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(jobs_strategy)
def test_property_order_matches_picks_and_is_fifo_per_user(jobs) -> None:
    s = Scheduler(max_running_per_user=100)
    for seq, (user, _guild, cost, weight) in enumerate(jobs):
        # A user's jobs keep their order within a guild (each guild queues its own users).
        s.push(Entry(f"j{seq}", user, user % 3, cost, seq, weight))
    predicted = [e.job_id for e in s.order()]
    picked = []
    while (entry := s.pick()) is not None:
        picked.append(entry)
    assert [e.job_id for e in picked] == predicted
    assert len(picked) == len(jobs)  # work-conserving: nothing left behind
    for user in {u for u, *_ in jobs}:
        seqs = [e.seq for e in picked if e.user_id == user]
        assert seqs == sorted(seqs)


@settings(max_examples=60, deadline=None)
@given(jobs_strategy, st.lists(st.floats(0.1, 10.0), min_size=40, max_size=40))
def test_property_eta_never_increases_as_jobs_ahead_finish(jobs, speeds) -> None:
    s = Scheduler()
    for seq, (user, guild, cost, weight) in enumerate(jobs):
        s.push(Entry(f"j{seq}", user, guild, cost, seq, weight))
    model = CostModel(1.0)
    eta = EtaEstimator(s, model)
    last = eta.estimates()
    for speed in speeds:
        entry = s.pick()
        if entry is None:
            break
        # The measured speed swings both ways; waiting jobs must never see their ETA go up.
        model.observe(entry.cost, entry.cost * speed)
        s.finished(entry.job_id)
        now = eta.estimates()
        for job_id, estimate in now.items():
            assert estimate.eta_s <= last[job_id].eta_s + 1e-9
            assert estimate.position < last[job_id].position
        last = now


def test_eta_may_grow_when_a_newcomer_is_put_ahead() -> None:
    s = Scheduler()
    for seq in range(4):
        s.push(Entry(f"a{seq}", 1, 1, 1.0, seq))
    eta = EtaEstimator(s, CostModel(2.0))
    before = eta.estimate("a3")
    assert (before.position, before.eta_s) == (4, 6.0)
    s.push(Entry("b0", 2, 1, 1.0, 10))  # a fair newcomer runs before a's later jobs
    after = eta.estimate("a3")
    assert (after.position, after.eta_s) == (5, 8.0)
    assert eta.estimate("b0").position == 2
    assert eta.estimate("gone") is None


def test_cost_model_tracks_measured_speed() -> None:
    model = CostModel(1.0, alpha=0.5)
    model.observe(2.0, 8.0)  # 4 s per unit measured
    assert model.seconds_per_unit == pytest.approx(2.5)
    model.observe(0.0, 5.0)  # nonsense measurements are ignored
    assert model.seconds(2.0) == pytest.approx(5.0)


def _full_simulation(s: Scheduler) -> list[Entry]:
    """The straightforward order: pick everything from a deep copy, nobody held by a cap."""
    ref = copy.deepcopy(s)
    ref.max_running_per_user = 10**9
    picked = []
    while (entry := ref.pick()) is not None:
        picked.append(entry)
    return picked


ops_strategy = st.lists(
    st.tuples(
        # Mostly pushes and picks, so queues grow and tags carry history; now and then a
        # cancel or a finished job.
        st.sampled_from(["push"] * 8 + ["pick"] * 3 + ["remove", "finish"]),
        st.integers(0, 6),  # user
        st.sampled_from([0, 1, 2, None]),  # guild (None: a DM)
        st.sampled_from([0.1, 0.3, 0.5, 1.0, 2.0, 4.0]),  # cost: inexact sums included
        st.sampled_from([0.5, 1.0, 2.0, 3.0]),  # weight
        st.integers(0, 100),  # which queued/running job to cancel/finish
    ),
    min_size=10,
    max_size=60,
)


@settings(max_examples=120, deadline=None)
@given(
    ops_strategy,
    st.sampled_from(["fair", "fifo"]),
    st.sets(st.integers(0, 2), max_size=2),  # FIFO guilds
    st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=3, max_size=3),  # guild weights
    st.integers(1, 2),  # running cap
    st.integers(2, 30),  # queued cap
)
def test_property_cheap_order_equals_a_full_simulation(
    ops, mode, fifo_guilds, guild_weights, max_running, max_queued
) -> None:
    s = Scheduler(mode=mode, fifo_guilds=fifo_guilds, guild_weights=dict(enumerate(guild_weights)),
                  max_running_per_user=max_running)
    seq = itertools.count()
    for kind, user, guild, cost, weight, which in ops:
        if kind == "push":
            if s.queued_for_user(user) >= max_queued:
                continue
            n = next(seq)
            s.push(Entry(f"j{n}", user, guild, cost, n, weight))
        elif kind == "remove" and len(s):
            queued = [e.job_id for e in s.order()]
            assert s.remove(queued[which % len(queued)]) is not None
        elif kind == "pick":
            s.pick()
        elif kind == "finish" and s.running:
            s.finished(s.running[which % len(s.running)].job_id)
        # Tags, idle credit and stale heap items now carry history: compare after every step.
        expected = [e.job_id for e in _full_simulation(s)]
        assert [e.job_id for e in s.order()] == expected
        assert [e.job_id for e in s.order(3)] == expected[:3]
        assert s.queued_by_guild() == dict(Counter(e.guild_id for e in s.order()))

    expected_entries = _full_simulation(s)
    model = CostModel(0.7)
    estimates = EtaEstimator(s, model).estimates(5.0)
    cost_ahead = 0.0
    for position, entry in enumerate(expected_entries, start=1):
        want = Estimate(position, 5.0 + model.seconds(cost_ahead), model.seconds(entry.cost))
        assert EtaEstimator(s, model).estimate(entry.job_id, 5.0) == want
        assert estimates[entry.job_id] == want
        assert s.position(entry.job_id) == position
        cost_ahead += entry.cost
    some = [e.job_id for e in expected_entries[::3]] + ["gone"]
    picked = EtaEstimator(s, model).estimates(5.0, only=some)
    assert picked == {j: estimates[j] for j in some[:-1]}


def test_order_refuses_to_go_on_after_the_queue_changed() -> None:
    q = Queue()
    q.add("a", n=2)
    q.add("b", n=2)
    order = q.s.order()
    assert next(order).job_id == "a1"
    q.add("c")
    with pytest.raises(RuntimeError, match="changed"):
        next(order)
    assert [e.job_id for e in q.s.order()] == ["a1", "b1", "c1", "a2", "b2"]


def test_promises_of_started_jobs_do_not_pile_up_without_full_passes() -> None:
    s = Scheduler()
    eta = EtaEstimator(s, CostModel(1.0))
    for seq in range(1000):  # submit, estimate (as the worker does), start: no /queue ever
        s.push(Entry(f"j{seq}", seq % 3, 1, 1.0, seq))
        assert eta.estimate(f"j{seq}") is not None
        if seq % 10:
            s.pick()
    assert len(s) == 100
    assert len(eta._promised) <= 2 * len(s) + 64 + 1
