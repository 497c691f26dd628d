"""Fixtures of the end-to-end tests: the `todo` app in a private home (see _todo.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from _todo import TodoApp, base_env


@pytest.fixture
def todo(tmp_path: Path) -> TodoApp:
    """The console app with DATABASE_URL unset and its SQLite file inside tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    env = base_env(home)
    return TodoApp(home=home, sqlite_path=Path(env["TASKCORE_SQLITE_PATH"]), env=env)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local TCP port nothing listens on (bound but not listening, so connects are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A local TCP port whose server accepts connections and never sends a byte (a hung host).

    The kernel completes each handshake into the listen backlog; nothing ever reads what the
    client sends or answers it, so a client waits until its own timeout or deadline.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]
