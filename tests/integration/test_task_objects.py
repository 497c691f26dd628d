"""Tasks the repository builds from rows behave like ORM-loaded ones (issue 10's cheap path)."""

from __future__ import annotations

import pickle
from datetime import UTC

import pytest
from sqlmodel import select

import taskcore
from _db import Db, PostgresDb
from taskcore import Task, TaskCreate, UnitOfWork


def test_read_tasks_are_plain_complete_models(db: Db) -> None:
    """Every field is readable, dumpable, comparable and picklable; timestamps are UTC."""
    stored = taskcore.create_task(TaskCreate(title="née 'x'", description="d"), user_id="u")
    task = taskcore.get_task(stored.id, user_id="u")
    assert task is not None
    assert task == stored
    assert task.model_dump(exclude={"idempotency_key"}) == {
        "id": stored.id,
        "title": "née 'x'",
        "description": "d",
        "completed": False,
        "user_id": "u",
        "created_at": stored.created_at,
        "updated_at": stored.updated_at,
    }
    assert task.created_at.tzinfo is UTC and task.updated_at.tzinfo is UTC
    assert "née" in repr(task)
    assert pickle.loads(pickle.dumps(task)) == task  # noqa: S301 -- our own bytes, just made
    assert [t.id for t in taskcore.get_tasks(user_id="u")] == [stored.id]


def test_a_read_task_changed_and_merged_into_a_session_is_written(db: Db) -> None:
    """SQLAlchemy's instance state appears on first use: setting an attribute and merging works."""
    stored = taskcore.create_task(TaskCreate(title="before"), user_id="u")
    task = taskcore.get_task(stored.id, user_id="u")
    assert task is not None
    task.title = "after"
    assert task.title == "after"
    with UnitOfWork() as uow:
        uow.session.merge(task)
    assert db.query(f"SELECT title FROM tasks WHERE id = {db.placeholder}", (stored.id,)) == [
        ("after",)
    ]


def test_orm_loaded_tasks_still_come_back_in_utc(db: Db) -> None:
    """The session path keeps UTCDateTime's own processing (the hot path's skip is its own)."""
    stored = taskcore.create_task(TaskCreate(title="t"), user_id="u")
    with UnitOfWork(read_only=True) as uow:
        loaded = uow.session.exec(select(Task).where(Task.id == stored.id)).one()
    assert loaded.created_at == stored.created_at
    assert loaded.created_at.tzinfo is not None
    assert loaded.created_at.utcoffset() == stored.created_at.utcoffset()


def test_non_utc_session_time_zone_is_converted(pg_db: PostgresDb) -> None:
    """A server session whose TimeZone is not UTC still yields UTC timestamps on the hot path."""
    taskcore.configure(database_url=f"{pg_db.url}?options=-c%20TimeZone%3DAsia/Kolkata")
    stored = taskcore.create_task(TaskCreate(title="t"), user_id="u")
    listed = taskcore.get_tasks(user_id="u")
    assert stored.created_at.tzinfo is UTC and listed[0].updated_at.tzinfo is UTC
    epoch = pg_db.scalar(
        "SELECT extract(epoch FROM created_at) FROM tasks WHERE id = %s", (stored.id,)
    )
    assert stored.created_at.timestamp() == pytest.approx(float(epoch))
    assert pg_db.scalar("SHOW TimeZone") != "Asia/Kolkata"  # the independent session is unaffected
