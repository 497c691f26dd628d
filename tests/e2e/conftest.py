"""Fixtures of the end-to-end tests: the `todo` app in a private home (see _todo.py)."""

from __future__ import annotations

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
