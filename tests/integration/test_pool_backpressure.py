"""An exhausted pool is back-pressure (issue 9 point 4), and waiting for it is fair.

A handle with `pool_size=1` whose only connection a unit in another thread holds: a call waits no
longer than its own deadline, then raises PoolExhaustedError (retryable, back-pressure) having
sent nothing; a connection given back while it waits is taken at once; waiters are served in
arrival order, and a thread that just gave its connection back queues behind them. Ordering is
proven with threads, events and the pool's own `waiting` counter, never with sleeps.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import taskcore
from taskcore import TaskCreate

pytestmark = pytest.mark.postgres

SLACK = 0.5  # scheduling slack on a loaded 2-core machine


@contextmanager
def held(db: taskcore.Database) -> Iterator[threading.Event]:
    """A unit in another thread holds a pooled connection until the yielded event is set."""
    holding, release = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def hold() -> None:
        try:
            with db.unit(deadline=30) as uow:
                uow.tasks.get(1)  # the connection is taken at the first statement
                holding.set()
                release.wait(30)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)
            holding.set()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert holding.wait(30)
    try:
        yield release
    finally:
        release.set()
        thread.join(30)
    assert not failures, failures


def wait_for_waiters(db: taskcore.Database, count: int) -> None:
    """Wait until `count` callers are queued in the handle's pool (fails after 10 s)."""
    ends = time.monotonic() + 10
    while db.stats().waiting < count:
        assert time.monotonic() < ends, f"{db.stats().waiting} waiters, expected {count}"
        time.sleep(0.001)  # poll interval only; the loop waits on the pool's own counter


def timed(call: Callable[[], Any]) -> tuple[float, BaseException | None]:
    """How long `call` took, and what it raised (None if it returned)."""
    started = time.monotonic()
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - returned for the test to assert on
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


@pytest.mark.parametrize("call", ["create_task", "run", "unit"])
def test_exhausted_pool_is_typed_backpressure_within_the_deadline(pg_db: Any, call: str) -> None:
    """With the only connection held, a one-shot, Database.run and a unit's first statement
    each raise PoolExhaustedError within the 1 s deadline (+ slack); nothing was sent or opened."""
    key = str(uuid.uuid4())
    calls: dict[str, Callable[[taskcore.Database], Any]] = {
        "create_task": lambda db: db.create_task(
            TaskCreate(title="never sent"), "u", idempotency_key=key
        ),
        "run": lambda db: db.run(
            lambda uow: uow.tasks.create(TaskCreate(title="never sent"), user_id="u")
        ),
        "unit": lambda db: _unit_create(db, "never sent"),
    }
    with taskcore.Database(pg_db.url, pool_size=1, deadline=1) as db:
        with held(db):
            elapsed, error = timed(lambda: calls[call](db))
            print(f"{call}: {type(error).__name__} after {elapsed:.3f}s")  # shown by -rP
            assert isinstance(error, taskcore.PoolExhaustedError), repr(error)
            assert error.retryable and error.backpressure
            assert 1.0 - 0.05 <= elapsed <= 1.0 + SLACK, f"took {elapsed:.2f}s"
            stats = db.stats()
            assert (stats.opened, stats.in_use, stats.waiting) == (1, 1, 0)
        # The waiter that gave up left no trace: the freed connection serves the next call.
        started = time.monotonic()
        db.create_task(TaskCreate(title="after"), "u")
        assert time.monotonic() - started < 0.5
        assert db.stats().opened == 1
    assert pg_db.scalar("SELECT count(*) FROM tasks WHERE title = 'never sent'") == 0
    assert pg_db.scalar("SELECT count(*) FROM tasks WHERE title = 'after'") == 1


def _unit_create(db: taskcore.Database, title: str) -> None:
    with db.unit(deadline=1) as uow:
        uow.tasks.create(TaskCreate(title=title), user_id="u")


def test_a_connection_given_back_while_waiting_is_taken(pg_db: Any) -> None:
    """Back-pressure is absorbed within the deadline: a caller queued for the only connection
    gets it as soon as the holder gives it back, and its write lands once."""
    with taskcore.Database(pg_db.url, pool_size=1, deadline=10) as db:
        outcome: list[BaseException | None] = []
        with held(db) as release:
            waiter = threading.Thread(
                target=lambda: outcome.append(
                    timed(lambda: db.create_task(TaskCreate(title="waited"), "u"))[1]
                ),
                daemon=True,
            )
            waiter.start()
            wait_for_waiters(db, 1)
            release.set()
            waiter.join(15)
        assert outcome == [None]
    assert pg_db.scalar("SELECT count(*) FROM tasks WHERE title = 'waited'") == 1


def test_waiters_are_served_first_come_first_served(pg_db: Any) -> None:
    """Five callers queued for the only connection get it in arrival order, and the holder,
    asking again right after giving it back, is served after all of them (no barging)."""
    waiters = 5
    order: list[str] = []
    order_lock = threading.Lock()
    holding, release = threading.Event(), threading.Event()
    with taskcore.Database(pg_db.url, pool_size=1, deadline=20) as db:

        def use(name: str) -> None:
            with db.unit() as uow:
                uow.tasks.get(1)  # holding the pool's only connection from here on
                with order_lock:
                    order.append(name)

        def hold_then_ask_again() -> None:
            with db.unit() as uow:
                uow.tasks.get(1)
                holding.set()
                release.wait(30)
            use("holder")  # the same thread, right after giving the connection back

        threads = [threading.Thread(target=hold_then_ask_again, daemon=True)]
        threads[0].start()
        assert holding.wait(30)
        for i in range(waiters):
            thread = threading.Thread(target=use, args=(f"w{i}",), daemon=True)
            thread.start()
            threads.append(thread)
            wait_for_waiters(db, i + 1)  # w{i} is queued before w{i+1} starts
        release.set()
        for thread in threads:
            thread.join(30)
        assert order == [f"w{i}" for i in range(waiters)] + ["holder"], order
        assert db.stats().opened == 1
