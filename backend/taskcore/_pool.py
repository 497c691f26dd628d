"""A small fair connection pool: first come first served, waits bounded by the call's deadline.

Why not SQLAlchemy's QueuePool: a checkout/check-in pair costs ~14 us there against ~1 us here
(benchmarks.md), a thread that just returned a connection can take it again ahead of threads
already waiting, and overflow connections are closed on every check-in (a new TLS session and
authentication per burst on Neon). Here a returned connection goes straight to the oldest
waiter; connections stay open until idle for ``idle_timeout``; the pool never exceeds ``size``.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from taskcore._deadline import Deadline
from taskcore.errors import PoolExhaustedError

__all__ = ["ConnectionSource", "Pool", "PoolStats", "Pooled", "process_id"]

#: This process's id, kept current in a forked child by the at-fork hook at the end of this
#: module (``os.getpid()`` is a system call; the hot path asks several times per call).
process_id = os.getpid()


class Pooled:
    """A pooled DBAPI connection and its bookkeeping."""

    __slots__ = ("born", "cursor", "dbapi", "link", "pid", "poller", "used")

    def __init__(self, dbapi: Any, now: float) -> None:
        self.dbapi = dbapi
        self.born = now
        self.used = now
        self.pid = process_id
        #: Reused by every call on this connection (a psycopg2 cursor costs ~3 us to make).
        self.cursor: Any = None
        #: Watches the idle socket for the server closing it (made once, polled at checkout).
        self.poller: Any = None
        #: The taskcore Link lent with this connection (made once; one borrower at a time).
        self.link: Any = None


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Counts since the pool was made: ``opened`` is server sessions started (each a handshake)."""

    size: int
    open: int
    idle: int
    in_use: int
    waiting: int
    opened: int
    discarded: int


class ConnectionSource(Protocol):
    """Where a Link gets its connection: the Pool, or an isolated handle's one connection."""

    def acquire(self, deadline: Deadline) -> Pooled:
        """A live connection before ``deadline``."""
        ...

    def release(self, pooled: Pooled, *, reuse: bool) -> None:
        """Take the connection back (closing it unless ``reuse``)."""
        ...

    def stats(self) -> PoolStats:
        """Counters."""
        ...

    def dispose(self) -> None:
        """Close idle connections."""
        ...


class _Waiter:
    """A thread in line for a connection: it sleeps on ``ready`` (a plain lock, held until the
    hand-off releases it), which is cheaper than a ``threading.Event`` (a Condition and a
    second lock) when hundreds of threads queue."""

    __slots__ = ("handed", "ready")

    def __init__(self) -> None:
        self.ready = threading.Lock()
        self.ready.acquire()
        self.handed: Pooled | bool | None = (
            False  # a connection, None = "open one", False = not yet
        )


_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


class Pool:
    """At most ``size`` connections made by ``connect(deadline)``; fork-safe."""

    def __init__(
        self,
        connect: Callable[[Deadline], Any],
        *,
        size: int,
        idle_timeout: float,
        recycle: float,
        on_stale: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._on_stale = on_stale
        self.size = size
        self._idle_timeout = idle_timeout
        self._recycle = recycle
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: collections.deque[Pooled] = collections.deque()  # right end = most recent
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._open = 0
        self._opened = 0
        self._discarded = 0
        self._pid = process_id
        _pools.add(self)

    def acquire(self, deadline: Deadline) -> Pooled:
        """A live connection, waiting in line (FIFO) no longer than ``deadline``."""
        while True:
            with self._lock:  # the common case, inline: someone's idle connection, nobody waits
                idle = self._idle
                if idle and not self._waiters and self._pid == process_id:
                    pooled = (
                        idle.pop() if idle[0].used >= self._clock() - self._idle_timeout else None
                    )
                else:
                    pooled = None
            if pooled is None:
                pooled = self._take(deadline)
                if pooled is None:
                    return self._open_new(deadline)
            # Usable: not too old, and not closed by the server while idle, seen locally with no
            # round trip. An idle connection has nothing to read: when Neon suspends a compute
            # (or the server restarts) the server sends FATAL 57P01 and closes the socket,
            # which makes it readable; it is replaced before any statement was sent.
            if self._clock() - pooled.born <= self._recycle:
                poller, dbapi = pooled.poller, pooled.dbapi
                if poller is None and not hasattr(dbapi, "poll"):
                    closed = _closed(dbapi)  # sqlite3: no socket to watch
                else:
                    closed = bool(dbapi.closed or (poller or _watch(pooled)).poll(0))
                if not closed:
                    return pooled
                self._on_stale()
            self.release(pooled, reuse=False)

    def _take(self, deadline: Deadline) -> Pooled | None:
        """An idle connection, or None meaning "a slot is reserved: open one"."""
        with self._lock:
            if self._pid != process_id:
                self._forget_if_forked()
            if not self._waiters:
                idle = self._idle
                if idle and idle[0].used < self._clock() - self._idle_timeout:
                    self._close_idle_expired()
                if idle:
                    return idle.pop()
                if self._open < self.size:
                    self._open += 1
                    return None
            waiter = _Waiter()
            self._waiters.append(waiter)
        try:
            waiter.ready.acquire(timeout=deadline.remaining())
        except BaseException:
            # Interrupted (Ctrl-C, a signal handler's SystemExit): leave the line, and pass on
            # what was handed meanwhile, or that connection (or slot) would be lost for good.
            self._leave(waiter)
            raise
        with self._lock:
            handed = waiter.handed
            if handed is False:
                self._waiters.remove(waiter)
        if handed is False:
            raise PoolExhaustedError(
                f"no pooled connection became free within the call's deadline "
                f"({deadline.seconds:g}s; pool size {self.size}): the pool is exhausted"
            )
        return handed if isinstance(handed, Pooled) else None

    def _leave(self, waiter: _Waiter) -> None:
        """Take an interrupted waiter out of the line, giving back what it was handed."""
        with self._lock:
            handed = waiter.handed
            if handed is False:
                self._waiters.remove(waiter)
                return
        self._give_back(handed if isinstance(handed, Pooled) else None)

    def _open_new(self, deadline: Deadline) -> Pooled:
        try:
            dbapi = self._connect(deadline)
        except BaseException:
            self._give_back(None)
            raise
        with self._lock:
            self._opened += 1
        return Pooled(dbapi, self._clock())

    def release(self, pooled: Pooled, *, reuse: bool) -> None:
        """Return ``pooled``; ``reuse=False`` closes it (broken, abandoned or in a bad state)."""
        if pooled.pid != process_id:
            _orphan(pooled.dbapi)  # checked out before a fork: the parent still owns it
            return
        if reuse and not _closed(pooled.dbapi):
            pooled.used = self._clock()
            with self._lock:
                if not self._waiters:
                    self._idle.append(pooled)
                    return
            self._give_back(pooled)
            return
        with contextlib.suppress(Exception):
            pooled.dbapi.close()
        with self._lock:
            self._discarded += 1
        self._give_back(None)

    def _give_back(self, pooled: Pooled | None) -> None:
        """Hand ``pooled`` (or, if None, the right to open one) to the oldest waiter."""
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.handed = pooled
                waiter.ready.release()
                return
            if pooled is None:
                self._open -= 1
            else:
                self._idle.append(pooled)

    def _close_idle_expired(self) -> None:
        # Called with the lock held. The left end is the least recently used.
        horizon = self._clock() - self._idle_timeout
        while self._idle and self._idle[0].used < horizon:
            pooled = self._idle.popleft()
            self._open -= 1
            self._discarded += 1
            with contextlib.suppress(Exception):
                pooled.dbapi.close()

    def stats(self) -> PoolStats:
        """A snapshot of the pool's counters."""
        with self._lock:
            idle = len(self._idle)
            return PoolStats(
                self.size,
                self._open,
                idle,
                self._open - idle,
                len(self._waiters),
                self._opened,
                self._discarded,
            )

    def dispose(self) -> None:
        """Close idle connections; connections in use are closed when they come back."""
        with self._lock:
            self._forget_if_forked()
            idle, self._idle = self._idle, collections.deque()
            self._open -= len(idle)
        for pooled in idle:
            with contextlib.suppress(Exception):
                pooled.dbapi.close()

    def _forget_if_forked(self) -> None:
        # A connection must never cross a fork: two processes on one socket garble the protocol.
        # The child lets go of the parent's connections without a word to the server.
        if self._pid == os.getpid():
            return
        for pooled in self._idle:
            _orphan(pooled.dbapi)
        self._idle.clear()
        self._waiters.clear()
        self._open = 0
        self._pid = os.getpid()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._forget_if_forked()


def _closed(dbapi: Any) -> bool:
    closed = getattr(dbapi, "closed", False)  # psycopg2: 0 open, 1 closed, 2 broken
    return bool(closed) and not callable(closed)


def _watch(pooled: Pooled) -> Any:
    """The poller that sees the server close ``pooled``'s idle socket (made once)."""
    poller = pooled.poller = select.poll()
    poller.register(pooled.dbapi.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return poller


_orphans: list[Any] = []


def _orphan(dbapi: Any) -> None:
    """Make an inherited connection harmless: its socket now points at /dev/null.

    Closing it (or letting it be garbage collected) would send the server a Terminate message
    on the parent's socket and end the parent's session; writing to /dev/null does nothing.
    """
    fileno = getattr(dbapi, "fileno", None)
    if fileno is not None and hasattr(dbapi, "poll"):
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, fileno())
            os.close(devnull)
    _orphans.append(dbapi)


def _after_fork_in_child() -> None:
    global process_id  # noqa: PLW0603 - the one writer, in the child right after fork
    process_id = os.getpid()
    for pool in list(_pools):
        pool._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
