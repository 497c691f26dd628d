"""A fleet against a database that refuses connections: exactly bounded attempts, exact recovery.

A real PostgreSQL sits behind FlakyProxy, which refuses every new connection during the
outage. WORKERS handles stand for the processes of a fleet (each has its own retry budget,
as each process does) and each calls ``get_tasks`` once per TICK of fake time. The budgets run
on tests/_clock.py's FakeClock with a fixed jitter and retry waits are off, so the connection
attempts (counted from the handles' GaveUp events, cross-checked against the proxy's refusals)
and the moment each handle recovers are exact numbers, not rates measured on the wall clock.
"""

from __future__ import annotations

import time

import pytest

import taskcore
from _clock import FakeClock
from _pgserver import PgTarget
from taskcore import events
from taskcore.testing import FlakyProxy

pytestmark = pytest.mark.postgres

WORKERS = 8
TICK = 1 / 8  # fake seconds between two calls of one worker (a power of two: sums are exact)
OUTAGE_TICKS = 80  # 10 s of refused connections
ATTEMPTS = 3  # per call: the first try and two retries
FLOOR, WINDOW, RATIO = 1.0, 10.0, 0.2  # floor * window = 10 retries with no recent success
PROBE_INTERVAL = 1.0
JITTER = 0.5  # every probe comes (0.5 + 0.5 * JITTER) x PROBE_INTERVAL = 0.75 s after the last
DEADLINE_S = 10.0  # upper bound for waiting on the proxy's counters

# One worker's outage, derived from the numbers above. Calls 1-5 each make 3 attempts and
# spend 2 retries (10 in all: the floor); call 6 (t = 0.625) makes 1 attempt, is refused a
# retry and closes the budget. From then on only probes try, one attempt each, at
# 0.625 + 0.75 k: 12 of them before t = 10. Every other call fails fast without trying.
ATTEMPTS_WITH_BUDGET = 5 * ATTEMPTS + 1 + 12  # 28 of 80 calls' worth
FIRST_SUCCESS_AT = 0.625 + 0.75 * 13  # the first probe after the database is back: t = 10.375


def _fleet(pg: PgTarget, proxy: FlakyProxy, clock: FakeClock, *, budget: bool) -> list[Worker]:
    """WORKERS handles through the proxy; their budgets (when on) on ``clock``."""
    workers = []
    for _ in range(WORKERS):
        db = taskcore.Database(
            proxy.url(pg.url),
            retry_attempts=ATTEMPTS,
            retry_budget=budget,
            retry_budget_floor=FLOOR,
            retry_budget_window=WINDOW,
            retry_budget_ratio=RATIO,
            retry_probe_interval=PROBE_INTERVAL,
        )
        if db.budget is not None:
            db.budget.clock = clock
            db.budget.jitter = lambda: JITTER
        workers.append(Worker(db))
    return workers


class Worker:
    """One handle of the fleet and what its calls did."""

    def __init__(self, db: taskcore.Database) -> None:
        """Count the attempts of every call that gave up, from the handle's own events."""
        self.db = db
        self.attempts = 0
        self.failed_fast = 0
        self.successes: list[float] = []
        db.subscribe(self._seen)

    def _seen(self, event: events.Event) -> None:
        if isinstance(event, events.GaveUp):
            self.attempts += event.attempts
            self.failed_fast += event.attempts == 0

    def call(self, now: float) -> None:
        """One call at fake time ``now``; an unavailable database is expected during the outage."""
        try:
            self.db.get_tasks(user_id="nobody")
        except taskcore.DatabaseUnavailableError:
            return
        self.successes.append(now)


def _run(workers: list[Worker], clock: FakeClock, ticks: int) -> None:
    """Every worker calls once per tick, for ``ticks`` ticks of fake time."""
    for _ in range(ticks):
        for worker in workers:
            worker.call(clock.now)
        clock.advance(TICK)


def _wait_for_refusals(proxy: FlakyProxy, expected: int) -> int:
    """The proxy's refusal count once it reaches ``expected`` (its thread counts after the RST)."""
    deadline = time.monotonic() + DEADLINE_S
    while proxy.stats.faults < expected and time.monotonic() < deadline:
        time.sleep(0.005)  # poll interval only; the loop waits on the count above
    return proxy.stats.faults


def test_budget_bounds_each_workers_attempts_in_an_outage_and_the_next_probe_recovers(
    pg: PgTarget, proxy: FlakyProxy
) -> None:
    """With the budget, each worker makes exactly 28 connection attempts in a 10 s outage (not
    240) and every worker's first call after the outage ends succeeds at its next probe."""
    clock = FakeClock()
    workers = _fleet(pg, proxy, clock, budget=True)
    try:
        proxy.refuse_connections()
        _run(workers, clock, OUTAGE_TICKS)
        assert [w.attempts for w in workers] == [ATTEMPTS_WITH_BUDGET] * WORKERS
        assert [w.failed_fast for w in workers] == [OUTAGE_TICKS - 6 - 12] * WORKERS
        assert _wait_for_refusals(proxy, WORKERS * ATTEMPTS_WITH_BUDGET) == (
            WORKERS * ATTEMPTS_WITH_BUDGET
        )
        proxy.accept_connections()  # the database is back at t = 10
        _run(workers, clock, 8)  # one more second
        assert [w.successes[0] for w in workers] == [FIRST_SUCCESS_AT] * WORKERS
        assert FIRST_SUCCESS_AT - OUTAGE_TICKS * TICK <= PROBE_INTERVAL
        assert all(len(w.successes) == 8 - 3 for w in workers)  # every call after it succeeds
        assert all(w.db.budget is not None and not w.db.budget.exhausted for w in workers)
    finally:
        for worker in workers:
            worker.db.dispose()


def test_without_the_budget_every_call_makes_every_attempt(pg: PgTarget, proxy: FlakyProxy) -> None:
    """With the budget off, each call of the outage makes all its attempts: 240 per worker."""
    clock = FakeClock()
    workers = _fleet(pg, proxy, clock, budget=False)
    try:
        proxy.refuse_connections()
        _run(workers, clock, OUTAGE_TICKS)
        assert [w.attempts for w in workers] == [OUTAGE_TICKS * ATTEMPTS] * WORKERS
        assert [w.failed_fast for w in workers] == [0] * WORKERS
        expected = WORKERS * OUTAGE_TICKS * ATTEMPTS
        assert _wait_for_refusals(proxy, expected) == expected
    finally:
        for worker in workers:
            worker.db.dispose()
