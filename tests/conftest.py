"""Shared fixtures: the PostgreSQL server, per-test databases, and retry waits switched off.

`db` runs a test on SQLite, on PostgreSQL, and on PostgreSQL through a real PgBouncer in
transaction pool mode (Neon's pooled endpoint); `pg_db` / `sqlite_db` / `pgbouncer_db` pin one,
and `server_db` runs a test on PostgreSQL directly and through PgBouncer (no SQLite).
Each yields a handle whose `query`/`scalar` read the database on an independent connection
(sqlite3 or psycopg2 straight to the server, never taskcore and never PgBouncer), so assertions
do not trust the code under test. `pgbouncer` is the session's PgBouncer; tests that need it
are skipped, saying why, when the `pgbouncer` binary is not installed.

The server is the one taskcore's pytest plugin (taskcore.testing.pytest_plugin) runs for the
session: TEST_DATABASE_URL's, else a throwaway embedded PostgreSQL. `pg` adds the suite's app
role and a fresh `taskcore_test` database to it; the plugin's own fixtures (`taskcore_db`, ...)
work here too.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from psycopg2.extensions import connection, cursor

import taskcore
import taskcore.testing
from _pgbouncer import MISSING_REASON, PgBouncer, find_pgbouncer, pgbouncer_in_front_of
from _pgserver import APP_PASSWORD, APP_USER, PgTarget, app_target

if TYPE_CHECKING:  # importing the plugin here would keep pytest from rewriting its asserts
    from taskcore.testing.pytest_plugin import TestPostgres

if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") or not any(
    ep.name == "taskcore" for ep in entry_points(group="pytest11")
):
    # Not loaded through its entry point (autoload off, or an install that predates it).
    pytest_plugins = ["taskcore.testing.pytest_plugin"]

_PG_USED: list[PgTarget] = []  # filled when the session fixture starts, for the summary line
_PGBOUNCER_USED: list[PgBouncer] = []
_TERMINATE_DEADLINE_S = 15.0


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers this conftest understands (pyproject's list has the others)."""
    config.addinivalue_line(
        "markers", "real_waits: keep taskcore's real retry backoff waits for this test"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which PostgreSQL server the run used, if any."""
    for target in _PG_USED:
        extra = f", started in {target.startup_seconds:.2f}s" if target.embedded else ""
        terminalreporter.write_line(f"PostgreSQL used: {target.describe()}{extra}")
    for bouncer in _PGBOUNCER_USED:
        terminalreporter.write_line(f"PgBouncer used: {bouncer.describe()}")


def _one(cur: cursor) -> Any:
    """The single value of a one-row, one-column result."""
    row = cur.fetchone()
    assert row is not None
    return row[0]


class Db:
    """A database a test runs on, with an independent connection for checking its contents."""

    kind: str
    url: str
    #: The checking connection's parameter placeholder: "?" (sqlite3) or "%s" (psycopg2).
    placeholder: str

    def _connect(self) -> Any:
        """Open a fresh independent connection in autocommit mode."""
        raise NotImplementedError

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh independent connection; return all rows ([] if none)."""
        with closing(self._connect()) as conn:
            cur = conn.cursor()
            try:
                cur.execute(sql, params)
                return [tuple(row) for row in cur.fetchall()] if cur.description else []
            finally:
                cur.close()

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """First column of the first row of `sql` (None when it returns no rows)."""
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def configure(self, **overrides: Any) -> None:
        """Point taskcore at this database again, with extra settings (e.g. retry_attempts=1)."""
        taskcore.configure(database_url=self.url, **overrides)

    def __repr__(self) -> str:
        """Name the backend only: the URL may hold a password."""
        return f"<{type(self).__name__} {self.kind}>"


class SqliteDb(Db):
    """A SQLite file in the test's tmp_path."""

    def __init__(self, path: Path) -> None:
        """Use (and later create) the SQLite file at `path`."""
        self.kind = "sqlite"
        self.path = path
        self.url = f"sqlite:///{path}"
        self.placeholder = "?"

    def _connect(self) -> sqlite3.Connection:
        """A fresh sqlite3 connection; isolation_level=None is autocommit."""
        return sqlite3.connect(self.path, timeout=10, isolation_level=None)


class PostgresDb(Db):
    """The suite's PostgreSQL test database, checked through superuser connections."""

    def __init__(self, pg: PgTarget) -> None:
        """Use the app role's URL of `pg` for taskcore, its admin DSN for checking."""
        self.kind = "postgres"
        self.pg = pg
        self.url = pg.url
        self.placeholder = "%s"

    def _connect(self) -> connection:
        """A fresh autocommit superuser psycopg2 connection to the test database."""
        return self.pg.admin_connect()

    def terminate_app_backends(self) -> list[int]:
        """Kill every server backend of the app role (like a Neon suspend) and wait until gone."""
        with closing(self._connect()) as conn, conn.cursor() as cur:
            # Select first, terminate after: in one flat WHERE the planner may call
            # pg_terminate_backend before filtering on usename, killing this very session.
            cur.execute(
                "WITH app AS MATERIALIZED ("
                " SELECT pid FROM pg_stat_activity"
                " WHERE usename = %s AND pid <> pg_backend_pid())"
                " SELECT pid FROM app WHERE pg_terminate_backend(pid)",
                (APP_USER,),
            )
            pids = [row[0] for row in cur.fetchall()]
            # Wait for exactly these backends: new app connections opened meanwhile are fine.
            deadline = time.monotonic() + _TERMINATE_DEADLINE_S
            while pids:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
                if _one(cur) == 0:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"backends {pids} still alive after termination")
                time.sleep(0.005)  # poll interval only; the loop waits on the condition above
        return pids

    def reset(self) -> None:
        """Empty the tasks table (if a test left one) for the next test."""
        # Leftover app sessions could hold locks that would make the TRUNCATE wait.
        self.terminate_app_backends()
        with closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute("SET lock_timeout = '10s'")
            cur.execute("SELECT to_regclass('public.tasks') IS NOT NULL")
            if _one(cur):
                cur.execute("TRUNCATE tasks RESTART IDENTITY")


class PgBouncerDb(PostgresDb):
    """The PostgreSQL test database with taskcore going through PgBouncer (transaction mode).

    `kind` stays "postgres" (it is the same server); `query`/`scalar` still read straight from
    PostgreSQL, so a check never goes through the pooler under test.
    """

    def __init__(self, pg: PgTarget, bouncer: PgBouncer) -> None:
        """taskcore uses the app role's URL through `bouncer`; checks use `pg`'s admin DSN."""
        super().__init__(pg)
        self.bouncer = bouncer
        self.url = bouncer.url

    def __repr__(self) -> str:
        """Name the backend and the pooler only."""
        return f"<{type(self).__name__} postgres via PgBouncer (transaction pool mode)>"


@pytest.fixture(scope="session")
def pg(taskcore_postgres: TestPostgres) -> PgTarget:
    """The suite's app role and fresh taskcore_test on the plugin's server (TEST_DATABASE_URL's,
    else the embedded one the plugin started)."""
    target = app_target(taskcore_postgres.server, password=APP_PASSWORD)
    _PG_USED.append(target)
    return target


@pytest.fixture(scope="session")
def pgbouncer(pg: PgTarget) -> Iterator[PgBouncer]:
    """A real PgBouncer in transaction pool mode in front of `pg`, for the whole session.

    Skips (with the install hint) every test that needs it when the binary is missing.
    """
    binary = find_pgbouncer()
    if binary is None:
        pytest.skip(MISSING_REASON)
    with pgbouncer_in_front_of(pg, binary) as bouncer:
        _PGBOUNCER_USED.append(bouncer)
        yield bouncer


@pytest.fixture(autouse=True)
def _no_retry_waits(request: pytest.FixtureRequest) -> Iterator[None]:
    """Skip retry backoff waits (unless marked real_waits); dispose leftover pools afterwards."""
    if request.node.get_closest_marker("real_waits"):
        yield
    else:
        with taskcore.testing.no_retry_waits():
            yield
    # A test may have configured taskcore itself; never let its pool leak into the next test.
    taskcore.dispose()


def _open_db(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """Point taskcore at a fresh database of `kind`, yield its handle, then clean up."""
    handle: Db
    if kind == "sqlite":
        handle = SqliteDb(tmp_path / "tasks.db")
    elif kind == "pgbouncer":
        # Looked up lazily so runs without it never start it (and skip when it is missing).
        handle = PgBouncerDb(request.getfixturevalue("pg"), request.getfixturevalue("pgbouncer"))
    else:
        # Looked up lazily so SQLite-only runs never start a server.
        handle = PostgresDb(request.getfixturevalue("pg"))
    handle.configure()
    taskcore.init_db()
    try:
        yield handle
    finally:
        taskcore.dispose()
        if isinstance(handle, PostgresDb):
            handle.reset()


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
        pytest.param("pgbouncer", marks=pytest.mark.postgres, id="pgbouncer"),
    ]
)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """The test runs three times: on a SQLite file, on the PostgreSQL test database, and on it
    through PgBouncer in transaction pool mode (skipped, saying why, without the binary)."""
    yield from _open_db(request.param, request, tmp_path)


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres, id="postgres")])
def pg_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PostgresDb]:
    """PostgreSQL only, for tests of server behaviour."""
    for handle in _open_db("postgres", request, tmp_path):
        assert isinstance(handle, PostgresDb)
        yield handle


@pytest.fixture(params=[pytest.param("pgbouncer", marks=pytest.mark.postgres, id="pgbouncer")])
def pgbouncer_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PgBouncerDb]:
    """PostgreSQL through PgBouncer in transaction pool mode only."""
    for handle in _open_db("pgbouncer", request, tmp_path):
        assert isinstance(handle, PgBouncerDb)
        yield handle


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
        pytest.param("pgbouncer", marks=pytest.mark.postgres, id="pgbouncer"),
    ]
)
def server_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PostgresDb]:
    """PostgreSQL twice: directly, and through PgBouncer in transaction pool mode (no SQLite)."""
    for handle in _open_db(request.param, request, tmp_path):
        assert isinstance(handle, PostgresDb)
        yield handle


@pytest.fixture(params=[pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite")])
def sqlite_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteDb]:
    """SQLite only."""
    for handle in _open_db("sqlite", request, tmp_path):
        assert isinstance(handle, SqliteDb)
        yield handle


@pytest.fixture
def proxy(pg: PgTarget, pg_db: Db) -> Iterator[taskcore.testing.FlakyProxy]:
    """A fault-injection proxy in front of the test server, with taskcore pointed through it."""
    with taskcore.testing.FlakyProxy(pg.host, pg.port, seed=1) as flaky:
        taskcore.configure(database_url=flaky.url(pg.url), deadline=30)
        yield flaky
    taskcore.dispose()


@pytest.fixture
def taskcore_events(caplog: pytest.LogCaptureFixture) -> Any:
    """A function giving the captured log records of one taskcore event, in order."""

    def named(name: str) -> list[Any]:
        return [r for r in caplog.records if getattr(r, "taskcore_event", None) == name]

    return named
