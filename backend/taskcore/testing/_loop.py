"""The relay thread's selector loop: accepts clients, connects upstream, moves bytes."""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
import time
from collections.abc import Callable

from taskcore.testing._faults import FaultPlan
from taskcore.testing._link import Link, rst_close

__all__ = ["Address", "Loop"]

Address = tuple[int, tuple[object, ...]]  # (family, sockaddr) from getaddrinfo


class Loop:
    """Everything the relay thread owns; no method may be called from another thread."""

    __slots__ = ("_links", "_listener", "_plan", "_sel", "_upstream", "_wake_r")

    def __init__(
        self,
        listener: socket.socket,
        wake_r: socket.socket,
        upstream: list[Address],
        plan: FaultPlan,
    ) -> None:
        self._listener = listener
        self._wake_r = wake_r
        self._upstream = upstream
        self._plan = plan
        self._links: set[Link] = set()
        self._sel = selectors.DefaultSelector()
        try:
            self._sel.register(listener, selectors.EVENT_READ)
            self._sel.register(wake_r, selectors.EVENT_READ)
        except BaseException:
            self._sel.close()
            raise

    def run(self, stopping: threading.Event, commands: Callable[[], None]) -> None:
        """Relay until ``stopping`` is set; run ``commands`` after every wake-up."""
        while not stopping.is_set():
            for key, mask in self._sel.select(self._next_timeout()):
                link: Link | None = key.data
                if link is None:
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._drain_wake()
                elif link.closed:
                    continue
                elif link.connecting:
                    self._finish_connect(link)
                elif mask & selectors.EVENT_READ:
                    link.receive(link.client if key.fileobj is link.client else link.server)
            commands()
            now = time.monotonic()
            for link in list(self._links):
                link.pump(now)
                link.update_interest()
                if link.closed:
                    self._links.discard(link)

    def close(self) -> None:
        """Reset every link and close the selector, listener and wake-up socket."""
        for link in list(self._links):
            link.close(abort=True)
        self._links.clear()
        self._sel.close()
        self._listener.close()
        self._wake_r.close()

    def reset_links(self) -> None:
        for link in list(self._links):
            link.cut()
        self._links.clear()

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake_r.recv(4096):
                pass

    def _next_timeout(self) -> float | None:
        due = min(
            (d for link in self._links if (d := link.next_due()) is not None),
            default=None,
        )
        return None if due is None else max(0.0, due - time.monotonic())

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError:
                # Out of descriptors or similar: leave the rest in the backlog for now.
                return
            client.setblocking(False)
            if self._plan.refuse_connection():
                rst_close(client)
                self._plan.fault_fired()
                continue
            self._plan.counters.add(connections=1)
            self._connect_upstream(Link(client, self._sel, self._plan), 0)

    def _connect_upstream(self, link: Link, index: int) -> None:
        """Start a non-blocking connect to the index-th upstream address, or give up."""
        while index < len(self._upstream):
            family, addr = self._upstream[index]
            server = socket.socket(family, socket.SOCK_STREAM)
            server.setblocking(False)
            err = server.connect_ex(addr)
            if err in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                link.attach(server, index)
                self._links.add(link)
                return
            server.close()
            index += 1
        # Upstream unreachable: the client sees what it would see without a proxy.
        self._links.discard(link)
        link.give_up()

    def _finish_connect(self, link: Link) -> None:
        err = link.server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            link.set_interest(link.server, 0)
            link.server.close()
            self._connect_upstream(link, link.addr_index + 1)
            return
        link.connected()
