"""Worker fleets for the tests: brokers, a database of their own, worker processes run for real.

Everything here talks to real services: RabbitMQ (Celery's broker), Redis (RQ's broker, Celery's
result backend, the pause points' signals) and PostgreSQL (checked through psycopg2, never
through taskcore). Worker processes get the database only through ``DATABASE_URL``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, make_dsn

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/0"
START_TIMEOUT_S = 60.0
POLL_S = 0.02  # poll interval of condition waits; never a stand-in for synchronisation


def broker_missing(host: str, port: int, what: str) -> str | None:
    """Why the tests must skip when nothing answers at host:port, else None."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return f"{what} does not answer at {host}:{port} (start it to run the worker tests)"
    return None


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    """Poll ``condition()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL_S)


class WorkerDb:
    """A database of the test module's own on the suite's server, checked by psycopg2."""

    def __init__(self, pg: Any, name: str) -> None:
        """Use database ``name`` on ``pg``'s server, owned by ``pg``'s app role."""
        from taskcore.testing._pgserver import url_for

        self.name = name
        self.admin_dsn = make_dsn(pg.admin_dsn, dbname=name)
        self.server_admin_dsn = pg.admin_dsn
        self.url = url_for(pg.user, pg.password, pg.host, pg.port, name)
        self.owner = pg.user

    def create(self) -> None:
        """Create the database afresh and its tables (with taskcore, in a child process)."""
        with closing(psycopg2.connect(self.server_admin_dsn, connect_timeout=10)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(self.name)
                    )
                )
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(self.name), sql.Identifier(self.owner)
                    )
                )
        subprocess.run(
            [sys.executable, "-c", "import taskcore; taskcore.init_db()"],
            env=worker_env(self.url),
            check=True,
            timeout=START_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )

    def drop(self) -> None:
        """Drop the database, disconnecting whoever is left."""
        with closing(psycopg2.connect(self.server_admin_dsn, connect_timeout=10)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(self.name)
                    )
                )

    def connect(self) -> connection:
        """A fresh autocommit superuser connection to this database."""
        conn = psycopg2.connect(self.admin_dsn, connect_timeout=10)
        conn.autocommit = True
        return conn

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement run on a fresh independent connection."""
        with closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return [tuple(row) for row in cur.fetchall()] if cur.description else []

    def titles(self, owner: str) -> list[str]:
        """Titles of ``owner``'s tasks, one per stored row (duplicates kept), sorted."""
        rows = self.query("SELECT title FROM tasks WHERE user_id = %s", (owner,))
        return sorted(title for (title,) in rows)

    def app_backends(self, conn: connection | None = None) -> int:
        """Server backends connected to this database other than superuser checks."""
        statement = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND usename <> 'postgres'"
            " AND pid <> pg_backend_pid()"
        )
        if conn is None:
            return int(self.query(statement, (self.name,))[0][0])
        with conn.cursor() as cur:
            cur.execute(statement, (self.name,))
            row = cur.fetchone()
            assert row is not None
            return int(row[0])


def sessions(conn: connection, dbname: str) -> int:
    """Sessions ever opened to ``dbname``, read fresh (pg_stat_database, PostgreSQL >= 14)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (dbname,))
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


def worker_env(url: str, **extra: str) -> dict[str, str]:
    """A worker's environment: the database only through DATABASE_URL, these tests' helpers
    importable, and no .env file read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKCORE_", "DATABASE_"))}
    path = [str(HERE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(
        DATABASE_URL=url,
        PYTHONPATH=os.pathsep.join(path),
        TASKCORE_ENV_FILE="none",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


class Process:
    """A worker process run for real, its output read line by line on a thread."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        """Start ``args`` in a session of its own (so its whole group can be killed)."""
        self.args = args
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._pumping = threading.Thread(target=self._pump, daemon=True)
        self._pumping.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self._new.put(line)
        self._new.put(None)

    def wait_for_line(self, text: str, timeout: float = START_TIMEOUT_S) -> str:
        """Block until the process prints a line containing ``text``; fail if it exits first."""
        for seen in self.lines:
            if text in seen:
                return seen
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                message = f"no line with {text!r} in {timeout:.0f}s:\n{self.output()}"
                raise AssertionError(message) from None
            if line is None:
                raise AssertionError(
                    f"exited ({self.proc.wait()}) before {text!r}:\n{self.output()}"
                )
            if text in line:
                return line

    def close(self) -> None:
        """After the process ended: read the rest of its output and close the pipe."""
        self.proc.wait(timeout=START_TIMEOUT_S)
        self._pumping.join(timeout=START_TIMEOUT_S)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def output(self) -> str:
        """Everything printed so far (the last 200 lines)."""
        return "".join(self.lines[-200:])

    def terminate(self, grace: float) -> int | None:
        """SIGTERM (a warm shutdown); the exit code, or None if still running after ``grace``."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            return None

    def kill_group(self) -> None:
        """SIGKILL the process and every process it started (a supervisor's last resort)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=START_TIMEOUT_S)


@contextlib.contextmanager
def running(args: list[str], env: dict[str, str], cwd: Path, ready: str) -> Iterator[Process]:
    """Run a worker until the block ends; ``ready`` is the line that says it consumes."""
    process = Process(args, env, cwd)
    try:
        process.wait_for_line(ready)
        yield process
    finally:
        if process.proc.poll() is None and process.terminate(grace=30) is None:
            process.kill_group()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.proc.pid, signal.SIGKILL)  # leftovers of a killed main process
        process.close()
