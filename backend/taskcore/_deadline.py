"""One deadline per public call, and the psycopg2 wait callback that makes socket I/O honour it.

psycopg2 normally blocks inside libpq with no timeout: on a silent partition a call waits for
the kernel to give up (minutes). With a wait callback installed (psycopg2's "green" mode, the
hook gevent and eventlet use), every connect and query is sent asynchronously and psycopg2
calls us to wait for the socket: we wait at most until the calling thread's deadline. Raising
from the callback makes psycopg2 close that connection (``green_panic`` in psycopg2's green.c),
so a hung attempt is abandoned and never returns to a pool. Reasons and the effect on other
psycopg2 users of the process: specs/003-db-persistence-layer/research.md ("Deadlines").
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2.extensions

__all__ = ["Deadline", "DeadlineExpired", "bounded", "current", "install_wait_callback"]

_log = logging.getLogger("taskcore")
Clock = Callable[[], float]


class DeadlineExpired(Exception):  # noqa: N818 - internal signal, translated before it leaves
    """A socket wait ran past the call's deadline; the connection has been abandoned."""


class Deadline:
    """A point in time (on ``clock``) by which a public call must return."""

    __slots__ = ("at", "clock", "seconds")

    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.at = clock() + seconds

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.at - self.clock())

    def elapsed(self) -> float:
        """Seconds since the deadline was set (the call's own duration so far)."""
        return self.clock() - (self.at - self.seconds)

    @property
    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self.clock() >= self.at

    def sooner(self, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now, or this one if that is earlier."""
        if seconds >= self.remaining():
            return self
        return Deadline(seconds, self.clock)

    def __repr__(self) -> str:
        return f"<Deadline {self.remaining():.3f}s left of {self.seconds:g}s>"


_local = threading.local()


def current() -> Deadline | None:
    """The deadline the calling thread's socket waits honour, if any."""
    deadline: Deadline | None = getattr(_local, "deadline", None)
    return deadline


@contextlib.contextmanager
def bounded(deadline: Deadline) -> Iterator[None]:
    """Make this thread's database socket waits end at ``deadline`` (nesting restores)."""
    previous = current()
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


_READ = select.POLLIN | select.POLLERR | select.POLLHUP
_WRITE = select.POLLOUT | select.POLLERR | select.POLLHUP
#: Longest single wait: an interrupt (Ctrl-C, a signal handler's exception) is seen this often.
_SLICE = 0.25


def wait(conn: Any) -> None:
    """psycopg2 wait callback: poll the connection, waiting no longer than the deadline.

    Without a deadline (psycopg2 used outside taskcore in the same process) it behaves like
    blocking libpq: it waits as long as the query runs, and a connect honours its DSN's
    ``connect_timeout`` ("timeout expired"), which libpq itself does not enforce once a wait
    callback is installed. On an interrupt (KeyboardInterrupt, or SystemExit from a SIGTERM handler)
    it asks the server to cancel the running query, then lets the interrupt through; psycopg2
    closes the connection, and an uncommitted transaction is rolled back by the server.
    """
    deadline: Deadline | None = _local.__dict__.get("deadline")
    libpq_timeout = False
    if deadline is None and conn.status == psycopg2.extensions.STATUS_SETUP:
        deadline = _connect_timeout(conn.dsn)
        libpq_timeout = deadline is not None
    try:
        while True:
            state = conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            events = _READ if state == psycopg2.extensions.POLL_READ else _WRITE
            poller = select.poll()
            poller.register(conn.fileno(), events)
            while True:
                slice_ = _SLICE
                if deadline is not None:
                    left = deadline.at - deadline.clock()
                    if left <= 0:
                        raise DeadlineExpired  # noqa: TRY301 - psycopg2 closes the connection
                    slice_ = min(slice_, left)
                if poller.poll(slice_ * 1000):
                    break
    except DeadlineExpired:
        if not libpq_timeout:
            raise
    except BaseException:
        _cancel_quickly(conn)
        raise
    raise psycopg2.OperationalError("timeout expired")


_CONNECT_TIMEOUT = re.compile(r"(?:^|\s)connect_timeout=(\d+)(?:\s|$)")


def _connect_timeout(dsn: str | None) -> Deadline | None:
    """libpq's connect_timeout of a DSN (at least 2 s, as libpq rounds it), if any."""
    match = _CONNECT_TIMEOUT.search(dsn or "")
    if match is None or int(match.group(1)) <= 0:
        return None
    return Deadline(max(2, int(match.group(1))))


def _cancel_quickly(conn: Any) -> None:
    """Send a cancel request, waiting at most 0.5 s (it opens its own connection)."""

    def cancel() -> None:
        with contextlib.suppress(Exception):
            conn.cancel()

    thread = threading.Thread(target=cancel, name="taskcore-cancel", daemon=True)
    thread.start()
    thread.join(0.5)


_install_lock = threading.Lock()
_warned = False  # the "another callback" warning is logged once per process


def install_wait_callback() -> bool:
    """Install :func:`wait` as psycopg2's wait callback unless another one is installed.

    Returns False (and logs once) when a different callback (gevent's, say) is in place: then
    deadlines on blocking socket waits rely on the kernel (tcp_user_timeout, keepalives) only.
    """
    global _warned  # noqa: PLW0603 - once per process, under _install_lock
    with _install_lock:
        installed = psycopg2.extensions.get_wait_callback()
        if installed is wait:
            return True
        if installed is not None:
            if not _warned:
                _log.warning(
                    "another psycopg2 wait callback is installed; taskcore's deadlines then "
                    "bound socket waits only through TCP timeouts",
                    extra={"taskcore_event": "wait_callback_in_use"},
                )
                _warned = True
            return False
        psycopg2.extensions.set_wait_callback(wait)
        return True
