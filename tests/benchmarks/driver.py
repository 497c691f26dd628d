"""psycopg2's wait callback: taskcore installs one process-wide; the baselines run without it.

taskcore bounds every socket wait by the call's deadline through psycopg2's wait callback
(``psycopg2.extensions.set_wait_callback``): every query is then sent asynchronously and
waited for in Python. The callback is global to the process, so raw psycopg2 and the SQLModel
tutorial, measured in the same process, would pay for it too; a program that does not use
taskcore does not. The baselines therefore run inside :func:`no_wait_callback` (the driver's
floor); ``raw_wait_callback`` in the results is raw psycopg2 *with* the callback, which shows
what the callback itself costs per call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg2.extensions

__all__ = ["no_wait_callback", "wait_callback_name"]


@contextlib.contextmanager
def no_wait_callback() -> Iterator[None]:
    """Blocking libpq calls while the block runs (single-threaded use only); then restore."""
    installed = psycopg2.extensions.get_wait_callback()
    if installed is None:
        yield
        return
    psycopg2.extensions.set_wait_callback(None)
    try:
        yield
    finally:
        psycopg2.extensions.set_wait_callback(installed)


def wait_callback_name() -> str | None:
    """The installed callback's qualified name (for the results), or None."""
    installed = psycopg2.extensions.get_wait_callback()
    if installed is None:
        return None
    return f"{getattr(installed, '__module__', '?')}.{getattr(installed, '__qualname__', '?')}"
