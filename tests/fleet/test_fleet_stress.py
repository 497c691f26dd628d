"""Stress: 4 processes, 2,000 mixed operations, invariants checked through an independent connection.

The mix (per process, seeded): one-shot toggles, two-toggle units of work, partial updates of
fields each owned by one process, two-task units sharing a marker (a third abort midway on
purpose), serializable read-then-write counter units, read-only units and one-shot reads.

Invariants: toggle parity per task; no lost update (each owned field ends with its owner's
last acknowledged value); no partial unit of work (every marker has exactly 0 or 2 rows, 2 for
each acknowledged unit and 0 for each aborted one); the serializable counter's titles are
exactly 0..n-1; and no call raised in a clean run. Run with ``-s`` to see the counts.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter

import taskcore
from _db import Db, PostgresDb
from _fleet import StressPlan, Tally, run_fleet, stress_worker
from _pgbouncer import PgBouncer
from taskcore import TaskCreate

PROCESSES = 4
TOTAL_OPS = 2000
HOT_TASKS = 8

_ctx = multiprocessing.get_context("fork")


def _stress(db: Db, urls: list[str], label: str, bouncer: PgBouncer | None = None) -> None:
    """Run the fleet (worker i on urls[i]) and check every invariant from outside."""
    hot = [
        taskcore.create_task(TaskCreate(title=f"hot {i}", description="initial"), user_id="hot").id
        for i in range(HOT_TASKS)
    ]
    plan = StressPlan(hot_ids=hot, processes=len(urls), ops_per_process=TOTAL_OPS // len(urls))
    barrier = _ctx.Barrier(len(urls))
    relayed_before = bouncer.transactions() if bouncer else 0
    started = time.monotonic()
    tallies: list[Tally] = run_fleet(
        _ctx, stress_worker, [(url, plan, 1000 + i, barrier) for i, url in enumerate(urls)]
    )
    elapsed = time.monotonic() - started

    errors: Counter[str] = Counter()
    toggles: Counter[int] = Counter()
    events: Counter[str] = Counter()
    for tally in tallies:
        errors.update(tally.errors)
        toggles.update(tally.toggles)
        events.update(tally.events)
    ops = sum(t.ops for t in tallies)
    assert ops >= TOTAL_OPS
    assert not errors, f"typed errors in a clean run: {dict(errors)}"

    # Toggle parity.
    rows = db.query(
        "SELECT id, completed, title, description FROM tasks WHERE user_id = 'hot' ORDER BY id"
    )
    assert {r[0]: r[1] for r in rows} == {t: toggles[t] % 2 == 1 for t in hot}

    # No lost update: each owned field holds its owner's last acknowledged value.
    for position, (task_id, _, title, description) in enumerate(rows):
        title_writer = tallies[plan.title_owner(position)]
        description_writer = tallies[plan.description_owner(position)]
        assert title == title_writer.last_written.get((task_id, "title"), f"hot {position}")
        assert description == description_writer.last_written.get(
            (task_id, "description"), "initial"
        )

    # No partial unit of work: markers have 0 or 2 rows; 2 exactly for the acknowledged ones.
    per_marker = dict(
        db.query(
            "SELECT description, count(*) FROM tasks WHERE user_id = %s GROUP BY description",
            (plan.pair_user,),
        )
    )
    committed = {m for t in tallies for m in t.pairs_committed}
    aborted = {m for t in tallies for m in t.pairs_aborted}
    assert set(per_marker.values()) <= {2}
    assert set(per_marker) == committed
    assert not aborted & set(per_marker)

    # Serializable counter: exactly 0..n-1, and what each unit was told is what was stored.
    stored = sorted(
        int(r[0])
        for r in db.query("SELECT title FROM tasks WHERE user_id = %s", (plan.counter_user,))
    )
    assert stored == list(range(len(stored)))
    assert sorted(int(t) for tally in tallies for t in tally.counter_titles) == stored

    relayed = (bouncer.transactions() - relayed_before) if bouncer else 0
    if bouncer:
        assert relayed > 0, "nothing went through PgBouncer"
    print(
        f"\n[stress {label}] {len(urls)} processes, {ops} operations in {elapsed:.1f}s "
        f"({ops / elapsed:.0f} ops/s); per process {[t.ops for t in tallies]}; "
        f"toggles {sum(toggles.values())} on {HOT_TASKS} tasks; "
        f"pairs committed {len(committed)}, aborted {len(aborted)}; "
        f"serializable counter units {len(stored)}; "
        f"unit re-runs {sum(t.reruns for t in tallies)}; "
        f"retries {events['retries']}, budget_exhausted {events['budget_exhausted']}, "
        f"gave up {sum(n for k, n in events.items() if k.startswith('gave_up'))}; "
        f"typed errors {sum(errors.values())}"
        + (f"; transactions relayed by PgBouncer {relayed}" if bouncer else "")
    )


def test_stress_invariants_hold_on_direct_postgres(pg_db: PostgresDb) -> None:
    """4 processes, 2,000 mixed operations straight to PostgreSQL: every invariant holds."""
    _stress(pg_db, [pg_db.url] * PROCESSES, "direct")


def test_stress_invariants_hold_with_half_the_fleet_through_pgbouncer(
    pg_db: PostgresDb, pgbouncer: PgBouncer
) -> None:
    """4 processes, 2,000 mixed operations, two of them through PgBouncer (transaction mode)
    and two straight to PostgreSQL, on the same rows: every invariant holds."""
    urls = [pgbouncer.url, pg_db.url] * (PROCESSES // 2)
    _stress(pg_db, urls, "half through PgBouncer", bouncer=pgbouncer)
