"""A fleet against a database that refuses connections: bounded attempts, quick recovery."""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.queues import Queue

import pytest

import taskcore
from _db import PostgresDb
from _pgserver import PgTarget
from taskcore.testing import FlakyProxy

pytestmark = [pytest.mark.postgres, pytest.mark.real_waits, pytest.mark.slow]

WORKERS = 8
OUTAGE = 10.0  # seconds the database refuses connections
STEADY_FROM = 4.0  # by then every process has spent its floor of retries
PROBE_INTERVAL = 1.0

Report = tuple[int, int, float | None]  # calls, failures, first success after a failure


def _worker(url: str, budget: bool, stop_at: float, results: Queue[Report]) -> None:
    """Call get_tasks in a loop until stop_at; report the first success after a failure."""
    taskcore.configure(
        database_url=url,
        retry_attempts=3,
        deadline=2.0,
        retry_budget=budget,
        retry_probe_interval=PROBE_INTERVAL,
    )
    calls = failures = 0
    first_success = None
    while time.time() < stop_at:
        calls += 1
        try:
            taskcore.get_tasks(user_id="nobody")
        except taskcore.DatabaseUnavailableError:
            failures += 1
            continue
        if first_success is None:
            first_success = time.time()
    results.put((calls, failures, first_success))


def _run_fleet(pg: PgTarget, budget: bool) -> tuple[float, list[float]]:
    """Run the fleet through an outage; return attempts/s during it and recovery delays."""
    ctx = multiprocessing.get_context("fork")
    results: Queue[Report] = ctx.Queue()
    with FlakyProxy(pg.host, pg.port) as proxy:
        proxy.refuse_connections()
        stop_at = time.time() + OUTAGE + 3.0
        workers = [
            ctx.Process(target=_worker, args=(proxy.url(pg.url), budget, stop_at, results))
            for _ in range(WORKERS)
        ]
        for w in workers:
            w.start()
        started = time.time()
        while time.time() < started + STEADY_FROM:  # the outage: the workers hammer away
            time.sleep(0.05)
        refused_early = proxy.stats.faults
        while time.time() < started + OUTAGE:
            time.sleep(0.05)
        refused = proxy.stats.faults - refused_early
        proxy.accept_connections()
        back = time.time()
        reports = [results.get(timeout=30) for _ in workers]
        for w in workers:
            w.join(timeout=30)
    rate = refused / (OUTAGE - STEADY_FROM)
    recoveries = [first - back for _, _, first in reports if first is not None]
    assert len(recoveries) == WORKERS, "every worker recovered on its own"
    return rate, recoveries


def test_budget_bounds_connection_attempts_and_fleet_recovers(
    pg: PgTarget, pg_db: PostgresDb
) -> None:
    """8 workers: with the budget, attempts/s during an outage stay bounded; all recover fast.

    Bound: once a process's budget is spent (its floor of 1 retry/s over a 10 s window,
    used up in the first seconds) it only probes, at most once per 0.5-1 x probe_interval,
    so in steady state 8 workers make at most 8 * 2 = 16 connection attempts/s.
    """
    with_budget, recoveries = _run_fleet(pg, budget=True)
    without_budget, _ = _run_fleet(pg, budget=False)
    print(
        f"\nconnection attempts/s in steady state of a {OUTAGE:.0f}s outage, {WORKERS} workers: "
        f"{with_budget:.1f} with the retry budget, {without_budget:.1f} without; "
        f"recovery after the database returned: max {max(recoveries):.2f}s"
    )
    assert with_budget <= WORKERS * 2
    assert with_budget < without_budget  # sanity: the budget is what bounds it
    # Each worker's next probe comes within one probe interval of the database returning.
    assert max(recoveries) <= PROBE_INTERVAL + 0.5
