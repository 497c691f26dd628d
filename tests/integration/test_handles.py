"""Explicit Database handles: routing, isolation, claims, statements without rows, no .env."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

import taskcore
from taskcore import Database, TaskCreate, UnitOfWork
from taskcore.models import task_operations


def test_use_database_routes_module_calls_and_plain_units(db: Any, tmp_path: Path) -> None:
    """Inside use_database(other), module-level calls and UnitOfWork() go to `other` only."""
    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    other.init_db()
    try:
        with taskcore.use_database(other):
            taskcore.create_task(TaskCreate(title="routed"), "u")
            with UnitOfWork() as uow:
                uow.tasks.create(TaskCreate(title="routed unit"), user_id="u")
        taskcore.create_task(TaskCreate(title="default"), "u")
        with closing(sqlite3.connect(tmp_path / "other.db")) as check:
            titles = check.execute("SELECT title FROM tasks ORDER BY id").fetchall()
        assert titles == [("routed",), ("routed unit",)]
        assert db.query("SELECT title FROM tasks") == [("default",)]
    finally:
        other.dispose()


def test_isolated_handle_sees_its_writes_and_leaves_nothing(db: Any) -> None:
    """Commits, run(), one-shots and on_commit inside isolated() are visible, then all undone."""
    outer = taskcore.default_database()
    called: list[int] = []
    with outer.isolated() as test_db:
        created = test_db.create_task(TaskCreate(title="one-shot"), "u")
        with test_db.unit() as uow:
            uow.tasks.create(TaskCreate(title="unit"), user_id="u")
            uow.on_commit(lambda: called.append(1))
        test_db.run(lambda uow: uow.tasks.toggle_complete(created.id))
        with pytest.raises(KeyError), test_db.unit() as uow:
            uow.tasks.create(TaskCreate(title="rolled back"), user_id="u")
            raise KeyError
        assert sorted(t.title for t in test_db.get_tasks("u")) == ["one-shot", "unit"]
        assert test_db.get_task(created.id, "u").completed is True  # type: ignore[union-attr]
    assert called == [1]
    assert db.scalar("SELECT count(*) FROM tasks") == 0


def test_a_failed_statement_in_an_isolated_handle_undoes_only_its_call(db: Any) -> None:
    """A refused statement on an isolated handle rolls back its own savepoint; others stay."""
    with taskcore.default_database().isolated() as test_db:
        test_db.create_task(TaskCreate(title="kept"), "u")
        with pytest.raises(taskcore.DatabaseError), test_db.unit() as uow:
            uow.tasks.create(TaskCreate(title="x"), user_id="u", idempotency_key="k")
            uow.run_statement(
                taskcore.models.Task.__table__.insert().values(  # type: ignore[attr-defined]
                    title="dup", user_id="u", idempotency_key="k"
                ),
                writes=True,
            )
        assert [t.title for t in test_db.get_tasks("u")] == ["kept"]
    assert db.scalar("SELECT count(*) FROM tasks") == 0


def test_claim_is_true_once_per_committed_key(db: Any) -> None:
    """claim(key) is True in the first unit that commits it, False afterwards; a rolled-back
    claim leaves the key free."""
    key = f"job-{uuid.uuid4()}"  # task_operations is not emptied between tests
    with pytest.raises(KeyError), UnitOfWork() as uow:
        assert uow.claim(key) is True
        raise KeyError
    with UnitOfWork() as uow:
        assert uow.claim(key) is True
        uow.tasks.create(TaskCreate(title="job 7 effect"), user_id="u")
    with UnitOfWork() as uow:
        assert uow.claim(key) is False
    assert db.scalar("SELECT count(*) FROM tasks") == 1


def test_run_statement_handles_statements_without_rows(db: Any) -> None:
    """A Core statement that returns no rows (a DELETE without RETURNING) gives [] and commits."""
    with UnitOfWork() as uow:
        uow.claim(f"to be deleted {uuid.uuid4()}")
        assert uow.run_statement(delete(task_operations), writes=True) == []
    assert db.scalar("SELECT count(*) FROM task_operations") == 0


def test_caller_operation_keys_make_redelivered_writes_apply_once(db: Any) -> None:
    """The same caller key on two toggle (or delete) calls applies once (a redelivered job)."""
    task = taskcore.create_task(TaskCreate(title="t"), "u")
    key = f"job-{uuid.uuid4()}"
    taskcore.toggle_complete(task.id, "u", operation_key=key)
    again = taskcore.toggle_complete(task.id, "u", operation_key=key)
    assert again.completed is True
    sql = f"SELECT completed FROM tasks WHERE id = {db.placeholder}"
    assert bool(db.scalar(sql, (task.id,))) is True
    assert taskcore.delete_task(task.id, "u", operation_key=key + "-d") is True
    assert taskcore.delete_task(task.id, "u", operation_key=key + "-d") is True
    assert taskcore.delete_task(task.id, "u", operation_key=key + "-other") is False
    assert db.scalar("SELECT count(*) FROM tasks") == 0


def test_explicit_handle_reads_no_environment_or_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Database(url) ignores DATABASE_URL, TASKCORE_* and ./.env entirely."""
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:///env.db\nTASKCORE_DEADLINE=3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKCORE_POOL_SIZE", "2")
    db = Database(f"sqlite:///{tmp_path / 'mine.db'}")
    assert db.settings.deadline == 30.0 and db.settings.pool_size == 10
    assert db.settings.env_file is None
    db.init_db()
    db.dispose()
    assert not (tmp_path / "env.db").exists()


def test_pool_is_shared_fairly_by_threads_of_one_handle(pg_db: Any) -> None:
    """Threads sharing one handle with a pool of 1 all succeed (they queue, none fails)."""
    db = Database(pg_db.url, pool_size=1)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(20):
                db.create_task(TaskCreate(title=f"t{i}"), "u")
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    db.dispose()
    assert errors == []
    assert pg_db.scalar("SELECT count(*) FROM tasks") == 80


def test_nothing_reaches_stderr_when_logging_is_unconfigured(tmp_path: Path) -> None:
    """With no logging configured, taskcore's warnings (an unknown TASKCORE_ variable here)
    print nothing: the library's NullHandler keeps Python's last-resort handler quiet."""
    script = (
        "import taskcore\n"
        f"db = taskcore.Database.from_environment(database_url='sqlite:///{tmp_path / 'q.db'}')\n"
        "db.init_db()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "TASKCORE_RETRY_ATEMPTS": "3", "TASKCORE_ENV_FILE": "none"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_purge_removes_expired_keys_in_a_bounded_batch(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge (forced here on every claim) deletes generated keys older than 10 minutes and
    caller keys older than a day, and keeps younger ones. (SQLite stores no generated keys, its
    one-shot writes record none, so its purge looks only for caller keys: an old generated key
    planted there is kept until it is a day old.)"""
    from taskcore import repository

    monkeypatch.setattr(repository, "_PURGE_ONE_IN", 1)
    old_call, young_call = str(uuid.uuid4()), str(uuid.uuid4())
    old_caller, young_caller = (
        str(uuid.uuid5(uuid.uuid4(), "a")),
        str(uuid.uuid5(uuid.uuid4(), "b")),
    )
    ages = {old_call: 3600, young_call: 60, old_caller: 2 * 86400, young_caller: 7200}
    for key, seconds in ages.items():
        if db.kind == "sqlite":
            db.query(
                "INSERT INTO task_operations (key, created_at) "
                "VALUES (?, strftime('%Y-%m-%d %H:%M:%f', 'now', ?))",
                (key, f"-{seconds} seconds"),
            )
        else:
            db.query(
                "INSERT INTO task_operations (key, created_at) "
                "VALUES (%s, now() - make_interval(secs => %s))",
                (key, seconds),
            )
    with UnitOfWork() as uow:
        uow.claim(f"purger-{uuid.uuid4()}")
    left = {row[0] for row in db.query("SELECT key FROM task_operations")}
    assert old_caller not in left
    assert {young_call, young_caller} <= left
    assert (old_call in left) is (db.kind == "sqlite")
