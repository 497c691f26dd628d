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

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg2 import sql

import taskcore
from taskcore.models import Task, task_operations
from taskcore.testing._flaky import FlakyDatabase
from taskcore.testing._proxy import FlakyProxy
from taskcore.testing._pytest_guard import ENV_ALLOW, INI_ALLOW, add_guard_option, guard
from taskcore.testing._pytest_run import EMBEDDED_DB, SharedRun, TestPostgres

__all__ = ["EMBEDDED_DB", "ENV_ALLOW", "INI_ALLOW", "FlakyDatabase", "TestPostgres"]

_SHARED_DIR = "taskcore_shared_dir"
_RUN_ID = "taskcore_run_id"
_RUN = pytest.StashKey[SharedRun]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ini option that lifts the test-database name guard."""
    add_guard_option(parser)


def pytest_configure(config: pytest.Config) -> None:
    """Check the guard; remember this process's place in the run (controller or xdist worker)."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is None:
        guard(config)
        config.stash[_RUN] = SharedRun(None, secrets.token_hex(3), None)
        return
    shared = workerinput.get(_SHARED_DIR)
    config.stash[_RUN] = SharedRun(
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
    server = run.started_server() if run is not None else None
    if server is not None:
        terminalreporter.write_line(
            f"taskcore: {server.describe()}, started in {server.startup_seconds:.2f}s"
        )
