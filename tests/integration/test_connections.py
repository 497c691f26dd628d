"""Connection phases on real PostgreSQL: stale pools, wrong passwords, outages, lost COMMIT replies."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
from sqlalchemy.engine import make_url

import taskcore
from _db import PostgresDb
from _pgserver import PgTarget
from taskcore import TaskCreate, TaskUpdate, UnitOfWork
from taskcore.testing import FlakyProxy

pytestmark = pytest.mark.postgres


def test_connections_the_server_closed_are_replaced_without_a_retry(
    pg_db: PostgresDb,
    caplog: pytest.LogCaptureFixture,
    taskcore_events: Callable[[str], list[logging.LogRecord]],
) -> None:
    """After the server ends every idle pooled connection (a Neon suspend), work just succeeds.

    The dead connection is noticed locally at checkout (no ping round trip) and replaced before
    any statement is sent, so nothing is retried and the work lands once.
    """
    for i in range(3):
        taskcore.create_task(TaskCreate(title=f"warm{i}"), user_id="u")
    pg_db.terminate_app_backends()
    with caplog.at_level(logging.INFO, "taskcore"):
        created = taskcore.create_task(TaskCreate(title="after suspend"), user_id="u")
        with UnitOfWork() as uow:
            uow.tasks.toggle_complete(created.id)
    assert taskcore_events("stale_connection_replaced")
    assert not taskcore_events("retry_scheduled")
    assert pg_db.query("SELECT title, completed FROM tasks WHERE title = 'after suspend'") == [
        ("after suspend", True)
    ]


def test_wrong_password_fails_fast_once_and_leaks_nothing(
    pg: PgTarget,
    pg_db: PostgresDb,
    caplog: pytest.LogCaptureFixture,
    taskcore_events: Callable[[str], list[logging.LogRecord]],
) -> None:
    """A wrong password: ConnectionRejectedError within the connect timeout, after one attempt."""
    if not pg.password_auth_enforced:
        pytest.skip("this server trusts every password (TEST_DATABASE_URL with trust auth)")
    wrong = "Wr0ng-" + pg.password
    url = make_url(pg.url).set(password=wrong).render_as_string(hide_password=False)
    taskcore.configure(database_url=url, connect_timeout=10)
    started = time.monotonic()
    with (
        caplog.at_level(logging.DEBUG, "taskcore"),
        pytest.raises(taskcore.ConnectionRejectedError) as info,
    ):
        taskcore.create_task(TaskCreate(title="never"), user_id="u")
    assert time.monotonic() - started < 10
    assert not taskcore_events("retry_scheduled")
    assert "authentication failed" in str(info.value)
    shown = (
        repr(info.value) + str(info.value.args) + "".join(r.getMessage() for r in caplog.records)
    )
    assert wrong not in shown and pg.password not in shown and url not in shown
    assert pg_db.scalar("SELECT count(*) FROM tasks") == 0


def test_lost_commit_reply_is_resolved_as_committed_and_not_rerun(
    proxy: FlakyProxy,
    pg_db: PostgresDb,
    caplog: pytest.LogCaptureFixture,
    taskcore_events: Callable[[str], list[logging.LogRecord]],
) -> None:
    """When the COMMIT reply is lost, the server is asked: committed means success, once."""
    calls: list[int] = []

    def work(uow: UnitOfWork) -> None:
        calls.append(1)
        uow.tasks.create(TaskCreate(title="maybe"), user_id="u")
        uow.tasks.create(TaskCreate(title="maybe too"), user_id="u")

    proxy.cut_after_commit()
    with caplog.at_level(logging.WARNING, "taskcore"):
        UnitOfWork.run(work)
    assert proxy.faults_fired == 1
    assert calls == [1]
    assert [r.outcome for r in taskcore_events("commit_resolved")] == ["committed"]  # type: ignore[attr-defined]
    assert pg_db.scalar("SELECT count(*) FROM tasks") == 2


def test_without_commit_protection_a_lost_reply_is_reported_unknown(
    proxy: FlakyProxy, pg: PgTarget, pg_db: PostgresDb
) -> None:
    """With commit protection off, a lost COMMIT reply raises CommitOutcomeUnknownError, once."""
    taskcore.configure(database_url=proxy.url(pg.url), commit_protection=False)
    calls: list[int] = []

    def work(uow: UnitOfWork) -> None:
        calls.append(1)
        uow.tasks.create(TaskCreate(title="maybe"), user_id="u")

    proxy.cut_after_commit()
    with pytest.raises(taskcore.CommitOutcomeUnknownError) as info:
        UnitOfWork.run(work)
    assert calls == [1]
    assert info.value.outcome_known is False and info.value.retryable is False
    assert pg_db.scalar("SELECT count(*) FROM tasks") == 1  # it did commit; we said "unknown"


def test_link_cut_before_commit_reruns_the_whole_unit(proxy: FlakyProxy, pg_db: PostgresDb) -> None:
    """A link cut after a statement but before COMMIT is transient: the unit re-runs, lands once."""
    calls: list[int] = []

    def work(uow: UnitOfWork) -> None:
        calls.append(1)
        uow.tasks.create(TaskCreate(title="a"), user_id="u")
        uow.tasks.create(TaskCreate(title="b"), user_id="u")

    taskcore.get_tasks()  # warm the pool so the cut lands inside the unit, not at connect
    proxy.cut_after_statements(2)  # BEGIN is statement 1, the first INSERT statement 2
    UnitOfWork.run(work)
    assert len(calls) == 2
    assert pg_db.query("SELECT title FROM tasks ORDER BY id") == [("a",), ("b",)]


def test_one_shot_read_is_retried_after_a_cut(proxy: FlakyProxy, pg_db: PostgresDb) -> None:
    """A read cut mid-flight is safe to repeat, so get_tasks retries and answers."""
    taskcore.create_task(TaskCreate(title="r"), user_id="u")
    proxy.cut_after_statements(1)
    assert [t.title for t in taskcore.get_tasks()] == ["r"]
    assert proxy.faults_fired == 1


@pytest.mark.parametrize("faults", [1, 2, 3])
def test_one_shot_writes_cut_in_flight_apply_exactly_once(
    proxy: FlakyProxy, pg_db: PostgresDb, faults: int
) -> None:
    """Each one-shot write whose reply is lost (even repeatedly) is retried and lands once."""
    task = taskcore.create_task(TaskCreate(title="base"), user_id="u")
    proxy.reset_stats()
    for _ in range(faults):
        proxy.cut_after_reply()
        created = taskcore.create_task(TaskCreate(title="once"), user_id="u")
        proxy.cut_after_reply()
        toggled = taskcore.toggle_complete(task.id)
    assert proxy.faults_fired == 2 * faults  # every reply really was lost
    assert pg_db.scalar("SELECT count(*) FROM tasks WHERE title = 'once'") == faults
    assert created.title == "once"
    assert pg_db.scalar(f"SELECT completed FROM tasks WHERE id = {task.id}") is (faults % 2 == 1)
    assert toggled.completed is (faults % 2 == 1)
    proxy.cut_after_reply()
    assert taskcore.update_task(task.id, TaskUpdate(title="renamed")).title == "renamed"
    proxy.cut_after_reply()
    assert taskcore.delete_task(task.id) is True  # the first attempt deleted it: still True
    assert proxy.faults_fired == 2 * faults + 2
    assert pg_db.scalar(f"SELECT count(*) FROM tasks WHERE id = {task.id}") == 0


def test_redelivered_create_with_the_same_key_returns_the_first_task(pg_db: PostgresDb) -> None:
    """create_task with a caller's idempotency key stores once and returns the same task."""
    first = taskcore.create_task(TaskCreate(title="job"), user_id="u", idempotency_key="job-42")
    again = taskcore.create_task(TaskCreate(title="other"), user_id="u", idempotency_key="job-42")
    other_user = taskcore.create_task(
        TaskCreate(title="job"), user_id="v", idempotency_key="job-42"
    )
    assert again == first
    assert other_user.id != first.id
    assert pg_db.scalar("SELECT count(*) FROM tasks") == 2


def test_lost_reply_then_outage_is_unknown_not_unavailable(
    proxy: FlakyProxy, pg_db: PostgresDb
) -> None:
    """A keyed write whose reply is lost, with no reconnect possible, is 'unknown' (it did land)."""
    taskcore.configure(database_url=proxy.url(pg_db.url), retry_attempts=3)
    taskcore.get_tasks()  # one live pooled link; new connections will be refused
    proxy.refuse_connections()
    proxy.cut_after_reply()
    with pytest.raises(taskcore.CommitOutcomeUnknownError) as info:
        taskcore.create_task(TaskCreate(title="landed"), user_id="u")
    assert info.value.outcome_known is False
    assert pg_db.scalar("SELECT count(*) FROM tasks") == 1
    assert proxy.faults_fired >= 1


def test_lost_commit_with_server_unreachable_is_unknown(
    proxy: FlakyProxy, pg_db: PostgresDb
) -> None:
    """If the server cannot be asked about a lost COMMIT, the unit reports 'unknown', not re-run."""
    taskcore.configure(database_url=proxy.url(pg_db.url), retry_attempts=3)
    taskcore.get_tasks()
    proxy.refuse_connections()
    proxy.cut_after_commit()
    calls: list[int] = []

    def work(uow: UnitOfWork) -> None:
        calls.append(1)
        uow.tasks.create(TaskCreate(title="landed"), user_id="u")

    with pytest.raises(taskcore.CommitOutcomeUnknownError):
        UnitOfWork.run(work)
    assert calls == [1]
    assert pg_db.scalar("SELECT count(*) FROM tasks") == 1
