"""Observability: events for retries, give-ups, resolved commits and finished units; counters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import taskcore
from _db import Db
from _pgserver import PgTarget
from taskcore import TaskCreate, UnitOfWork, events
from taskcore.testing import FlakyProxy


@pytest.fixture
def seen() -> Iterator[list[events.Event]]:
    """Events emitted during the test, in order."""
    got: list[events.Event] = []
    unsubscribe = events.subscribe(got.append)
    events.reset_counters()
    yield got
    unsubscribe()


def test_finished_units_are_reported_with_outcome_and_attempt(
    db: Db, seen: list[events.Event]
) -> None:
    """Every unit of work emits UnitFinished: committed or rolled back, with duration."""
    taskcore.create_task(TaskCreate(title="a"), user_id="u")
    with pytest.raises(KeyError), UnitOfWork() as uow:
        uow.tasks.list()
        raise KeyError
    finished = [e for e in seen if isinstance(e, events.UnitFinished)]
    assert [(e.operation, e.outcome, e.attempt) for e in finished] == [
        ("create_task", "committed", 1),
        ("UnitOfWork", "rolled_back", 1),
    ]
    assert all(e.duration >= 0 for e in finished)
    assert events.counters()["units_committed"] == 1


def test_a_failing_subscriber_never_breaks_the_call(db: Db) -> None:
    """An exception in a subscriber is logged and swallowed; the operation succeeds."""

    def broken(event: events.Event) -> None:
        raise RuntimeError("observer bug")

    unsubscribe = events.subscribe(broken)
    try:
        assert taskcore.create_task(TaskCreate(title="ok"), user_id="u").title == "ok"
    finally:
        unsubscribe()


@pytest.mark.postgres
def test_retries_give_ups_and_resolutions_are_events(
    pg: PgTarget, proxy: FlakyProxy, seen: list[events.Event]
) -> None:
    """Retry scheduled, gave up and commit resolved are emitted and counted, with no secrets."""
    taskcore.configure(database_url=proxy.url(pg.url), retry_attempts=3)
    taskcore.get_tasks()
    proxy.cut_after_commit()
    UnitOfWork.run(lambda uow: uow.tasks.create(TaskCreate(title="x"), user_id="u"))
    taskcore.dispose()
    proxy.refuse_connections()
    with pytest.raises(taskcore.DatabaseUnavailableError):
        taskcore.get_tasks()
    kinds = {type(e).__name__ for e in seen}
    assert {"CommitResolved", "RetryScheduled", "GaveUp", "UnitFinished"} <= kinds
    counts = events.counters()
    assert counts["commits_resolved_committed"] == 1
    assert counts["retries"] == 2
    assert counts["gave_up_attempts"] == 1
    assert pg.password not in repr(seen)
