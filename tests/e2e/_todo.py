"""Run the `todo` console app as a user does: a new process per command, real files and env.

Every run gets an environment of its own: DATABASE_URL unset (unless a test sets it), the SQLite
file, HOME and XDG_DATA_HOME inside the test's tmp_path, and the working directory there too (so
no .env file of the developer's is picked up). What the app stored is checked with the sqlite3
module on an independent read-only connection, never through taskcore.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import sqlite3
import struct
import subprocess
import sys
import termios
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# Variables of the developer's shell that would change what the app does.
_SCRUBBED_PREFIXES = ("DATABASE_URL", "TASKCORE_", "TODO_", "XDG_", "COLUMNS", "LINES")
_TIMEOUT_S = 120


@dataclass(frozen=True)
class Run:
    """What one `todo` process did."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        """The non-empty stderr lines."""
        return [line for line in self.err.splitlines() if line.strip()]

    def __str__(self) -> str:
        """Everything, for assertion messages."""
        command = " ".join(self.args)
        return f"todo {command} -> {self.code}\n--stdout--\n{self.out}--stderr--\n{self.err}"


@dataclass(frozen=True)
class TodoApp:
    """Runs `python -m todo_app` with a private home and SQLite file; reads that file directly."""

    home: Path
    sqlite_path: Path
    env: Mapping[str, str]

    def command(self) -> list[str]:
        """The argv prefix that starts the app."""
        return [sys.executable, "-m", "todo_app"]

    def child_env(self, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """The child's environment: the base one with ``extra`` applied (None removes a name)."""
        env = dict(self.env)
        for name, value in (extra or {}).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def run(
        self,
        *args: str,
        env: Mapping[str, str | None] | None = None,
        stdout: int | IO[Any] | None = subprocess.PIPE,
    ) -> Run:
        """Run `todo ARGS...` to completion in a new process (stdout captured unless given)."""
        done = subprocess.run(
            [*self.command(), *args],
            cwd=self.home,
            env=self.child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            check=False,
            timeout=_TIMEOUT_S,
        )
        return Run(tuple(args), done.returncode, done.stdout or "", done.stderr)

    def json(self, *args: str, env: Mapping[str, str | None] | None = None) -> tuple[Run, Any]:
        """Run `todo ARGS... --json`; the run and its stdout parsed as one JSON document."""
        result = self.run(*args, "--json", env=env)
        try:
            document = json.loads(result.out)
        except ValueError:
            raise AssertionError(f"stdout is not one JSON document\n{result}") from None
        return result, document

    def run_on_terminal(self, *args: str, columns: int) -> Run:
        """Run `todo ARGS...` with stdout on a pseudo-terminal ``columns`` wide."""
        controller, terminal = pty.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        try:
            proc = subprocess.Popen(
                [*self.command(), *args],
                cwd=self.home,
                env=self.child_env(),
                stdin=subprocess.DEVNULL,
                stdout=terminal,
                stderr=subprocess.PIPE,
            )
            os.close(terminal)
            chunks = []
            while True:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: every writer of the terminal has closed it
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            _, err = proc.communicate(timeout=_TIMEOUT_S)
        finally:
            os.close(controller)
        out = b"".join(chunks).decode("utf-8").replace("\r\n", "\n")
        return Run(tuple(args), proc.returncode, out, err.decode("utf-8"))

    def ok(self, *args: str, env: Mapping[str, str | None] | None = None) -> Run:
        """Run `todo ARGS...` and insist that it succeeded quietly (nothing on stderr)."""
        result = self.run(*args, env=env)
        assert result.code == 0, str(result)
        assert result.err == "", str(result)
        return result

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Query the app's SQLite file on an independent read-only connection ([] if no file)."""
        if not self.sqlite_path.exists():
            return []
        uri = f"file:{self.sqlite_path}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
            has_table = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'tasks'"
            ).fetchone()[0]
            if not has_table:
                return []
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]


def base_env(home: Path) -> dict[str, str]:
    """The process environment minus anything that configures the app, with a private home."""
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(_SCRUBBED_PREFIXES)
    }
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        TASKCORE_SQLITE_PATH=str(home / "db" / "tasks.db"),
        PYTHONUTF8="1",  # argv and stdio in UTF-8 whatever the runner's locale is
        TZ="UTC",
    )
    return env


def added_id(result: Run) -> int:
    """The id in `todo add`'s output line ``added task <id> [ ] <title>``."""
    words = result.out.split()
    assert words[:2] == ["added", "task"], str(result)
    return int(words[2])


def assert_one_error_line(result: Run, code: int, *fragments: str) -> str:
    """The run failed with ``code`` and exactly one ``todo: error:`` line holding ``fragments``."""
    assert result.code == code, str(result)
    assert "Traceback" not in result.err, str(result)
    assert len(result.err_lines) == 1, str(result)
    line = result.err_lines[0]
    assert line.startswith("todo: error: "), str(result)
    for fragment in fragments:
        assert fragment in line, str(result)
    return line


# What todo gives taskcore at least when start-up used up the deadline (todo_app.cli).
_MIN_CALL_DEADLINE_S = 0.5


def time_bound(result: Run, deadline: float) -> float:
    """The longest a `todo -vv` run may take: its deadline + 1 s, start-up included.

    The deadline counts from the start of the process. Only when start-up alone (which -vv
    reports) left less than todo's minimum slice for taskcore, as on a machine at a load of
    10+ per core, does the bound move to that start-up + the slice + 1 s.
    """
    found = re.search(r"^todo: debug: start-up took ([0-9.]+) s", result.err, re.MULTILINE)
    assert found is not None, f"no start-up time reported (run with -vv)\n{result}"
    return max(deadline, float(found.group(1)) + _MIN_CALL_DEADLINE_S) + 1.0


def assert_one_error_among_logs(result: Run, code: int) -> str:
    """Exit ``code``; one ``todo: error:`` line, the other lines being -v/-vv log lines."""
    assert result.code == code, str(result)
    assert "Traceback" not in result.err, str(result)
    errors = [line for line in result.err_lines if line.startswith("todo: error: ")]
    assert len(errors) == 1, str(result)
    logs = ("todo: debug: ", "todo: info: ", "todo: warning: ", "todo: error: ")
    assert all(line.startswith(logs) for line in result.err_lines), str(result)
    return errors[0]
