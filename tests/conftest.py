"""Shared fixtures: the PostgreSQL server, per-test databases, and retry waits switched off.

`db` runs a test on SQLite, on PostgreSQL, and on PostgreSQL through a real PgBouncer in
transaction pool mode (Neon's pooled endpoint); `pg_db` / `sqlite_db` / `pgbouncer_db` pin one,
and `server_db` runs a test on PostgreSQL directly and through PgBouncer (no SQLite).
Each yields a handle whose `query`/`scalar` read the database on an independent connection
(sqlite3 or psycopg2 straight to the server, never taskcore and never PgBouncer), so assertions
do not trust the code under test (the handles are tests/_db.py's classes: import them to type
a fixture). `proxy` is a seeded FlakyProxy in front of the server with taskcore pointed through
it; `taskcore_events(name)` lists the captured log records of one event. `pgbouncer` is the session's PgBouncer; tests that need it
are skipped, saying why, when the `pgbouncer` binary is not installed.

The server is the one taskcore's pytest plugin (taskcore.testing.pytest_plugin) runs for the
session: TEST_DATABASE_URL's, else a throwaway embedded PostgreSQL. `pg` adds the suite's app
role and a fresh `taskcore_test` database to it; the plugin's own fixtures (`taskcore_db`, ...)
work here too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

import taskcore
import taskcore.testing
from _db import Db, PgBouncerDb, PostgresDb, SqliteDb
from _pgbouncer import MISSING_REASON, PgBouncer, find_pgbouncer, pgbouncer_in_front_of
from _pgserver import APP_PASSWORD, PgTarget, app_target, skip_unless_tcp
from taskcore.testing import FlakyProxy

if TYPE_CHECKING:  # importing the plugin here would keep pytest from rewriting its asserts
    from taskcore.testing.pytest_plugin import TestPostgres

if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") or not any(
    ep.name == "taskcore" for ep in entry_points(group="pytest11")
):
    # Not loaded through its entry point (autoload off, or an install that predates it).
    pytest_plugins = ["taskcore.testing.pytest_plugin"]

D = TypeVar("D", bound=Db)

_PG_USED: list[PgTarget] = []  # filled when the session fixture starts, for the summary line
_PGBOUNCER_USED: list[PgBouncer] = []


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers this conftest understands (pyproject's list has the others)."""
    config.addinivalue_line(
        "markers", "real_waits: keep taskcore's real retry backoff waits for this test"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which PostgreSQL server the run used, if any."""
    for target in _PG_USED:
        extra = f", started in {target.startup_seconds:.2f}s" if target.embedded else ""
        terminalreporter.write_line(f"PostgreSQL used: {target.describe()}{extra}")
    for bouncer in _PGBOUNCER_USED:
        terminalreporter.write_line(f"PgBouncer used: {bouncer.describe()}")


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


def _new_handle(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    """A handle on a database of `kind`; servers are looked up lazily, so SQLite-only runs never
    start one and runs without PgBouncer never start it (and skip when it is missing)."""
    if kind == "sqlite":
        return SqliteDb(tmp_path / "tasks.db")
    pg: PgTarget = request.getfixturevalue("pg")
    if kind == "pgbouncer":
        return PgBouncerDb(pg, request.getfixturevalue("pgbouncer"))
    return PostgresDb(pg)


def _open_db(handle: D) -> Iterator[D]:
    """Point taskcore at `handle`'s fresh database, yield the handle, then clean up."""
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
    yield from _open_db(_new_handle(request.param, request, tmp_path))


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres, id="postgres")])
def pg_db(pg: PgTarget) -> Iterator[PostgresDb]:
    """PostgreSQL only, for tests of server behaviour."""
    yield from _open_db(PostgresDb(pg))


@pytest.fixture(params=[pytest.param("pgbouncer", marks=pytest.mark.postgres, id="pgbouncer")])
def pgbouncer_db(pg: PgTarget, pgbouncer: PgBouncer) -> Iterator[PgBouncerDb]:
    """PostgreSQL through PgBouncer in transaction pool mode only."""
    yield from _open_db(PgBouncerDb(pg, pgbouncer))


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres, id="postgres"),
        pytest.param("pgbouncer", marks=pytest.mark.postgres, id="pgbouncer"),
    ]
)
def server_db(request: pytest.FixtureRequest, pg: PgTarget) -> Iterator[PostgresDb]:
    """PostgreSQL twice: directly, and through PgBouncer in transaction pool mode (no SQLite)."""
    if request.param == "pgbouncer":
        yield from _open_db(PgBouncerDb(pg, request.getfixturevalue("pgbouncer")))
    else:
        yield from _open_db(PostgresDb(pg))


@pytest.fixture(params=[pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite")])
def sqlite_db(tmp_path: Path) -> Iterator[SqliteDb]:
    """SQLite only."""
    yield from _open_db(SqliteDb(tmp_path / "tasks.db"))


@pytest.fixture
def proxy(pg: PgTarget, pg_db: PostgresDb) -> Iterator[FlakyProxy]:
    """A seeded fault-injection proxy in front of the test server, taskcore pointed through it.

    The suite's one proxy fixture: tests that open their own connections use ``proxy.url(url)``.
    Skipped when the server listens on a unix socket (the proxy relays TCP).
    """
    skip_unless_tcp(pg)
    with FlakyProxy(pg.host, pg.port, seed=1) as flaky:
        taskcore.configure(database_url=flaky.url(pg.url), deadline=30)
        yield flaky
    taskcore.dispose()


@pytest.fixture
def taskcore_events(caplog: pytest.LogCaptureFixture) -> Callable[[str], list[logging.LogRecord]]:
    """A function giving the captured log records of one taskcore event, in order."""

    def named(name: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "taskcore_event", None) == name]

    return named
