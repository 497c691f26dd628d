"""Acceptance scenarios of the spec's user stories 1-4, on SQLite and PostgreSQL, checked from outside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest
from sqlalchemy.engine import make_url

import taskcore
from _db import Db, PostgresDb
from _pgserver import PgTarget
from taskcore import TaskCreate, TaskUpdate

_CHILD = """
import json, sys, taskcore
taskcore.configure(database_url=sys.argv[1])
if sys.argv[2] == "create":
    t = taskcore.create_task(taskcore.TaskCreate(title="Buy groceries", description="milk, eggs"),
                             user_id="user-123")
else:
    t = taskcore.get_task(int(sys.argv[3]))
print(json.dumps(t.model_dump(mode="json")))
"""


def _in_new_process(url: str, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, url, *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# -- User story 1: persistence across sessions ---------------------------------------------------


def test_us1_1_task_survives_an_application_restart(db: Db) -> None:
    """A task created by one process is retrieved intact by a later, separate process."""
    created = _in_new_process(db.url, "create")
    read = _in_new_process(db.url, "get", str(created["id"]))
    assert read == created
    assert read["title"] == "Buy groceries" and read["user_id"] == "user-123"
    assert db.query(f"SELECT title, description FROM tasks WHERE id = {created['id']}") == [
        ("Buy groceries", "milk, eggs")
    ]


def test_us1_2_all_tasks_are_returned_with_correct_data(db: Db) -> None:
    """Querying all tasks returns every stored task with its data."""
    made = [taskcore.create_task(TaskCreate(title=f"t{i}"), user_id=f"u{i % 2}") for i in range(5)]
    listed = taskcore.get_tasks()
    assert [(t.id, t.title, t.user_id) for t in listed] == [
        (t.id, t.title, t.user_id) for t in made
    ]
    assert db.scalar("SELECT count(*) FROM tasks") == 5


def test_us1_3_update_in_one_session_is_seen_in_a_new_one(db: Db) -> None:
    """An update committed in one unit of work is what a new unit of work reads."""
    task = taskcore.create_task(TaskCreate(title="before"), user_id="u")
    with taskcore.UnitOfWork() as uow:
        uow.tasks.update(task.id, TaskUpdate(title="after"))
    with taskcore.UnitOfWork(read_only=True) as uow:
        fresh = uow.tasks.get(task.id)
    assert fresh is not None and fresh.title == "after"
    assert db.query(f"SELECT title FROM tasks WHERE id = {task.id}") == [("after",)]


# -- User story 2: user-scoped ownership ----------------------------------------------------------


def test_us2_1_querying_one_user_returns_only_their_tasks(db: Db) -> None:
    """Tasks of user-123 and user-456: asking for user-123 returns only user-123's."""
    mine = [taskcore.create_task(TaskCreate(title=f"m{i}"), user_id="user-123") for i in range(3)]
    taskcore.create_task(TaskCreate(title="theirs"), user_id="user-456")
    assert [t.id for t in taskcore.get_tasks(user_id="user-123")] == [t.id for t in mine]
    assert {t.user_id for t in taskcore.get_tasks(user_id="user-456")} == {"user-456"}


def test_us2_2_created_task_is_stored_with_its_user_id(db: Db) -> None:
    """The user_id given at creation is stored with the task (including the empty string)."""
    a = taskcore.create_task(TaskCreate(title="a"), user_id="user-123")
    b = taskcore.create_task(TaskCreate(title="b"), user_id="")
    rows = db.query(f"SELECT id, user_id FROM tasks WHERE id IN ({a.id}, {b.id}) ORDER BY id")
    assert rows == [(a.id, "user-123"), (b.id, "")]


def test_us2_3_query_without_user_returns_all_tasks(db: Db) -> None:
    """get_tasks() without user_id returns every user's tasks (admin use)."""
    for owner in ("user-123", "user-456", ""):
        taskcore.create_task(TaskCreate(title="t"), user_id=owner)
    assert sorted(t.user_id for t in taskcore.get_tasks()) == ["", "user-123", "user-456"]


# -- User story 3: CRUD ---------------------------------------------------------------------------


def test_us3_1_create_stores_and_returns_a_task_with_generated_id(db: Db) -> None:
    """create_task returns the stored task: generated id, defaults and UTC timestamps."""
    task = taskcore.create_task(TaskCreate(title="Write spec"), user_id="u")
    assert task.id > 0 and task.completed is False and task.description is None
    offset = task.created_at.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert task.updated_at == task.created_at
    assert (
        db.query(f"SELECT title, completed FROM tasks WHERE id = {task.id}")[0][0] == "Write spec"
    )


def test_us3_2_update_changes_title_and_moves_updated_at(db: Db) -> None:
    """update_task changes the title; updated_at moves forward, created_at stays."""
    task = taskcore.create_task(TaskCreate(title="old", description="keep"), user_id="u")
    updated = taskcore.update_task(task.id, TaskUpdate(title="new"))
    assert (updated.title, updated.description) == ("new", "keep")
    assert updated.created_at == task.created_at
    assert updated.updated_at > task.updated_at
    stored = db.query(f"SELECT title, description FROM tasks WHERE id = {task.id}")
    assert stored == [("new", "keep")]


def test_us3_3_delete_removes_the_task(db: Db) -> None:
    """delete_task removes the row and says so; deleting again says nothing was deleted."""
    task = taskcore.create_task(TaskCreate(title="gone"), user_id="u")
    assert taskcore.delete_task(task.id) is True
    assert db.scalar(f"SELECT count(*) FROM tasks WHERE id = {task.id}") == 0
    assert taskcore.delete_task(task.id) is False


def test_us3_4_read_returns_complete_task_or_none(db: Db) -> None:
    """get_task returns every field of an existing task, and None for a missing id."""
    task = taskcore.create_task(TaskCreate(title="r", description="d"), user_id="u")
    assert taskcore.get_task(task.id) == task
    assert taskcore.get_task(task.id + 1000) is None


def test_toggle_flips_and_moves_updated_at(db: Db) -> None:
    """toggle_complete flips completed each time and moves updated_at."""
    task = taskcore.create_task(TaskCreate(title="t"), user_id="u")
    once = taskcore.toggle_complete(task.id)
    twice = taskcore.toggle_complete(task.id)
    assert (once.completed, twice.completed) == (True, False)
    assert task.updated_at < once.updated_at < twice.updated_at
    assert db.scalar(f"SELECT count(*) FROM tasks WHERE id = {task.id} AND completed") == 0


def test_update_and_toggle_of_missing_task_raise_not_found(db: Db) -> None:
    """update_task and toggle_complete of a missing id raise NotFoundError and change nothing."""
    with pytest.raises(taskcore.NotFoundError):
        taskcore.update_task(999_999, TaskUpdate(title="x"))
    with pytest.raises(taskcore.NotFoundError):
        taskcore.toggle_complete(999_999)
    assert db.scalar("SELECT count(*) FROM tasks") == 0


@pytest.mark.parametrize(
    "title",
    [
        "Quote ' and \" and \\ and %s and {x}",
        "'; DROP TABLE tasks; --",
        "emoji 🎉 ñ 漢字 \u200d",
        "x" * 200,
    ],
)
def test_good_text_is_stored_exactly(db: Db, title: str) -> None:
    """Unicode, quotes, SQL fragments and maximum-length text are stored and read back exactly."""
    description = title[::-1] + "d" * (1000 - len(title))
    task = taskcore.create_task(
        TaskCreate(title=title, description=description), user_id=title[:50]
    )
    assert db.query(f"SELECT title, description, user_id FROM tasks WHERE id = {task.id}") == [
        (title, description, title[:50])
    ]
    assert taskcore.get_task(task.id, user_id=title[:50]) == task


@pytest.mark.parametrize(
    "call",
    [
        lambda: taskcore.create_task(TaskCreate.model_construct(title="x" * 201), user_id="u"),
        lambda: taskcore.create_task(TaskCreate(title="ok"), user_id="u" * 256),
        lambda: taskcore.create_task(TaskCreate(title="ok"), user_id="nul\x00"),
        lambda: taskcore.get_task("1"),  # type: ignore[arg-type]
    ],
    ids=["over-long-title-bypassing-the-model", "long-user", "nul-user", "string-id"],
)
def test_bad_input_is_refused_with_our_error_and_changes_nothing(
    db: Db, call: Callable[[], object]
) -> None:
    """Refused input raises taskcore's error (never a driver error) and stores nothing."""
    with pytest.raises((taskcore.ValidationError, taskcore.DatabaseError)) as info:
        call()
    assert isinstance(info.value, taskcore.TaskcoreError)
    assert db.scalar("SELECT count(*) FROM tasks") == 0


# -- User story 4: connection management ----------------------------------------------------------


def test_us4_1_valid_credentials_connect_quickly(db: Db) -> None:
    """With valid settings the database answers, well within SC-004's 5 seconds."""
    started = time.monotonic()
    report = taskcore.check_connection()
    assert time.monotonic() - started < 5
    assert report.backend == db.kind.replace("postgres", "postgresql")
    assert report.server_version


def test_us4_2_connections_are_returned_to_the_pool(db: Db) -> None:
    """After many operations and a failed unit of work, no connection is left checked out."""
    for i in range(20):
        taskcore.create_task(TaskCreate(title=f"t{i}"), user_id="u")
        taskcore.get_tasks()
    with pytest.raises(KeyError), taskcore.UnitOfWork() as uow:
        uow.tasks.list()
        raise KeyError("boom")
    assert taskcore.default_database().stats().in_use == 0
    if db.kind == "postgres":
        assert (
            db.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'taskcore_app' "
                "AND state <> 'idle'"
            )
            == 0
        )


@pytest.mark.postgres
def test_us4_3_invalid_credentials_give_a_clear_error_without_secrets(pg: PgTarget) -> None:
    """A wrong password raises ConnectionRejectedError naming the cause, showing no secret."""
    if not pg.password_auth_enforced:
        pytest.skip("this server trusts every password (TEST_DATABASE_URL with trust auth)")
    bad = make_url(pg.url).set(password="wrong-pw").render_as_string(hide_password=False)
    taskcore.configure(database_url=bad)
    with pytest.raises(taskcore.ConnectionRejectedError) as info:
        taskcore.get_tasks()
    assert "authentication failed" in str(info.value)
    assert "wrong-pw" not in repr(info.value) and pg.password not in repr(info.value)


@pytest.mark.parametrize("task_id", [2**63, -(2**63) - 1, 2**100])
def test_out_of_range_ids_are_a_validation_error(db: Db, task_id: int) -> None:
    """Ids beyond 64 bits are refused with ValidationError on every backend (never OverflowError)."""
    with pytest.raises(taskcore.ValidationError):
        taskcore.get_task(task_id)
    with pytest.raises(taskcore.ValidationError):
        taskcore.toggle_complete(task_id)


def test_returned_tasks_behave_like_constructed_ones(db: Db) -> None:
    """Tasks read back compare, dump, pickle and edit like tasks built with Task(**fields)."""
    import pickle

    task = taskcore.get_task(taskcore.create_task(TaskCreate(title="t"), user_id="u").id)
    assert task is not None
    rebuilt = taskcore.Task(**task.model_dump())
    assert task == rebuilt
    assert task.model_dump(exclude_unset=True) == rebuilt.model_dump(exclude_unset=True)
    assert pickle.loads(pickle.dumps(task)) == task  # noqa: S301 - our own bytes
    task.title = "edited locally"
    assert task.model_dump()["title"] == "edited locally"


def test_tasks_work_in_a_fresh_process_that_never_used_the_orm(db: Db) -> None:
    """A process whose first taskcore call returns a task can read its attributes."""
    code = (
        "import sys, taskcore\n"
        "taskcore.configure(database_url=sys.argv[1])\n"
        "print(taskcore.create_task(taskcore.TaskCreate(title='fresh'), user_id='u').title)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, db.url], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "fresh"


def _init_db_at_once(url: str, barrier: Barrier, results: Queue[str]) -> None:
    """Wait for the others, then run init_db; report the error class or 'ok'."""
    taskcore.configure(database_url=url)
    barrier.wait(timeout=30)
    try:
        taskcore.init_db()
    except taskcore.TaskcoreError as error:
        results.put(type(error).__name__)
    else:
        results.put("ok")


@pytest.mark.postgres
def test_concurrent_init_db_all_succeed(pg: PgTarget, pg_db: PostgresDb) -> None:
    """Several processes creating the tables at the same moment all succeed (one creates)."""
    import multiprocessing

    pg_db.query("DROP TABLE IF EXISTS tasks, task_operations")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results: Queue[str] = ctx.Queue()
    workers = [
        ctx.Process(target=_init_db_at_once, args=(pg.url, barrier, results)) for _ in range(4)
    ]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    assert outcomes == ["ok"] * 4
    assert pg_db.scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'tasks'") == 1
