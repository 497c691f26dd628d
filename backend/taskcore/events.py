"""Observability without dependencies: typed events, subscribers, and in-process counters.

Every event holds names, codes and numbers only (operation names, SQLSTATEs, error class
names, durations): never a URL, SQL text or task contents, so it is safe to export anywhere.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "BudgetExhausted",
    "CommitResolved",
    "Event",
    "EventHub",
    "GaveUp",
    "RetryScheduled",
    "StaleConnectionReplaced",
    "UnitFinished",
    "counters",
    "emit",
    "reset_counters",
    "subscribe",
]

_log = logging.getLogger("taskcore")


@dataclass(slots=True)
class RetryScheduled:
    """An attempt failed with a transient error; the next one starts after ``wait`` seconds."""

    operation: str
    attempt: int
    wait: float
    error: str
    sqlstate: str | None


@dataclass(slots=True)
class GaveUp:
    """The retry policy (or the retry budget) stopped: the call raised DatabaseUnavailableError."""

    operation: str
    attempts: int
    elapsed: float
    reason: str  # "attempts", "deadline" or "budget"
    sqlstate: str | None


@dataclass(slots=True)
class BudgetExhausted:
    """This process spent its retry budget: calls now fail fast, probing now and then."""

    operation: str


@dataclass(slots=True)
class CommitResolved:
    """A lost COMMIT reply was resolved by asking the server: committed, aborted or unknown."""

    outcome: str


@dataclass(slots=True)
class StaleConnectionReplaced:
    """A pooled connection the server had closed was replaced at checkout (no round trip)."""


@dataclass(slots=True)
class UnitFinished:
    """A unit of work ended: ``outcome`` is committed, rolled_back or failed."""

    operation: str
    outcome: str
    duration: float
    attempt: int
    read_only: bool


Event = (
    RetryScheduled
    | GaveUp
    | BudgetExhausted
    | CommitResolved
    | StaleConnectionReplaced
    | (UnitFinished)
)


_FIXED_NAMES: dict[type, str] = {
    RetryScheduled: "retries",
    BudgetExhausted: "budget_exhausted",
    StaleConnectionReplaced: "stale_connections_replaced",
}


def _counter_name(event: Event) -> str:
    name = _FIXED_NAMES.get(type(event))
    if name is not None:
        return name
    if isinstance(event, UnitFinished):
        return "units_" + event.outcome
    if isinstance(event, GaveUp):
        return "gave_up_" + event.reason
    if isinstance(event, CommitResolved):
        return "commits_resolved_" + event.outcome
    raise TypeError(f"not a taskcore event: {type(event).__name__}")


class EventHub:
    """Subscribers and counters; a handle's hub also forwards to the process-wide one."""

    def __init__(self, parent: EventHub | None = None) -> None:
        self._parent = parent
        #: This hub and its parents, nearest first.
        self._chain: tuple[EventHub, ...] = (self, *(parent._chain if parent else ()))
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[Event], object]] = []
        self._counters: Counter[str] = Counter()

    def subscribe(self, callback: Callable[[Event], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event here; returns an unsubscribe function.

        Callbacks run synchronously in the thread that emits; keep them fast. An exception in
        a callback is logged (class name only) and never reaches taskcore's caller.
        """
        with self._lock:  # copy on write: emit reads the list without copying it
            self._subscribers = [*self._subscribers, callback]

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers = [c for c in self._subscribers if c is not callback]

        return unsubscribe

    def counters(self) -> dict[str, int]:
        """A snapshot of the counters (e.g. ``retries``, ``units_committed``)."""
        with self._lock:
            return dict(self._counters)

    def reset_counters(self) -> None:
        """Zero the counters (for tests, or after exporting a snapshot)."""
        with self._lock:
            self._counters.clear()

    def counted(self, name: str) -> bool:
        """Count ``name`` (here and in the parents) and return True, if nobody subscribes.

        If someone does, count nothing and return False: the caller then builds the event and
        emits it (which counts it). The hot path's one call for "an event happened".
        """
        chain = self._chain
        for hub in chain:
            if hub._subscribers:
                return False
        for hub in chain:
            with hub._lock:
                hub._counters[name] += 1
        return True

    def emit(self, event: Event) -> None:
        """Count ``event``, hand it to every subscriber, then to the parent hub."""
        name = _counter_name(event)
        hub: EventHub | None = self
        while hub is not None:
            with hub._lock:
                hub._counters[name] += 1
                subscribers = hub._subscribers
            if subscribers:
                _notify(subscribers, event)
            hub = hub._parent


def _notify(subscribers: list[Callable[[Event], object]], event: Event) -> None:
    """Call each subscriber; a failing one is logged by class name and skipped."""
    for callback in subscribers:
        try:
            callback(event)
        except Exception as exc:  # noqa: BLE001 - an observer must never break the observed
            _log.warning(
                "event subscriber failed (%s)",
                type(exc).__name__,
                extra={"taskcore_event": "subscriber_failed", "error": type(exc).__name__},
            )


#: Every handle's events, for process-wide observers.
process = EventHub()


def subscribe(callback: Callable[[Event], object]) -> Callable[[], None]:
    """Call ``callback(event)`` for every event of every handle in this process.

    Returns an unsubscribe function. A handle's own events: ``Database.subscribe``.
    """
    return process.subscribe(callback)


def counters() -> dict[str, int]:
    """A snapshot of this process's counters, all handles together."""
    return process.counters()


def reset_counters() -> None:
    """Zero the process-wide counters."""
    process.reset_counters()


def emit(event: Event) -> None:
    """Count ``event`` process-wide and hand it to process-wide subscribers."""
    process.emit(event)
