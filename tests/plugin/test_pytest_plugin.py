"""taskcore's pytest plugin as a user runs it: the guide's example suite, in a pytest subprocess.

Each run copies docs/example_app to a temp dir, adds a harness conftest (not part of the
example) that records what each pytest process's test database holds after every test and at
the end, and a ./.env naming another database that already has taskcore's tables (so a write
that escaped the plugin would land there and be seen). Checks go through independent psycopg2
connections to the server.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import psycopg2
import pytest

import taskcore
from taskcore.testing._pgserver import PgServer
from taskcore.testing.pytest_plugin import TestPostgres

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "example_app"
GUIDE = REPO / "docs" / "testing-your-app.md"
EXAMPLE_TESTS = 8
_RUN_TIMEOUT_S = 300

HARNESS = '''
"""Harness of tests/plugin (not part of the example): what each test database holds."""

import json
import os
from contextlib import closing
from pathlib import Path

import pytest

_OUT = Path(os.environ["HARNESS_OUT"])
_COUNT = "SELECT (SELECT count(*) FROM tasks), (SELECT count(*) FROM task_operations)"


def _rows(postgres):
    with closing(postgres.connect()) as conn, conn.cursor() as cur:
        cur.execute(_COUNT)
        return list(cur.fetchone())


@pytest.fixture(autouse=True)
def _rows_after_each_test(request):
    yield
    if "taskcore_postgres" in request.fixturenames:
        rows = _rows(request.getfixturevalue("taskcore_postgres"))
        with (_OUT / "after-each.jsonl").open("a") as out:
            out.write(json.dumps({"test": request.node.name, "rows": rows}) + "\\n")


@pytest.fixture(scope="session", autouse=True)
def _rows_at_the_end(taskcore_postgres):
    yield
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    server = taskcore_postgres.server
    (_OUT / f"{worker}.json").write_text(
        json.dumps(
            {
                "dbname": taskcore_postgres.dbname,
                "rows": _rows(taskcore_postgres),
                "port": server.port,
                "embedded": server.embedded,
            }
        )
    )
'''


@dataclass
class Run:
    """One pytest run of the example suite, and what its harness recorded."""

    returncode: int
    output: str
    out: Path

    def processes(self) -> dict[str, dict[str, Any]]:
        """What each pytest process's database held at the end, by worker id ("main")."""
        return {p.stem: json.loads(p.read_text()) for p in self.out.glob("*.json")}

    def after_each(self) -> list[dict[str, Any]]:
        """The rows each test left in its database after its teardown, one entry per test."""
        path = self.out / "after-each.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@dataclass
class Example:
    """A copy of the example app with a harness, a ./.env, and databases to check."""

    path: Path
    server: PgServer
    env_db: str  # the database ./.env names: must stay empty

    def run(self, *args: str, env: dict[str, str] | None = None) -> Run:
        """Run pytest in the copy (plugin loaded as installed) and return what happened."""
        out = self.path / f"harness-{secrets.token_hex(3)}"
        out.mkdir()
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TASKCORE_", "PYTEST_", "TEST_DATABASE_", "DATABASE_URL", "PG"))
        }
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *_plugin_args(), *args],
            cwd=self.path,
            env={**base, "HARNESS_OUT": str(out), **(env or {})},
            capture_output=True,
            text=True,
            timeout=_RUN_TIMEOUT_S,
            check=False,
        )
        return Run(proc.returncode, proc.stdout + proc.stderr, out)

    def env_db_rows(self) -> list[int]:
        """Rows in tasks and task_operations of the database ./.env names."""
        return _rows(self.server, self.env_db)


def _plugin_args() -> list[str]:
    """``-p`` for the plugin unless its pytest11 entry point already loads it."""
    registered = any(ep.name == "taskcore" for ep in entry_points(group="pytest11"))
    return [] if registered else ["-p", "taskcore.testing.pytest_plugin"]


def _rows(server: PgServer, dbname: str) -> list[int]:
    """Rows in tasks and task_operations of ``dbname``, read on an independent connection."""
    with closing(server.admin_connect(dbname)) as conn, conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM tasks), (SELECT count(*) FROM task_operations)")
        row = cur.fetchone()
        assert row is not None
        return list(row)


def _passed(run: Run, count: int = EXAMPLE_TESTS) -> None:
    """Assert the run passed all ``count`` tests (showing its output otherwise)."""
    assert run.returncode == 0, run.output
    assert re.search(rf"\b{count} passed\b", run.output), run.output


@pytest.fixture
def example(tmp_path: Path, taskcore_postgres: TestPostgres) -> Iterator[Example]:
    """The example app copied to tmp_path, with a harness and a ./.env naming a live database."""
    server = taskcore_postgres.server
    path = tmp_path / "example_app"
    shutil.copytree(EXAMPLE, path, ignore=shutil.ignore_patterns("__pycache__", ".env"))
    (path / "conftest.py").write_text(HARNESS)
    env_db = f"example_env_{secrets.token_hex(3)}"
    server.create_database(env_db)
    # Tables in place, as in a real app's database: a write routed here would succeed silently.
    with taskcore.Database(server.url(env_db)) as db:
        db.init_db()
    (path / ".env").write_text(f"DATABASE_URL={server.url(env_db)}\n")
    try:
        yield Example(path, server, env_db)
    finally:
        server.drop_database(env_db)


@pytest.fixture
def test_database(taskcore_postgres: TestPostgres) -> Iterator[str]:
    """A fresh database named test_... on the server, dropped afterwards (and its clones)."""
    server = taskcore_postgres.server
    name = f"test_example_{secrets.token_hex(3)}"
    server.create_database(name)
    try:
        yield name
    finally:
        for leftover in server.databases_like(name):
            server.drop_database(leftover)


def test_example_suite_leaves_no_row_behind(example: Example, test_database: str) -> None:
    """The example suite passes on TEST_DATABASE_URL's database and leaves it and .env's empty."""
    run = example.run(env={"TEST_DATABASE_URL": example.server.url(test_database)})
    _passed(run)
    after_each = run.after_each()
    assert len(after_each) == EXAMPLE_TESTS
    assert [entry for entry in after_each if entry["rows"] != [0, 0]] == []
    assert run.processes() == {
        "main": {
            "dbname": test_database,
            "rows": [0, 0],
            "port": example.server.port,
            "embedded": False,
        }
    }
    assert _rows(example.server, test_database) == [0, 0]  # tables made once, no rows left
    assert example.env_db_rows() == [0, 0]


@pytest.mark.slow
def test_xdist_workers_each_get_their_own_database(example: Example, test_database: str) -> None:
    """Under pytest -n 4 each worker runs on its own clone; all pass, none leaves a row."""
    pytest.importorskip("xdist", reason="pytest-xdist is not installed (taskcore[test] has it)")
    run = example.run("-n", "4", env={"TEST_DATABASE_URL": example.server.url(test_database)})
    _passed(run)
    processes = run.processes()
    assert len(processes) == 4
    names = {worker: result["dbname"] for worker, result in processes.items()}
    assert len(set(names.values())) == 4
    for worker, name in names.items():
        assert name.startswith(f"{test_database}_") and name.endswith(f"_{worker}")
    assert all(result["rows"] == [0, 0] for result in processes.values())
    assert [entry for entry in run.after_each() if entry["rows"] != [0, 0]] == []
    # The template and the workers' clones are dropped when the run ends.
    assert example.server.databases_like(test_database) == [test_database]
    assert example.env_db_rows() == [0, 0]


@pytest.mark.slow
def test_embedded_server_serves_xdist_workers_and_is_stopped(example: Example) -> None:
    """Without TEST_DATABASE_URL the plugin runs one embedded server for all workers, then stops it."""
    pytest.importorskip("xdist", reason="pytest-xdist is not installed (taskcore[test] has it)")
    run = example.run("-n", "2")
    _passed(run)
    processes = run.processes()
    assert sorted(result["dbname"] for result in processes.values()) == [
        "test_taskcore_gw0",
        "test_taskcore_gw1",
    ]
    assert all(result["embedded"] and result["rows"] == [0, 0] for result in processes.values())
    ports = {result["port"] for result in processes.values()}
    assert len(ports) == 1
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(host="127.0.0.1", port=ports.pop(), dbname="postgres", connect_timeout=5)
    assert example.env_db_rows() == [0, 0]


def test_guard_refuses_a_database_not_named_for_tests(example: Example) -> None:
    """TEST_DATABASE_URL naming a database whose name lacks the test prefix is a usage error."""
    url = example.server.url(example.env_db)
    run = example.run(env={"TEST_DATABASE_URL": url})
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.output
    assert f"names '{example.env_db}', whose name does not start with 'test'" in run.output
    assert "TEST_DATABASE_ALLOW_ANY_NAME=1" in run.output
    password = psycopg2.extensions.parse_dsn(example.server.admin_dsn).get("password")
    assert not password or password not in run.output  # a trust-auth server has none to leak
    assert not run.processes()
    assert example.env_db_rows() == [0, 0]


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param((), {"TEST_DATABASE_ALLOW_ANY_NAME": "1"}, id="env"),
        pytest.param(("-o", "taskcore_allow_any_database=true"), {}, id="ini"),
    ],
)
def test_guard_can_be_lifted_explicitly(
    example: Example, taskcore_postgres: TestPostgres, args: tuple[str, ...], env: dict[str, str]
) -> None:
    """The environment variable or the ini option lets the suite run on any database name."""
    server = taskcore_postgres.server
    name = f"scratch_{secrets.token_hex(3)}"
    server.create_database(name)
    try:
        run = example.run(*args, env={"TEST_DATABASE_URL": server.url(name), **env})
        _passed(run)
        assert _rows(server, name) == [0, 0]
    finally:
        server.drop_database(name)
    assert example.env_db_rows() == [0, 0]


def test_guide_shows_the_example_verbatim() -> None:
    """Every file of the example app appears in the guide exactly as it is on disk."""
    guide = GUIDE.read_text()
    files = [EXAMPLE / "checklist.py", EXAMPLE / "pyproject.toml", *EXAMPLE.glob("tests/*.py")]
    assert len(files) == 4
    for path in files:
        assert path.read_text().strip() in guide, f"{path.relative_to(REPO)} differs in the guide"


def test_test_database_reprs_hold_no_password() -> None:
    """The plugin's TestPostgres (shown in failure reports) never shows the password."""
    password = "S3cret-" + secrets.token_hex(4)
    server = PgServer(
        host="127.0.0.1",
        port=5432,
        admin_dsn=f"host=127.0.0.1 user=postgres password={password} dbname=postgres",
        server_version=180000,
        embedded=True,
    )
    postgres = TestPostgres(server=server, dbname="test_x", url=server.url("test_x"))
    assert password in postgres.url
    for shown in (repr(postgres), str(postgres), postgres.describe(), repr(server)):
        assert password not in shown
