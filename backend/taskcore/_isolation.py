"""Isolated handles for tests: every call inside one transaction that is rolled back."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from taskcore._deadline import Deadline
from taskcore._pool import Pooled, PoolStats
from taskcore.errors import PoolExhaustedError, TaskcoreError

if TYPE_CHECKING:
    from taskcore.database import Database

__all__ = ["isolated"]


@contextlib.contextmanager
def isolated(database: Database) -> Iterator[Database]:
    """A handle on ``database``'s connection, inside a transaction rolled back at the end.

    Units commit by releasing a savepoint and one-shots run in savepoints, so the code under
    test sees its own writes and leaves nothing behind. All calls share the one connection
    (calls from other threads wait their turn).
    """
    from taskcore.database import Database

    deadline = Deadline(database.settings.deadline)
    link = database._open_link(deadline)
    inner = Database._from_settings(database.settings)
    inner.is_isolated = True
    inner._pool = _Pinned(link.pooled)
    try:
        link.begin(isolation=None, read_only=False, deadline=deadline, savepoint=False)
        yield inner
    finally:
        with contextlib.suppress(TaskcoreError):
            link.rollback(Deadline(database.settings.deadline))
        link.close()


class _Pinned:
    """The one connection of an isolated handle, lent to one call at a time."""

    def __init__(self, pooled: Pooled) -> None:
        self._pooled = pooled
        self._lock = threading.RLock()

    def acquire(self, deadline: Deadline) -> Pooled:
        if not self._lock.acquire(timeout=deadline.remaining()):
            raise PoolExhaustedError("the isolated test connection stayed busy until the deadline")
        return self._pooled

    def release(self, pooled: Pooled, *, reuse: bool) -> None:
        self._lock.release()

    def stats(self) -> PoolStats:
        return PoolStats(1, 1, 0, 1, 0, 0, 0)

    def dispose(self) -> None:
        pass
