"""The databases a test runs on, each with an independent connection for checking its contents.

The `db`-style fixtures of conftest.py yield these. `query`/`scalar` read the database on a
fresh sqlite3 or psycopg2 connection (straight to the server, never taskcore and never
PgBouncer), so assertions do not trust the code under test. Import them to type a fixture:
``def test_x(db: Db) -> None``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from psycopg2.extensions import connection, cursor

import taskcore
from _pgbouncer import PgBouncer
from _pgserver import APP_USER, PgTarget

__all__ = ["Db", "PgBouncerDb", "PostgresDb", "SqliteDb"]

_TERMINATE_DEADLINE_S = 15.0


def _one(cur: cursor) -> Any:
    """The single value of a one-row, one-column result."""
    row = cur.fetchone()
    if row is None:
        raise AssertionError("the query returned no row")
    return row[0]


class Db:
    """A database a test runs on, with an independent connection for checking its contents."""

    kind: str
    url: str
    #: The checking connection's parameter placeholder: "?" (sqlite3) or "%s" (psycopg2).
    placeholder: str

    def _connect(self) -> sqlite3.Connection | connection:
        """Open a fresh independent connection in autocommit mode."""
        raise NotImplementedError

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
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
