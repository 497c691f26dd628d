"""Concurrency correctness on real PostgreSQL (directly and through PgBouncer), across processes.

Every worker counts only what taskcore acknowledged (a call that returned); every call either
returns or raises a typed taskcore error, and a clean run must have none. The final state is
read through an independent connection straight to PostgreSQL.

Semantics of concurrent ``update_task`` on one task (what these tests prove): an update is one
atomic ``UPDATE`` that sets only the fields given; per field, the last writer wins; a field
not given is never overwritten, so concurrent writers of different fields never lose each
other's writes, and ``toggle_complete`` (``SET completed = NOT completed``) never loses a flip.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter

import pytest

import taskcore
from _db import PostgresDb
from _fleet import (
    CONTENTION_POLICY,
    Tally,
    counter_unit,
    field_writer,
    run_fleet,
    serializable_counter_worker,
    toggle_worker,
)
from taskcore import TaskCreate

K = 4  # processes
M = 60  # toggles per process
TASKS = 5

_ctx = multiprocessing.get_context("fork")


def _sum_toggles(tallies: list[Tally]) -> Counter[int]:
    total: Counter[int] = Counter()
    for tally in tallies:
        total.update(tally.toggles)
    return total


def _assert_clean(tallies: list[Tally]) -> None:
    errors: Counter[str] = Counter()
    for tally in tallies:
        errors.update(tally.errors)
    assert not errors, f"typed errors in a clean run: {dict(errors)}"


def test_toggle_parity_holds_across_processes(server_db: PostgresDb) -> None:
    """K processes toggling the same tasks M times each: every task ends as the parity of its
    acknowledged toggles (one-shot toggles and toggles inside multi-step units of work)."""
    ids = [taskcore.create_task(TaskCreate(title=f"t{i}"), user_id="hot").id for i in range(TASKS)]
    barrier = _ctx.Barrier(K)
    tallies: list[Tally] = run_fleet(
        _ctx, toggle_worker, [(None, ids, M, seed, barrier) for seed in range(K)]
    )
    _assert_clean(tallies)
    toggles = _sum_toggles(tallies)
    assert sum(toggles.values()) == K * M
    final = dict(server_db.query("SELECT id, completed FROM tasks WHERE user_id = 'hot'"))
    assert final == {task_id: toggles[task_id] % 2 == 1 for task_id in ids}
    reruns = sum(t.reruns for t in tallies)
    print(
        f"\n[toggle parity] {K} processes x {M} toggles on {TASKS} tasks "
        f"({server_db!r}): per-task toggles {dict(toggles)}, unit re-runs {reruns}"
    )


def test_concurrent_updates_of_different_fields_never_lose_a_write(server_db: PostgresDb) -> None:
    """Concurrent update_task calls on one task (title by A, description by B) and toggles by C
    and D: each field ends with the last value its writer wrote and no field ever goes back."""
    task = taskcore.create_task(TaskCreate(title="start", description="start"), user_id="u")
    roles = ["title", "description", "toggle", "toggle"]
    m = 80
    barrier = _ctx.Barrier(len(roles))
    tallies: list[Tally] = run_fleet(
        _ctx, field_writer, [(None, task.id, role, m, barrier) for role in roles]
    )
    _assert_clean(tallies)
    title, description, completed = server_db.query(
        f"SELECT title, description, completed FROM tasks WHERE id = {task.id}"
    )[0]
    assert title == tallies[0].last_written[(task.id, "title")] == f"title#{m - 1}"
    assert description == tallies[1].last_written[(task.id, "description")]
    assert description == f"description#{m - 1}"
    assert completed == (sum(_sum_toggles(tallies).values()) % 2 == 1)
    for role, tally in zip(roles, tallies, strict=True):
        for name, numbers in tally.seen_orders.items():
            # Every row an update returned shows each field at or after what it showed before.
            assert numbers == sorted(numbers), f"{role} saw {name} go backwards"


@pytest.mark.real_waits
def test_serializable_write_skew_is_retried_whole(server_db: PostgresDb) -> None:
    """Two serializable read-then-write units that both read before either writes: PostgreSQL
    fails one with 40001, UnitOfWork.run re-runs it whole, and the titles are 0..n-1."""
    skew = _ctx.Barrier(2)
    n = 3
    tallies: list[Tally] = run_fleet(
        _ctx, serializable_counter_worker, [(None, "ctr", n, None, skew) for _ in range(2)]
    )
    _assert_clean(tallies)
    titles = sorted(
        int(r[0]) for r in server_db.query("SELECT title FROM tasks WHERE user_id = 'ctr'")
    )
    assert titles == list(range(2 * n))
    assert sorted(int(t) for tally in tallies for t in tally.counter_titles) == titles
    reruns = sum(t.reruns for t in tallies)
    retries = sum(t.events["retries"] for t in tallies)
    assert reruns >= 1 and retries >= 1  # the write skew was caught and retried
    print(f"\n[write skew] {server_db!r}: unit re-runs {reruns}, retries {retries}")


@pytest.mark.real_waits
def test_serializable_counter_has_no_duplicates_under_contention(server_db: PostgresDb) -> None:
    """K processes each run serializable units that read a user's task count and create a task
    titled with it: serialization failures are retried whole, and titles are exactly 0..n-1."""
    n = 15
    barrier = _ctx.Barrier(K)
    tallies: list[Tally] = run_fleet(
        _ctx, serializable_counter_worker, [(None, "ctr", n, barrier, None) for _ in range(K)]
    )
    _assert_clean(tallies)
    titles = [int(r[0]) for r in server_db.query("SELECT title FROM tasks WHERE user_id = 'ctr'")]
    assert sorted(titles) == list(range(K * n)), "duplicates or gaps: a lost serialization"
    reruns = sum(t.reruns for t in tallies)
    retries = sum(t.events["retries"] for t in tallies)
    print(
        f"\n[serializable counter] {K} processes x {n} units ({server_db!r}): "
        f"unit re-runs {reruns}, retries {retries}"
    )


def test_serialization_conflicts_never_make_a_healthy_database_unavailable(
    pg_db: PostgresDb,
) -> None:
    """Many serialization failures in one process (two threads forced into a write skew every
    round) are all retried whole; none turns into "database unavailable" while it answers."""
    rounds = 25
    skew = threading.Barrier(2)
    taskcore.events.reset_counters()
    errors: list[str] = []
    reruns = Counter[str]()

    def worker(name: str) -> None:
        for _ in range(rounds):
            attempts = 0

            def unit(uow: taskcore.UnitOfWork) -> str:
                nonlocal attempts
                attempts += 1
                # Every round's first attempts read before either writes: one of them fails.
                return counter_unit(uow, "skew", skew if attempts == 1 else None)

            try:
                taskcore.UnitOfWork.run(unit, isolation="serializable", policy=CONTENTION_POLICY)
            except threading.BrokenBarrierError:
                return  # the partner failed (and says why below)
            except taskcore.TaskcoreError as error:
                errors.append(f"{type(error).__name__}: {error}")
                skew.abort()  # release the partner instead of leaving it at the barrier
                return
            reruns[name] += attempts - 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:  # say what an ordinary call gets right after, on this perfectly healthy server
        try:
            taskcore.get_tasks(user_id="skew")
        except taskcore.TaskcoreError as error:
            errors.append(f"then get_tasks(): {type(error).__name__}: {error}")
        errors.append(f"counters: {taskcore.events.counters()}")
    assert not errors, errors
    assert sum(reruns.values()) >= rounds  # at least one conflict per round, all retried
    titles = sorted(
        int(t) for (t,) in pg_db.query("SELECT title FROM tasks WHERE user_id = 'skew'")
    )
    assert titles == list(range(2 * rounds))
    assert taskcore.get_tasks(user_id="skew")  # and the process still just works
