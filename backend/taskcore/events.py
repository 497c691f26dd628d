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


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """An attempt failed with a transient error; the next one starts after ``wait`` seconds."""

    operation: str
    attempt: int
    wait: float
    error: str
    sqlstate: str | None


@dataclass(frozen=True, slots=True)
class GaveUp:
    """The retry policy (or the retry budget) stopped: the call raised DatabaseUnavailableError."""

    operation: str
    attempts: int
    elapsed: float
    reason: str  # "attempts", "deadline" or "budget"
    sqlstate: str | None


@dataclass(frozen=True, slots=True)
class BudgetExhausted:
    """This process spent its retry budget: calls now fail fast, probing now and then."""

    operation: str


@dataclass(frozen=True, slots=True)
class CommitResolved:
    """A lost COMMIT reply was resolved by asking the server: committed, aborted or unknown."""

    outcome: str


@dataclass(frozen=True, slots=True)
class StaleConnectionReplaced:
    """A pooled connection the server had closed was replaced at checkout (no round trip)."""


@dataclass(frozen=True, slots=True)
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

_lock = threading.Lock()
_subscribers: list[Callable[[Event], object]] = []
_counters: Counter[str] = Counter()


def subscribe(callback: Callable[[Event], object]) -> Callable[[], None]:
    """Call ``callback(event)`` for every event in this process; returns an unsubscribe function.

    Callbacks run synchronously in the thread that emits; keep them fast. An exception in a
    callback is logged (class name only) and never reaches taskcore's caller.
    """
    with _lock:
        _subscribers.append(callback)

    def unsubscribe() -> None:
        with _lock:
            if callback in _subscribers:
                _subscribers.remove(callback)

    return unsubscribe


def counters() -> dict[str, int]:
    """A snapshot of this process's counters (e.g. ``retries``, ``units_committed``)."""
    with _lock:
        return dict(_counters)


def reset_counters() -> None:
    """Zero the counters (for tests, or after exporting a snapshot)."""
    with _lock:
        _counters.clear()


def _counter_name(event: Event) -> str:
    if isinstance(event, RetryScheduled):
        return "retries"
    if isinstance(event, GaveUp):
        return f"gave_up_{event.reason}"
    if isinstance(event, BudgetExhausted):
        return "budget_exhausted"
    if isinstance(event, CommitResolved):
        return f"commits_resolved_{event.outcome}"
    if isinstance(event, StaleConnectionReplaced):
        return "stale_connections_replaced"
    return f"units_{event.outcome}"


def emit(event: Event) -> None:
    """Count ``event`` and hand it to every subscriber."""
    with _lock:
        _counters[_counter_name(event)] += 1
        subscribers = list(_subscribers)
    for callback in subscribers:
        try:
            callback(event)
        except Exception as exc:  # noqa: BLE001 - an observer must never break the observed
            _log.warning(
                "event subscriber failed (%s)",
                type(exc).__name__,
                extra={"taskcore_event": "subscriber_failed", "error": type(exc).__name__},
            )
