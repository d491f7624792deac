"""Queue position and "about 40 s" for a queued job.

Why a measured cost model: the engine's cost unit (megapixels x steps x images) is the same on
every machine, but seconds per unit differ by 100x between a CPU and an H100. The worker feeds
each finished job's measured seconds into an exponentially weighted average, so estimates track
the real device (and a model change) within a few jobs.

ETAs only go down while a job waits: when jobs ahead of it finish, its estimate never increases,
even if the measured speed got worse meanwhile (a bouncing ETA reads as a broken promise). It
may go up only when work was put ahead of it (a newly arrived user gets a fair turn first).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from generation.scheduler import Entry, Scheduler


class CostModel:
    """Seconds per cost unit, as an EWMA of measured runs."""

    def __init__(self, seconds_per_unit: float, *, alpha: float = 0.2) -> None:
        if not seconds_per_unit > 0:
            raise ValueError("seconds_per_unit must be positive")
        self.seconds_per_unit = seconds_per_unit
        self.alpha = alpha

    def observe(self, cost: float, seconds: float) -> None:
        if cost > 0 and seconds > 0:
            rate = seconds / cost
            self.seconds_per_unit += self.alpha * (rate - self.seconds_per_unit)

    def seconds(self, cost: float) -> float:
        return cost * self.seconds_per_unit


@dataclass(frozen=True)
class Estimate:
    position: int  # 1 = next to run
    eta_s: float  # seconds until it starts
    run_s: float  # seconds it is expected to take once started


@dataclass
class _Promise:
    cost_ahead: float
    eta_s: float


class EtaEstimator:
    """Positions and ETAs for queued jobs, from the scheduler's simulated order."""

    def __init__(self, scheduler: Scheduler, model: CostModel) -> None:
        self.scheduler = scheduler
        self.model = model
        self._promised: dict[str, _Promise] = {}

    def estimates(
        self,
        running_left_s: float = 0.0,
        *,
        limit: int | None = None,
        only: Collection[str] | None = None,
    ) -> dict[str, Estimate]:
        """Every queued job's estimate (or the first ``limit``), in one O(n log n) pass.

        ``running_left_s``: the worker's guess of how long the job(s) on the GPU still need.
        ``only``: just these jobs (e.g. one user's, for /queue); the pass stops at the last of
        them to be queued, so it costs the furthest one's position, not the queue's length.
        """
        wanted = None if only is None else {j for j in only if j in self.scheduler}
        out: dict[str, Estimate] = {}
        cost_ahead = 0.0
        if wanted is None or wanted:
            for position, entry in enumerate(self.scheduler.order(limit), start=1):
                if wanted is None or entry.job_id in wanted:
                    out[entry.job_id] = self._estimate(entry, position, cost_ahead, running_left_s)
                    if wanted is not None and len(out) == len(wanted):
                        break
                cost_ahead += entry.cost
        if only is None or len(self._promised) > 2 * len(self.scheduler) + 64:
            self._forget_gone()
        return out

    def estimate(self, job_id: str, running_left_s: float = 0.0) -> Estimate | None:
        """One job's estimate; None if it is not queued. Costs O(position log n)."""
        return self.estimates(running_left_s, only=(job_id,)).get(job_id)

    def _forget_gone(self) -> None:
        """Drop promises of jobs that started or were cancelled.

        A full pass does it every time (it is O(queue) anyway); a targeted one (each submit
        estimates its job) only once promises outnumber twice the queue, so they cannot pile
        up on a bot whose users never ask for /queue, and a submit stays O(position).
        """
        for job_id in [j for j in self._promised if j not in self.scheduler]:
            del self._promised[job_id]

    def _estimate(
        self, entry: Entry, position: int, cost_ahead: float, running_left_s: float
    ) -> Estimate:
        eta = running_left_s + self.model.seconds(cost_ahead)
        promise = self._promised.get(entry.job_id)
        # Tolerance: float sums over a changed set of jobs may differ in the last bits.
        if promise is not None and cost_ahead <= promise.cost_ahead * (1 + 1e-9):
            eta = min(eta, promise.eta_s)
        self._promised[entry.job_id] = _Promise(cost_ahead, eta)
        return Estimate(position=position, eta_s=eta, run_s=self.model.seconds(entry.cost))
