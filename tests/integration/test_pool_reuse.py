"""The pool keeps its connections at steady load: no server session is opened per call."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest

import taskcore
from _db import PostgresDb
from taskcore import TaskCreate

pytestmark = pytest.mark.postgres


def test_steady_concurrent_load_opens_no_session_per_call(server_db: PostgresDb) -> None:
    """8 threads making 800 calls through a pool of 4 open at most 4 server sessions in all."""
    db = taskcore.Database(server_db.url, pool_size=4)
    task = db.create_task(TaskCreate(title="shared"), "u")
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    def client() -> None:
        barrier.wait()
        try:
            for _ in range(50):
                db.get_task(task.id, "u")
                db.toggle_complete(task.id, "u")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert failures == []
        stats = db.stats()
        assert stats.opened <= 4
        assert stats.in_use == 0 and stats.waiting == 0
        # 800 toggles of one task: an even number, so it ends where it started.
        assert server_db.scalar("SELECT completed FROM tasks WHERE id = %s", (task.id,)) is False
    finally:
        db.dispose()


def test_two_handles_in_one_process_keep_separate_pools_and_budgets(
    pg_db: PostgresDb, tmp_path: Path
) -> None:
    """Two handles on two databases: each writes only to its own, with its own pool and budget."""
    second = tmp_path / "second.db"
    pg = taskcore.Database(pg_db.url)
    lite = taskcore.Database(f"sqlite:///{second}")
    try:
        lite.init_db()
        pg.create_task(TaskCreate(title="in postgres"), "u")
        lite.create_task(TaskCreate(title="in sqlite"), "u")
        assert pg_db.query("SELECT title FROM tasks") == [("in postgres",)]
        with closing(sqlite3.connect(second)) as check:
            assert check.execute("SELECT title FROM tasks").fetchall() == [("in sqlite",)]
        assert pg.stats().opened == 1 and lite.stats().opened == 1
        assert pg.budget is not lite.budget
        assert pg.counters()["units_committed"] == 1  # the create
        assert lite.counters()["units_committed"] == 2  # init_db and the create
    finally:
        pg.dispose()
        lite.dispose()
