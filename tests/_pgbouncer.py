"""A real PgBouncer in transaction pool mode in front of the suite's PostgreSQL.

Neon's pooled endpoint (``-pooler`` host) is PgBouncer with ``pool_mode=transaction``: a client
keeps a server connection only for the length of one transaction, so anything that relies on
session state (session ``SET``, advisory locks, SQL ``PREPARE``, temp tables, LISTEN) breaks.
The suite runs taskcore through this private PgBouncer to prove it relies on none of that.

The binary comes from the Debian package ``pgbouncer`` (``.ci/run`` installs it); when it is
missing, :func:`find_pgbouncer` returns None and the fixtures skip with :data:`MISSING_REASON`.
Each instance gets its own temp dir (config, auth file, log, pidfile), listens on 127.0.0.1 at
a free port (no unix socket), authenticates the app role with SCRAM from its own auth file,
and is stopped (and its dir deleted) on exit. PgBouncer refuses to run as root, so under root
it runs as the same unprivileged system user as the embedded PostgreSQL.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2

from _pgserver import PgTarget, clean_environment, free_port, unprivileged

MISSING_REASON = "pgbouncer binary not found: install Debian package pgbouncer (.ci/run does)"
ENV_BIN = "TEST_PGBOUNCER_BIN"

#: Where Debian and source installs put the binary; /usr/sbin is often off a non-root PATH.
_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer")
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


def find_pgbouncer() -> str | None:
    """Path of the pgbouncer binary, or None when it is not installed.

    ``TEST_PGBOUNCER_BIN`` overrides the search: a path to use, or ``none`` to run the suite
    as on a machine without PgBouncer (its tests skip).
    """
    override = os.environ.get(ENV_BIN, "").strip()
    if override:
        return None if override.lower() == "none" else override
    found = shutil.which("pgbouncer")
    if found:
        return found
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer: where it listens and how the app role reaches the test database."""

    host: str
    port: int
    dbname: str
    user: str
    password: str = field(repr=False)
    pool_mode: str
    default_pool_size: int
    max_client_conn: int
    version: str

    @property
    def url(self) -> str:
        """The application role's URL through PgBouncer (password percent-encoded)."""
        auth = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(self.dbname, safe='')}"

    def show(self, what: str) -> list[dict[str, Any]]:
        """Rows of ``SHOW <what>`` on PgBouncer's admin console (the app role is a stats user)."""
        if not what.replace("_", "").isalpha():
            raise ValueError(f"not a SHOW target: {what!r}")
        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname="pgbouncer",
            connect_timeout=5,
        )
        conn.autocommit = True  # the admin console has no transactions
        with closing(conn), conn.cursor() as cur:
            cur.execute(f"SHOW {what.upper()}")
            names = [column[0] for column in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def transactions(self) -> int:
        """Transactions PgBouncer has relayed to the test database so far."""
        rows = [r for r in self.show("stats") if r["database"] == self.dbname]
        return int(rows[0]["total_xact_count"]) if rows else 0

    def describe(self) -> str:
        """One line for reports (no password)."""
        return (
            f"{self.version} at {self.host}:{self.port} (pool_mode={self.pool_mode}, "
            f"default_pool_size={self.default_pool_size}, max_client_conn={self.max_client_conn})"
        )


def _quoted(value: str) -> str:
    """A value for PgBouncer's auth_file: double quotes, embedded quotes doubled."""
    return '"' + value.replace('"', '""') + '"'


class PgBouncerServer:
    """One private PgBouncer process in a temp dir; :meth:`start` returns its :class:`PgBouncer`."""

    def __init__(
        self,
        pg: PgTarget,
        binary: str,
        *,
        default_pool_size: int = 10,
        max_client_conn: int = 400,
    ) -> None:
        """Lay out the temp dir; nothing runs until start()."""
        self.pg = pg
        self.binary = binary
        self.default_pool_size = default_pool_size
        self.max_client_conn = max_client_conn
        self.base = Path(tempfile.mkdtemp(prefix="taskcore-pgbouncer-"))
        self.config = self.base / "pgbouncer.ini"
        self.auth_file = self.base / "userlist.txt"
        self.log = self.base / "pgbouncer.log"
        self.pidfile = self.base / "pgbouncer.pid"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._as_user: dict[str, Any] = {}
        self._env = clean_environment()

    def start(self) -> PgBouncer:
        """Write the config, start PgBouncer on a free port and wait until it serves queries."""
        try:
            self._prepare()
            version = self._version()
            self._start_on_a_free_port()
        except BaseException:
            self.stop()
            raise
        return PgBouncer(
            host="127.0.0.1",
            port=self.port,
            dbname=self.pg.dbname,
            user=self.pg.user,
            password=self.pg.password,
            pool_mode="transaction",
            default_pool_size=self.default_pool_size,
            max_client_conn=self.max_client_conn,
            version=version,
        )

    def _start_on_a_free_port(self) -> None:
        """Pick a free port and start; another process may take it in between, so retry."""
        for _ in range(3):
            self.port = free_port()
            self._write_config()
            if self._launch():
                return
        raise RuntimeError(f"pgbouncer never got a free port:\n{self._log()}")

    def stop(self) -> None:
        """Stop PgBouncer (SIGTERM: immediate shutdown; SIGKILL if it lingers); delete its dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=_STOP_TIMEOUT_S)
        shutil.rmtree(self.base, ignore_errors=True)

    def _prepare(self) -> None:
        """Under root, hand the dir to the unprivileged system user PgBouncer will run as."""
        self.base.chmod(0o700)
        self._as_user = unprivileged(self.base, self._env)

    def _version(self) -> str:
        out = subprocess.run(
            [self.binary, "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
        return out.stdout.splitlines()[0].strip() if out.stdout else "PgBouncer (version unknown)"

    def _write_config(self) -> None:
        pg = self.pg
        self.auth_file.write_text(f"{_quoted(pg.user)} {_quoted(pg.password)}\n")
        self.auth_file.chmod(0o600)
        self.config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"{pg.dbname} = host={pg.host} port={pg.port} dbname={pg.dbname}",
                    "",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    f"logfile = {self.log}",
                    f"pidfile = {self.pidfile}",
                    # What Neon's pooled endpoint runs: a server connection per transaction.
                    "pool_mode = transaction",
                    f"max_client_conn = {self.max_client_conn}",
                    f"default_pool_size = {self.default_pool_size}",
                    "reserve_pool_size = 0",
                    "auth_type = scram-sha-256",
                    f"auth_file = {self.auth_file}",
                    # SHOW STATS/POOLS/CLIENTS for tests, without admin rights.
                    f"stats_users = {pg.user}",
                    # Fail a stuck test in a minute, and retry a failed server login after 1 s
                    # instead of 15 (tests terminate server backends on purpose).
                    "query_wait_timeout = 60",
                    "server_login_retry = 1",
                    "log_connections = 0",
                    "log_disconnections = 0",
                    "",
                ]
            )
        )
        if self._as_user:
            for path in (self.config, self.auth_file):
                os.chown(path, self._as_user["user"], self._as_user["group"])

    def _launch(self) -> bool:
        """Start the process and wait until a query answers; False when the port was taken."""
        self.log.unlink(missing_ok=True)
        proc = subprocess.Popen(  # foreground (no -d): we own the process and its exit
            [self.binary, str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.base,
            env=self._env,
            start_new_session=True,
            **self._as_user,
        )
        self._proc = proc
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                self._proc = None
                if "Address already in use" in self._log():
                    return False
                raise RuntimeError(f"pgbouncer exited with {proc.returncode}:\n{self._log()}")
            if self._answers():
                return True
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"pgbouncer did not answer in {_START_TIMEOUT_S}s:\n{self._log()}"
                )
            time.sleep(0.05)  # poll interval only; the loop waits on the conditions above

    def _answers(self) -> bool:
        """True once a query through PgBouncer reaches PostgreSQL and comes back."""
        try:
            conn = psycopg2.connect(
                host="127.0.0.1",
                port=self.port,
                user=self.pg.user,
                password=self.pg.password,
                dbname=self.pg.dbname,
                connect_timeout=2,
            )
        except psycopg2.OperationalError:
            return False
        with closing(conn), conn.cursor() as cur:
            cur.execute("SELECT 1")
            return bool(cur.fetchone())

    def _log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@contextlib.contextmanager
def pgbouncer_in_front_of(pg: PgTarget, binary: str, **options: int) -> Iterator[PgBouncer]:
    """Run a PgBouncer in front of ``pg`` for the duration of the block; always stopped."""
    server = PgBouncerServer(pg, binary, **options)
    bouncer = server.start()
    atexit.register(server.stop)  # safety net for exits that skip the finally below
    try:
        yield bouncer
    finally:
        server.stop()
        atexit.unregister(server.stop)
