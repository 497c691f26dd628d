"""FlakyProxy's relay thread as other threads see it: start, stop, and commands run on it."""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Final

from taskcore.testing._faults import FaultPlan
from taskcore.testing._loop import Address, Loop

__all__ = ["Relay"]

_JOIN_TIMEOUT: Final = 10.0
_COMMAND_TIMEOUT: Final = 10.0


def _bind(host: str, port: int) -> socket.socket:
    family, _, _, _, bind_addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets a fixed listen port be reused right after a previous proxy stopped.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(bind_addr)
        listener.listen(128)
        listener.setblocking(False)
    except BaseException:
        listener.close()
        raise
    return listener


class Relay:
    """One background thread relaying every link; started once, stopped idempotently.

    Sockets belong to the thread: other threads reach them only through commands. The
    thread never prints an exception: if it fails, ``stop()`` and commands raise.
    """

    def __init__(self, upstream: tuple[str, int], listen: tuple[str, int], plan: FaultPlan) -> None:
        self._upstream_at = upstream
        self._listen_at = listen
        self._plan = plan
        # Guarded by _lock.
        self._lock = threading.Lock()
        self._state = "new"
        self._thread: threading.Thread | None = None
        self._wake_w: socket.socket | None = None
        self._commands: collections.deque[tuple[Callable[[Loop], None], threading.Event]] = (
            collections.deque()
        )
        self.address: tuple[str, int] | None = None
        # Written by the relay thread, read once it is gone.
        self._stopping = threading.Event()
        self._crash: BaseException | None = None

    def start(self) -> None:
        with self._lock:
            if self._state != "new":
                raise RuntimeError("a FlakyProxy can be started only once")
            self._state = "starting"
        listener: socket.socket | None = None
        wake_r: socket.socket | None = None
        wake_w: socket.socket | None = None
        loop: Loop | None = None
        try:
            upstream: list[Address] = [
                (family, tuple(addr))
                for family, _, _, _, addr in socket.getaddrinfo(
                    *self._upstream_at, type=socket.SOCK_STREAM
                )
            ]
            listener = _bind(*self._listen_at)
            wake_r, wake_w = socket.socketpair()
            wake_r.setblocking(False)
            wake_w.setblocking(False)
            loop = Loop(listener, wake_r, upstream, self._plan)
            host, port = listener.getsockname()[:2]
            thread = threading.Thread(
                target=self._run, args=(loop,), name=f"FlakyProxy-{port}", daemon=True
            )
            thread.start()
        except BaseException:
            if loop is not None:
                loop.close()
            for closable in (listener, wake_r, wake_w):
                if closable is not None:
                    closable.close()
            with self._lock:
                self._state = "stopped"
            raise
        with self._lock:
            self._thread = thread
            self._wake_w = wake_w
            self.address = (str(host), int(port))
            self._state = "running"

    def stop(self) -> None:
        with self._lock:
            if self._state in ("new", "stopped"):
                return
            thread = self._thread
            self._state = "stopping"
        self._stopping.set()
        self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError("FlakyProxy thread did not stop")
        with self._lock:
            if self._wake_w is not None:
                self._wake_w.close()
                self._wake_w = None
            self._state = "stopped"
            crash, self._crash = self._crash, None
        if crash is not None:
            raise RuntimeError("FlakyProxy relay thread failed") from crash

    def call(self, fn: Callable[[Loop], None]) -> None:
        """Run ``fn`` on the relay thread and wait for it; a no-op unless running."""
        with self._lock:
            thread = self._thread if self._state == "running" else None
            if thread is None:
                return
            done = threading.Event()
            self._commands.append((fn, done))
        self._wake()
        deadline = time.monotonic() + _COMMAND_TIMEOUT
        while not done.wait(0.05):
            if not thread.is_alive() or time.monotonic() > deadline:
                break
        crash = self._crash
        if crash is not None:
            raise RuntimeError("FlakyProxy relay thread failed") from crash
        if not done.is_set():
            raise RuntimeError("FlakyProxy relay thread did not answer")

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w is None:
                return
            # A full buffer already guarantees a pending wake-up.
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def _run(self, loop: Loop) -> None:
        try:
            loop.run(self._stopping, lambda: self._run_commands(loop))
        except BaseException as exc:  # noqa: BLE001 - a thread must never print; stop() re-raises
            self._crash = exc
        finally:
            loop.close()
            with self._lock:
                pending = list(self._commands)
                self._commands.clear()
            for _, done in pending:
                done.set()

    def _run_commands(self, loop: Loop) -> None:
        while True:
            with self._lock:
                if not self._commands:
                    return
                fn, done = self._commands.popleft()
            try:
                fn(loop)
            finally:
                done.set()
