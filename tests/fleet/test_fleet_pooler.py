"""Transaction pooling: taskcore leaves no session state on a server connection PgBouncer reuses.

A PgBouncer with ``default_pool_size = 1`` makes every client share one server connection,
the worst case of Neon's pooled endpoint. taskcore runs every kind of unit of work through it;
between units, a plain psycopg2 client of the same PgBouncer looks at that server connection's
session: settings changed by a session ``SET``, prepared statements, temp schema, LISTEN
channels, advisory locks. A positive control first proves the probe sees a leak.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import Any

import psycopg2
import pytest
from sqlalchemy import func, select

import taskcore
from _db import PgBouncerDb, PostgresDb
from _fleet import connection_seen
from _pgbouncer import MISSING_REASON, PgBouncer, find_pgbouncer, pgbouncer_in_front_of
from _pgserver import PgTarget
from taskcore import TaskCreate, TaskUpdate, UnitOfWork

pytestmark = pytest.mark.postgres

#: Parameters PgBouncer itself tracks and SETs per client when it links one to a server
#: connection; their values are PgBouncer's business, not a leak.
_POOLER_TRACKED = (
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "standard_conforming_strings",
)


@pytest.fixture(scope="module")
def single_server_connection(pg: PgTarget) -> Iterator[PgBouncer]:
    """A private PgBouncer whose pool has one server connection, shared by every client."""
    binary = find_pgbouncer()
    if binary is None:
        pytest.skip(MISSING_REASON)
    with pgbouncer_in_front_of(pg, binary, default_pool_size=1) as bouncer:
        yield bouncer


def _session_state(bouncer: PgBouncer) -> dict[str, Any]:
    """What the shared server connection carries from session to session, seen by a new client."""
    with closing(psycopg2.connect(bouncer.url, connect_timeout=5)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT name, setting FROM pg_settings WHERE source = 'session'"
                " AND name <> ALL(%s) ORDER BY name",
                (list(_POOLER_TRACKED),),
            )
            settings = dict(cur.fetchall())
            cur.execute(
                "SELECT pg_backend_pid(), (SELECT count(*) FROM pg_prepared_statements),"
                " pg_my_temp_schema()::int, (SELECT count(*) FROM pg_listening_channels()),"
                " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                "  AND pid = pg_backend_pid())"
            )
            row = cur.fetchone()
    assert row is not None
    pid, prepared, temp_schema, channels, advisory = row
    return {
        "pid": pid,
        "settings": settings,
        "prepared": prepared,
        "temp_schema": temp_schema,
        "channels": channels,
        "advisory_locks": advisory,
    }


def test_pgbouncer_variant_really_goes_through_pgbouncer(pgbouncer_db: PgBouncerDb) -> None:
    """In the `pgbouncer` variant of the fixtures, taskcore's connection is a PgBouncer client
    and its transaction runs on one of PgBouncer's server connections."""
    bouncer = pgbouncer_db.bouncer
    with UnitOfWork() as uow:
        seen = connection_seen(uow)
        clients = {int(c["port"]) for c in bouncer.show("clients")}
        servers = {int(s["remote_pid"]) for s in bouncer.show("servers")}
    assert seen.local_port in clients
    assert seen.backend_pid in servers


def test_probe_sees_a_session_set_left_on_the_shared_connection(
    pg_db: PostgresDb, single_server_connection: PgBouncer
) -> None:
    """Positive control: a plain client's session SET is visible to the next client."""
    bouncer = single_server_connection
    with closing(psycopg2.connect(bouncer.url, connect_timeout=5)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '1234ms'")
    try:
        assert _session_state(bouncer)["settings"] == {"lock_timeout": "1234"}
    finally:
        with closing(psycopg2.connect(bouncer.url, connect_timeout=5)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("RESET lock_timeout")
    assert _session_state(bouncer)["settings"] == {}


def test_no_session_state_survives_any_unit_of_work(
    pg_db: PostgresDb, single_server_connection: PgBouncer
) -> None:
    """Every kind of unit (one-shots, read-only, serializable, repeatable read, statement
    timeout, savepoint, rollback, failed statement) leaves the shared server connection clean."""
    bouncer = single_server_connection
    clean = _session_state(bouncer)
    assert clean["settings"] == {}
    taskcore.configure(database_url=bouncer.url)
    task = taskcore.create_task(TaskCreate(title="pooled"), user_id="u")

    def read_only() -> None:
        with UnitOfWork(read_only=True, isolation="serializable") as uow:
            uow.tasks.list()

    def repeatable_read() -> None:
        UnitOfWork.run(lambda uow: uow.tasks.toggle_complete(task.id), isolation="repeatable read")

    def with_timeout() -> None:
        with UnitOfWork(statement_timeout=5.0) as uow:
            uow.tasks.update(task.id, TaskUpdate(description="timed"))

    def timed_out() -> None:
        with pytest.raises(taskcore.DatabaseError), UnitOfWork(statement_timeout=0.05) as uow:
            uow.run_statement(select(func.pg_sleep(1)), writes=False)

    def savepoint_and_rollback() -> None:
        with pytest.raises(KeyError), UnitOfWork() as uow:
            uow.tasks.create(TaskCreate(title="undone"), user_id="u")
            with uow.savepoint():
                uow.tasks.create(TaskCreate(title="inner"), user_id="u")
            raise KeyError

    def one_shots() -> None:
        taskcore.toggle_complete(task.id)
        taskcore.update_task(task.id, TaskUpdate(title="pooled again"))
        assert taskcore.get_tasks(user_id="u")

    steps = [
        read_only,
        repeatable_read,
        with_timeout,
        timed_out,
        savepoint_and_rollback,
        one_shots,
        taskcore.init_db,
        taskcore.check_connection,
    ]
    for step in steps:
        step()
        state = _session_state(bouncer)
        assert state == clean, f"{step.__name__} left {state} (clean: {clean})"
    assert pg_db.query(f"SELECT title, description FROM tasks WHERE id = {task.id}") == [
        ("pooled again", "timed")
    ]
