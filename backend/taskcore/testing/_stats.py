"""FlakyProxy's counters: the public snapshot type and the thread-safe running totals."""

from __future__ import annotations

import dataclasses
import threading

__all__ = ["Counters", "ProxyStats"]


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyStats:
    """Snapshot of a FlakyProxy's counters since start() or the last reset_stats()."""

    connections: int = 0
    """Client connections accepted and forwarded (refused ones count as faults)."""
    round_trips: int = 0
    """Client 'Q' (simple query) and 'S' (Sync) messages after authentication."""
    statements: int = 0
    """Client 'Q' messages after authentication (one per message, whatever its text)."""
    commits: int = 0
    """Statements whose text starts with COMMIT or END."""
    bytes_up: int = 0
    """Bytes delivered to the server."""
    bytes_down: int = 0
    """Bytes delivered to the clients."""
    faults: int = 0
    """Faults fired: links cut or reset, connections refused."""


def _zeros() -> dict[str, int]:
    return dict.fromkeys((f.name for f in dataclasses.fields(ProxyStats)), 0)


class Counters:
    """Running totals with exactly ProxyStats' fields, updated by the relay thread."""

    __slots__ = ("_lock", "_values")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = _zeros()

    def add(self, **deltas: int) -> None:
        """Add to several counters at once, so a snapshot never sees half of an update."""
        with self._lock:
            for name, delta in deltas.items():
                self._values[name] += delta

    def get(self, name: str) -> int:
        with self._lock:
            return self._values[name]

    def snapshot(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(**self._values)

    def reset(self) -> None:
        with self._lock:
            self._values = _zeros()
