"""The `todo` console app end to end against the suite's PostgreSQL server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from typing import Any

import pytest
from _todo import (
    TodoApp,
    added_id,
    assert_one_error_among_logs,
    assert_one_error_line,
    time_bound,
)

pytestmark = pytest.mark.postgres


def _truncate_tasks(pg: Any) -> None:
    """Empty the shared test database's tasks table, if it exists, through the admin connection."""
    with closing(pg.admin_connect()) as conn, conn.cursor() as cur:
        cur.execute("SET lock_timeout = '10s'")
        cur.execute("SELECT to_regclass('public.tasks') IS NOT NULL")
        if cur.fetchone()[0]:
            cur.execute("TRUNCATE tasks RESTART IDENTITY")


@pytest.fixture
def pg_todo(todo: TodoApp, pg: Any) -> Iterator[TodoApp]:
    """The app with DATABASE_URL set to PostgreSQL; the shared tasks table is emptied around it."""
    _truncate_tasks(pg)
    app = TodoApp(
        home=todo.home, sqlite_path=todo.sqlite_path, env=todo.child_env({"DATABASE_URL": pg.url})
    )
    yield app
    _truncate_tasks(pg)


def test_postgres_task_is_stored_and_doctor_masks_the_password(pg_todo: TodoApp, pg: Any) -> None:
    """On PostgreSQL, `add` stores the row (seen by the admin) and `doctor` masks the password."""
    title = 'Grüße 🎉 it\'s "quoted"'
    task_id = added_id(
        pg_todo.ok("add", title, "--description", "on postgres", "--user", "pg-user")
    )
    with closing(pg.admin_connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT title, description, completed, user_id FROM tasks WHERE id = %s", (task_id,)
        )
        assert cur.fetchall() == [(title, "on postgres", False, "pg-user")]
    assert title in pg_todo.ok("list", "--user", "pg-user").out
    assert not pg_todo.sqlite_path.exists()  # DATABASE_URL wins over the SQLite default

    doctor = pg_todo.ok("doctor")
    fields = dict(line.split(":", 1) for line in doctor.out.splitlines())
    assert fields["backend"].strip() == "postgresql"
    assert ":***@" in fields["url"]
    assert "PostgreSQL" in fields["server version"]
    assert fields["status"].strip() == "ok"
    assert pg.password not in doctor.out + doctor.err


def test_postgres_not_found_and_scoping(pg_todo: TodoApp) -> None:
    """On PostgreSQL, another user's task is not found (exit 1, one line), as a missing one is."""
    task_id = added_id(pg_todo.ok("add", "private", "--user", "owner"))
    result = pg_todo.run("toggle", str(task_id), "--user", "intruder")
    assert assert_one_error_line(result, 1) == f"todo: error: task {task_id} not found"
    assert_one_error_line(pg_todo.run("show", "999999"), 1, "task 999999 not found")


def test_postgres_wrong_password_is_rejected_without_echo(pg_todo: TodoApp, pg: Any) -> None:
    """A wrong password gives one error line, exit 3, and neither password appears in the output."""
    if not pg.password_auth_enforced:
        pytest.skip("this server does not check passwords")
    url = pg.url.replace(pg.password.replace("!", "%21"), "Wr0ng-Passw0rd")
    assert url != pg.url
    result = pg_todo.run("list", env={"DATABASE_URL": url})
    assert_one_error_line(result, 3, "could not connect")
    assert "Wr0ng-Passw0rd" not in result.out + result.err
    assert pg.password not in result.out + result.err


def test_postgres_done_twice_and_json_timestamps(pg_todo: TodoApp, pg: Any) -> None:
    """On PostgreSQL, `done` twice leaves the task done, and `list --json` shows the stored instants in UTC."""
    task_id = added_id(pg_todo.ok("add", "pg scripted", "--user", "pg-user"))
    for _ in range(2):
        result, document = pg_todo.json("done", str(task_id), "--user", "pg-user")
        assert result.code == 0, str(result)
        assert document["completed"] is True
        with closing(pg.admin_connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT completed FROM tasks WHERE id = %s", (task_id,))
            assert cur.fetchall() == [(True,)]
    _, tasks = pg_todo.json("list", "--user", "pg-user", env={"TZ": "XST-14"})
    with closing(pg.admin_connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT created_at, updated_at FROM tasks WHERE id = %s", (task_id,))
        ((created, updated),) = cur.fetchall()
    assert [task["id"] for task in tasks] == [task_id]
    for field, stored in (("created_at", created), ("updated_at", updated)):
        assert tasks[0][field].endswith("Z")
        assert datetime.fromisoformat(tasks[0][field].replace("Z", "+00:00")) == stored, field


def test_postgres_blocked_write_gives_up_within_the_deadline(pg_todo: TodoApp, pg: Any) -> None:
    """`todo done` on a row another transaction keeps locked exits 3 within --deadline + 1 s, one line; running it again settles it."""
    task_id = added_id(pg_todo.ok("add", "locked", "--user", "pg-user"))
    with closing(pg.admin_connect()) as locker, locker.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
        started = time.monotonic()
        result = pg_todo.run("done", str(task_id), "--user", "pg-user", "--deadline", "3", "-vv")
        elapsed = time.monotonic() - started
        locker.rollback()
    line = assert_one_error_among_logs(result, 3)
    assert "may or may not" in line
    assert "`todo done` is safe to run again" in line
    assert elapsed <= time_bound(result, 3), f"took {elapsed:.2f} s\n{result}"
    pg_todo.ok("done", str(task_id), "--user", "pg-user")
    with closing(pg.admin_connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT completed FROM tasks WHERE id = %s", (task_id,))
        assert cur.fetchall() == [(True,)]
