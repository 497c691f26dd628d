"""UnitOfWork semantics: atomicity, lifecycle, savepoints, callbacks, read-only, whole-unit re-runs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

import taskcore
from _db import Db, PostgresDb
from taskcore import Status, TaskCreate, TaskUpdate, UnitOfWork


def test_multi_step_unit_of_work_lands_whole(db: Db) -> None:
    """Several changes in one block are all committed together at the end of the block."""
    with UnitOfWork() as uow:
        a = uow.tasks.create(TaskCreate(title="a"), user_id="u")
        b = uow.tasks.create(TaskCreate(title="b"), user_id="u")
        uow.tasks.toggle_complete(a.id)
        uow.tasks.update(b.id, TaskUpdate(description="bd"))
    assert uow.status is Status.COMMITTED
    assert db.query("SELECT title, completed, description FROM tasks ORDER BY id") == [
        ("a", 1 if db.kind == "sqlite" else True, None),
        ("b", 0 if db.kind == "sqlite" else False, "bd"),
    ]


def test_exception_mid_unit_leaves_nothing_and_comes_out_unchanged(db: Db) -> None:
    """An exception after some writes rolls all of them back; the caller gets its own exception."""
    existing = taskcore.create_task(TaskCreate(title="keep"), user_id="u")
    boom = RuntimeError("caller's own error")
    with pytest.raises(RuntimeError) as info, UnitOfWork() as uow:
        uow.tasks.create(TaskCreate(title="x"), user_id="u")
        uow.tasks.toggle_complete(existing.id)
        uow.tasks.delete(existing.id)
        raise boom
    assert info.value is boom
    assert uow.status is Status.ROLLED_BACK
    assert db.query("SELECT id, title, completed FROM tasks") == [
        (existing.id, "keep", 0 if db.kind == "sqlite" else False)
    ]


@pytest.mark.postgres
def test_uncommitted_work_is_invisible_to_other_connections(pg_db: PostgresDb) -> None:
    """Until the block ends, an independent connection sees none of the unit's writes."""
    with UnitOfWork() as uow:
        uow.tasks.create(TaskCreate(title="pending"), user_id="u")
        assert pg_db.scalar("SELECT count(*) FROM tasks") == 0
    assert pg_db.scalar("SELECT count(*) FROM tasks") == 1


def test_savepoint_rolls_back_only_its_block(db: Db) -> None:
    """An exception inside savepoint() undoes only that block; the rest of the unit commits."""
    with UnitOfWork() as uow:
        uow.tasks.create(TaskCreate(title="outer"), user_id="u")
        with pytest.raises(KeyError), uow.savepoint():
            uow.tasks.create(TaskCreate(title="inner"), user_id="u")
            raise KeyError("undo inner")
        with uow.savepoint():
            uow.tasks.create(TaskCreate(title="kept"), user_id="u")
    assert [r[0] for r in db.query("SELECT title FROM tasks ORDER BY id")] == ["outer", "kept"]


def test_on_commit_callbacks_run_only_after_commit(db: Db) -> None:
    """on_commit callbacks run after a successful commit, in order, and never after a rollback."""
    seen: list[str] = []
    with UnitOfWork() as uow:
        uow.tasks.create(TaskCreate(title="a"), user_id="u")
        uow.on_commit(lambda: seen.append(f"first:{db.scalar('SELECT count(*) FROM tasks')}"))
        uow.on_commit(lambda: seen.append("second"))
        assert seen == []
    assert seen == ["first:1", "second"]
    with pytest.raises(ValueError, match="abandon"), UnitOfWork() as uow:
        uow.on_commit(lambda: seen.append("never"))
        raise ValueError("abandon")
    assert seen == ["first:1", "second"]


def test_read_only_unit_refuses_writes_before_any_sql(db: Db) -> None:
    """A read-only unit of work reads, refuses writes with UsageError, and changes nothing."""
    task = taskcore.create_task(TaskCreate(title="t"), user_id="u")
    with UnitOfWork(read_only=True) as uow:
        assert uow.tasks.get(task.id) == task
        with pytest.raises(taskcore.UsageError):
            uow.tasks.toggle_complete(task.id)
        assert uow.tasks.list() == [task]
    assert db.scalar(f"SELECT count(*) FROM tasks WHERE id = {task.id} AND completed") == 0


@pytest.mark.postgres
def test_read_only_and_isolation_reach_the_server(pg_db: PostgresDb) -> None:
    """read_only and isolation are the transaction's real characteristics on PostgreSQL."""
    with UnitOfWork(read_only=True, isolation="serializable") as uow:
        setting = func.current_setting
        assert uow.session.scalar(select(setting("transaction_read_only"))) == "on"
        assert uow.session.scalar(select(setting("transaction_isolation"))) == "serializable"
    with UnitOfWork() as uow:  # the pooled connection went back to the defaults
        assert uow.session.scalar(select(func.current_setting("transaction_read_only"))) == "off"
        assert (
            uow.session.scalar(select(func.current_setting("transaction_isolation")))
            == "read committed"
        )


def test_lifecycle_is_explicit(db: Db) -> None:
    """A unit of work is entered once; its repository is unusable outside the block."""
    uow = UnitOfWork()
    assert "status=new" in repr(uow)
    with pytest.raises(taskcore.UsageError):
        _ = uow.tasks
    with uow:
        assert "status=active" in repr(uow)
        with pytest.raises(taskcore.UsageError), uow:
            pass
    assert "status=committed" in repr(uow)
    with pytest.raises(taskcore.UsageError):
        uow.tasks.list()
    with pytest.raises(taskcore.UsageError), uow:
        pass


@pytest.mark.postgres
def test_swallowed_database_error_is_raised_at_exit(pg_db: PostgresDb) -> None:
    """A database error the block caught and ignored is raised again at exit; nothing commits."""
    from sqlalchemy import insert

    from taskcore.models import Task

    with pytest.raises(taskcore.DatabaseError) as info, UnitOfWork() as uow:
        uow.tasks.create(TaskCreate(title="before"), user_id="u")
        # bypass the repository's validation to make the server reject a value
        with contextlib.suppress(taskcore.DatabaseError):
            uow.run_statement(
                insert(Task).values(title="x" * 300, user_id="u").returning(Task), writes=True
            )
    assert info.value.sqlstate == "22001"
    assert pg_db.scalar("SELECT count(*) FROM tasks") == 0


@pytest.mark.postgres
def test_failed_rollback_never_hides_the_original_error(
    pg_db: PostgresDb,
    caplog: pytest.LogCaptureFixture,
    taskcore_events: Callable[[str], list[logging.LogRecord]],
) -> None:
    """When the connection dies mid-unit, the rollback's failure is logged once ("error ignored
    in rollback", class name only) and the caller's exception still comes out unchanged."""
    boom = LookupError("original")
    with (
        caplog.at_level(logging.WARNING, "taskcore"),
        pytest.raises(LookupError) as info,
        UnitOfWork() as uow,
    ):
        uow.tasks.create(TaskCreate(title="lost"), user_id="u")
        pg_db.terminate_app_backends()
        raise boom
    assert info.value is boom
    assert info.value.__context__ is None and info.value.__cause__ is None
    (failed,) = taskcore_events("rollback_failed")
    assert failed.levelno == logging.WARNING
    assert failed.getMessage().startswith("error ignored in rollback (")
    error_class = vars(failed)["error"]
    assert issubclass(getattr(taskcore, error_class), taskcore.TaskcoreError)
    assert error_class in failed.getMessage()
    assert uow.status is Status.ROLLED_BACK
    assert pg_db.scalar("SELECT count(*) FROM tasks") == 0
    # The dead connection was not given back for reuse: the next unit works.
    with UnitOfWork() as again:
        again.tasks.create(TaskCreate(title="after"), user_id="u")
    assert pg_db.query("SELECT title FROM tasks") == [("after",)]


def test_run_gives_each_attempt_a_fresh_unit_and_returns_the_result(db: Db) -> None:
    """UnitOfWork.run passes a fresh active unit to fn and returns fn's result after commit."""

    def work(uow: UnitOfWork) -> int:
        assert uow.status is Status.ACTIVE
        return uow.tasks.create(TaskCreate(title="via run"), user_id="u").id

    task_id = UnitOfWork.run(work)
    assert db.query(f"SELECT title FROM tasks WHERE id = {task_id}") == [("via run",)]


def test_run_does_not_retry_the_callers_own_errors(db: Db) -> None:
    """A non-database exception from fn propagates after a single attempt."""
    calls: list[int] = []

    def work(uow: UnitOfWork) -> None:
        calls.append(1)
        uow.tasks.create(TaskCreate(title="x"), user_id="u")
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        UnitOfWork.run(work)
    assert calls == [1]
    assert db.scalar("SELECT count(*) FROM tasks") == 0


@pytest.mark.postgres
def test_transient_failure_mid_unit_is_rerun_whole_and_lands_once(pg_db: PostgresDb) -> None:
    """A disconnect injected once mid-unit re-runs the whole unit; its work lands exactly once."""
    attempts: list[int] = []

    def work(uow: UnitOfWork) -> None:
        attempts.append(1)
        uow.tasks.create(TaskCreate(title="one"), user_id="u")
        if len(attempts) == 1:
            pg_db.terminate_app_backends()  # the server ends our connection mid-transaction
        uow.tasks.create(TaskCreate(title="two"), user_id="u")

    UnitOfWork.run(work)
    assert len(attempts) == 2
    assert pg_db.query("SELECT title FROM tasks ORDER BY id") == [("one",), ("two",)]


def test_create_many_stores_all_in_order_or_nothing(db: Db) -> None:
    """create_many keeps input order; one invalid item means nothing is sent or stored."""
    with UnitOfWork() as uow:
        made = uow.tasks.create_many([TaskCreate(title=f"t{i}") for i in range(30)], user_id="u")
    assert [t.title for t in made] == [f"t{i}" for i in range(30)]
    assert [r[0] for r in db.query("SELECT title FROM tasks ORDER BY id")] == [
        t.title for t in made
    ]
    bad = [TaskCreate(title="ok"), TaskCreate.model_construct(title="")]
    with pytest.raises(taskcore.ValidationError), UnitOfWork() as uow:
        uow.tasks.create_many(bad, user_id="u")
    assert db.scalar("SELECT count(*) FROM tasks") == 30
