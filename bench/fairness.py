"""Drive the real fair-share scheduler with a simulated clock and measure how fair it is.

    python -m bench.fairness bench/scenarios/heavy_vs_light.json
    python -m bench.fairness --scale          # pick speed with 10,000 jobs from 1,000 users

A scenario is JSON: ``{"users": {name: {"guild": 1, "weight": 1.0, "light": false,
"jobs": [{"at": 0, "cost": 2.0, "repeat": 50, "every": 0}]}}, "mode": "fair",
"fifo_guilds": []}``. ``cost`` is GPU seconds. One simulated GPU serves one job at a time, picking
the next the moment the last one ends, as the worker does. The same arrivals also run through
plain FIFO, side by side, so the output shows what fair share changes.

Printed as JSON: each user's mean and max wait, the worst service gap (longest time a user had
work queued and got nothing), and Jain's index over the service each backlogged user received,
normalised by the share the policy entitles them to (guilds split evenly by weight, then users
inside a guild by weight), so 1.0 means "exactly the intended share".
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from generation.eta import CostModel, EtaEstimator
from generation.scheduler import Entry, Scheduler


@dataclass
class User:
    name: str
    uid: int
    guild: int
    weight: float
    light: bool
    arrivals: list[tuple[float, float]]  # (time, cost)


@dataclass
class Served:
    user: str
    arrival: float
    start: float
    end: float
    cost: float


@dataclass
class Result:
    served: list[Served] = field(default_factory=list)


def load_scenario(path: Path) -> tuple[dict, list[User]]:
    data = json.loads(path.read_text())
    users = []
    for uid, (name, spec) in enumerate(sorted(data["users"].items()), start=1):
        arrivals = []
        for job in spec["jobs"]:
            for k in range(int(job.get("repeat", 1))):
                arrivals.append((float(job["at"]) + k * float(job.get("every", 0)), float(job["cost"])))
        users.append(
            User(name, uid, int(spec.get("guild", 1)), float(spec.get("weight", 1.0)),
                 bool(spec.get("light", False)), sorted(arrivals))
        )
    return data, users


def simulate(data: dict, users: list[User], mode: str) -> Result:
    """One GPU, non-preemptive; the scheduler picks whenever the GPU frees up."""
    sched = Scheduler(
        mode=mode,  # type: ignore[arg-type]
        max_running_per_user=1,
        fifo_guilds=set(data.get("fifo_guilds", [])),
    )
    by_uid = {u.uid: u for u in users}
    events = sorted(
        (t, seq, u.uid, cost)
        for seq, (t, u, cost) in enumerate(
            sorted(((t, u, c) for u in users for t, c in u.arrivals), key=lambda x: (x[0], x[1].uid))
        )
    )
    arrivals = {}
    result = Result()
    now, i, busy_until, running = 0.0, 0, 0.0, None
    while i < len(events) or len(sched) or running:
        next_arrival = events[i][0] if i < len(events) else float("inf")
        if running is not None and busy_until <= next_arrival:
            now = busy_until
            sched.finished(running.job_id)
            running = None
        elif i < len(events):
            now = next_arrival
            t, seq, uid, cost = events[i]
            i += 1
            u = by_uid[uid]
            job_id = f"{u.name}#{seq}"
            arrivals[job_id] = t
            sched.push(Entry(job_id, uid, u.guild, cost, seq, u.weight))
            if i < len(events) and events[i][0] == now:
                continue  # take every arrival at this instant before picking
        if running is None:
            entry = sched.pick()
            if entry is not None:
                running = entry
                busy_until = now + entry.cost
                result.served.append(
                    Served(by_uid[entry.user_id].name, arrivals[entry.job_id], now, busy_until, entry.cost)
                )
    return result


def jain(values: list[float]) -> float:
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


def entitlements(backlogged: list[User]) -> dict[str, float]:
    """The policy's share for each backlogged user: guilds equal, then users by weight."""
    guilds: dict[int, list[User]] = {}
    for u in backlogged:
        guilds.setdefault(u.guild, []).append(u)
    share = {}
    for members in guilds.values():
        total = sum(m.weight for m in members)
        for m in members:
            share[m.name] = (1 / len(guilds)) * m.weight / total
    return share


def backlog_periods(result: Result) -> list[tuple[float, float, list[str]]]:
    """Maximal periods during which the same users are backlogged (queued or running)."""
    per_user: dict[str, list[Served]] = {}
    for s in result.served:
        per_user.setdefault(s.user, []).append(s)
    spans: dict[str, list[list[float]]] = {}
    for name, jobs in per_user.items():
        merged: list[list[float]] = []
        for s in sorted(jobs, key=lambda s: s.arrival):
            if merged and s.arrival <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], s.end)
            else:
                merged.append([s.arrival, s.end])
        spans[name] = merged
    cuts = sorted({t for sp in spans.values() for a, b in sp for t in (a, b)})
    periods: list[tuple[float, float, list[str]]] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        inside = sorted(n for n, sp in spans.items() if any(x <= a and b <= y for x, y in sp))
        if periods and periods[-1][2] == inside and periods[-1][1] == a:
            periods[-1] = (periods[-1][0], b, inside)
        else:
            periods.append((a, b, inside))
    return periods


def fairness(users: list[User], result: Result, max_cost: float) -> dict:
    """Jain's index over the service each user got while backlogged alongside others.

    For every period with two or more users backlogged, each is *entitled* to the period's
    length times its policy share; x_i = service received / service entitled, summed over all
    such periods, and Jain's index is taken over the x_i (1.0 = everyone got exactly their
    share). Service is counted as a fluid: a job running across a period boundary counts pro
    rata. ``jain_period_min`` scores single periods instead; with whole, non-preemptible jobs a
    period only a few jobs long cannot be fair, so only periods of at least
    (backlogged users x max job cost x 4) are scored there.
    """
    by_name = {u.name: u for u in users}
    entitled: dict[str, float] = {}
    received: dict[str, float] = {}
    period_scores = []
    for a, b, names in backlog_periods(result):
        if len(names) < 2:
            continue
        share = entitlements([by_name[n] for n in names])
        got = {n: 0.0 for n in names}
        for s in result.served:
            if s.user in got:
                got[s.user] += max(0.0, min(b, s.end) - max(a, s.start))
        for n in names:
            entitled[n] = entitled.get(n, 0.0) + (b - a) * share[n]
            received[n] = received.get(n, 0.0) + got[n]
        if b - a >= 4 * len(names) * max_cost:
            period_scores.append(jain([got[n] / share[n] for n in names]))
    if not entitled:
        return {"jain": None, "jain_period_min": None, "service_over_share": {}}
    ratio = {n: received[n] / entitled[n] for n in sorted(entitled)}
    return {
        "jain": round(jain(list(ratio.values())), 4),
        "jain_period_min": round(min(period_scores), 4) if period_scores else None,
        "service_over_share": {n: round(x, 3) for n, x in ratio.items()},
    }


def report(data: dict, users: list[User], result: Result) -> dict:
    max_cost = max(c for u in users for _, c in u.arrivals)
    out_users = {}
    worst_gap = 0.0
    for u in users:
        mine = sorted((s for s in result.served if s.user == u.name), key=lambda s: s.start)
        waits = [s.start - s.arrival for s in mine]
        # Service gap: time with work queued and nothing running for this user.
        gaps, free_at = [], 0.0
        for s in mine:
            gaps.append(s.start - max(s.arrival, free_at))
            free_at = s.end
        worst_gap = max(worst_gap, max(gaps, default=0.0))
        out_users[u.name] = {
            "guild": u.guild,
            "weight": u.weight,
            "jobs": len(mine),
            "mean_wait_s": round(statistics.fmean(waits), 2) if waits else None,
            "max_wait_s": round(max(waits), 2) if waits else None,
            "worst_gap_s": round(max(gaps, default=0.0), 2),
        }
    # The light-user promise: a user arriving with nothing queued is served within
    # (backlogged users x max job cost).
    bound_ok, bound_detail = True, {}
    for u in users:
        if not u.light:
            continue
        worst = 0.0
        free_at = -1.0
        for s in sorted((s for s in result.served if s.user == u.name), key=lambda s: s.start):
            if s.arrival > free_at:  # the user had nothing queued or running: a fresh arrival
                backlogged = {
                    o.user for o in result.served if o.arrival <= s.arrival < o.end
                } | {u.name}
                limit = len(backlogged) * max_cost
                worst = max(worst, (s.start - s.arrival) / limit)
            free_at = s.end
        bound_detail[u.name] = round(worst, 3)
        bound_ok &= worst <= 1.0
    return {
        "users": out_users,
        "worst_service_gap_s": round(worst_gap, 2),
        **fairness(users, result, max_cost),
        "light_wait_over_bound": bound_detail,  # <= 1.0 means within the bound
        "light_users_within_bound": bound_ok if bound_detail else None,
    }


def run_scenario(path: Path) -> dict:
    data, users = load_scenario(path)
    fair = report(data, users, simulate(data, users, data.get("mode", "fair")))
    fifo = report(data, users, simulate(data, users, "fifo"))
    light = [u.name for u in users if u.light]
    out = {"scenario": data.get("name", path.stem), "fair": fair, "fifo": fifo}
    if light:
        worst = lambda r: max(r["users"][n]["max_wait_s"] for n in light)  # noqa: E731
        out["light_max_wait_fair_over_fifo"] = round(worst(fair) / max(worst(fifo), 1e-9), 3)
    checks = {}
    target = data.get("target_jain")
    if target is not None and fair["jain"] is not None:
        checks[f"jain >= {target}"] = fair["jain"] >= target
    if fair["light_users_within_bound"] is not None:
        checks["light users served within bound"] = fair["light_users_within_bound"]
    out["checks"] = checks
    return out


def scale() -> dict:
    """How fast picking and ETAs stay with 10,000 jobs from 1,000 users (10 each, 37 guilds)."""
    out = {}
    for mode in ("fair", "fifo"):
        s = Scheduler(mode=mode, max_running_per_user=1)
        t = time.perf_counter()
        for seq in range(10_000):
            s.push(Entry(f"j{seq}", seq % 1000, seq % 37, 1.0 + seq % 5, seq))
        push_us = (time.perf_counter() - t) / 10_000 * 1e6
        eta = EtaEstimator(s, CostModel(0.5))
        t = time.perf_counter()
        estimates = eta.estimates()
        eta_ms = (time.perf_counter() - t) * 1e3
        # The worker estimates every job as it is submitted: what one estimate costs depends
        # on where the job sits in the queue, so time the first, the middle and the last.
        by_place = sorted(estimates, key=lambda job_id: estimates[job_id].position)
        places = {"first": by_place[0], "middle": by_place[len(by_place) // 2],
                  "last": by_place[-1], "newest": "j9999"}
        one_ms = {f"estimate_{name}_ms": round(_best_ms(functools.partial(eta.estimate, job_id)), 2)
                  for name, job_id in places.items()}
        one_ms["newest_position"] = estimates["j9999"].position
        # /queue: one user's ten jobs (user 999's, the last to arrive, so the pass goes far).
        mine = [f"j{seq}" for seq in range(999, 10_000, 1000)]
        one_ms["estimates_one_user_ms"] = round(
            _best_ms(functools.partial(eta.estimates, only=mine)), 2)
        t = time.perf_counter()
        picks = 0
        while (entry := s.pick()) is not None:
            s.finished(entry.job_id)
            picks += 1
        pick_us = (time.perf_counter() - t) / picks * 1e6
        out[mode] = {
            "jobs": picks,
            "push_us": round(push_us, 1),
            "pick_us_mean": round(pick_us, 1),
            "all_etas_ms": round(eta_ms, 1),
            "etas": len(estimates),
            **one_ms,
        }
    return out


def _best_ms(call: Callable[[], object], repeat: int = 3) -> float:
    """Fastest of a few runs: a single call is short enough for other load to skew it."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", type=Path, help="scenario JSON files")
    parser.add_argument("--scale", action="store_true", help="time picks with 10,000 jobs")
    args = parser.parse_args()
    if not args.scenarios and not args.scale:
        parser.error("give scenario files (bench/scenarios/*.json) or --scale")
    results = [run_scenario(p) for p in args.scenarios]
    if args.scale:
        results.append({"scale": scale()})
    print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    ok = all(all(r.get("checks", {}).values()) for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
