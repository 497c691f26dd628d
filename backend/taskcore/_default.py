"""The default handle: what module-level calls and ``UnitOfWork()`` use, built on first use."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from taskcore.config import Settings
from taskcore.database import Database

__all__ = ["configure", "default_database", "dispose", "set_default_database", "use_database"]

_default_lock = threading.Lock()
_default: Database | None = None
_routed: list[Database] = []


def default_database() -> Database:
    """The handle module-level calls use: built on first use from DATABASE_URL / .env."""
    global _default  # noqa: PLW0603 - the one process-wide default, built lazily
    if _routed:
        return _routed[-1]
    database = _default
    if database is None:
        with _default_lock:
            if _default is None:
                _default = Database.from_environment()
            database = _default
    return database


def configure(**overrides: Any) -> Settings:
    """Replace the default handle's settings (keyword overrides win over the environment).

    Validates at once and disposes the current default handle's pool; the next call builds a
    new one. With no arguments it re-reads the environment.
    """
    global _default
    database = Database.from_environment(**overrides)
    with _default_lock:
        old, _default = _default, database
    if old is not None:
        old.dispose()
    return database.settings


def set_default_database(database: Database) -> None:
    """Make ``database`` the default handle (module-level calls and ``UnitOfWork()`` use it)."""
    global _default
    with _default_lock:
        old, _default = _default, database
    if old is not None and old is not database:
        old.dispose()


@contextlib.contextmanager
def use_database(database: Database) -> Iterator[Database]:
    """Route every default-handle call to ``database`` while the block runs (process-wide)."""
    _routed.append(database)
    try:
        yield database
    finally:
        _routed.remove(database)


def dispose() -> None:
    """Close the default handle's pooled connections (it stays usable)."""
    database = _routed[-1] if _routed else _default
    if database is not None:
        database.dispose()
