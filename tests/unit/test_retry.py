"""Retry policy: floored, capped, jittered waits; only transient errors retried; bounded."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

import taskcore
import taskcore.testing
from _clock import FakeClock
from taskcore._deadline import Deadline
from taskcore.retry import RetryPolicy, call_with_retries


def _deadline(seconds: float = 30.0) -> Deadline:
    """A deadline on a fake clock that never moves unless a test moves it: it never expires."""
    return Deadline(seconds, FakeClock())


def test_waits_have_a_floor_grow_and_are_capped() -> None:
    """Each wait is at least the exponential base, at most base + jitter, capped at wait_max."""
    policy = RetryPolicy(wait_initial=0.1, wait_max=2.0, wait_jitter=0.5)
    for attempt, base in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (6, 2.0), (20, 2.0)]:
        waits = [policy.wait(attempt, None) for _ in range(200)]
        assert min(waits) >= base
        assert max(waits) <= base + 0.5
        assert len(set(waits)) > 1  # jittered


def test_backpressure_waits_longer() -> None:
    """Rate limits and full servers back off at least 1 s, four times the normal base."""
    error = taskcore.TransientError("busy")
    error.backpressure = True
    policy = RetryPolicy(wait_initial=0.1, wait_jitter=0.0)
    assert policy.wait(1, error) == 1.0
    assert policy.wait(5, error) == pytest.approx(6.4)


def test_transient_errors_are_retried_until_success(
    caplog: pytest.LogCaptureFixture, taskcore_events: Callable[[str], list[logging.LogRecord]]
) -> None:
    """A transient failure is retried, logged with attempt and wait, and the result returned."""
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise taskcore.TransientError("link dropped", sqlstate="57P01")
        return "done"

    with taskcore.testing.no_retry_waits(), caplog.at_level(logging.WARNING, "taskcore"):
        assert call_with_retries("op", flaky, RetryPolicy(attempts=5), _deadline()) == "done"
    retries = taskcore_events("retry_scheduled")
    assert [r.attempt for r in retries] == [1, 2]  # type: ignore[attr-defined]
    assert all(r.sqlstate == "57P01" for r in retries)  # type: ignore[attr-defined]


def test_permanent_errors_are_never_retried() -> None:
    """A permanent error propagates after exactly one attempt."""
    calls = []

    def broken() -> None:
        calls.append(1)
        raise taskcore.ConnectionRejectedError("authentication failed")

    with pytest.raises(taskcore.ConnectionRejectedError):
        call_with_retries("op", broken, RetryPolicy(attempts=5), _deadline())
    assert len(calls) == 1


def test_giving_up_says_database_unavailable_with_attempts() -> None:
    """Exhausted transient failures become DatabaseUnavailableError with attempts and time."""

    def down() -> None:
        raise taskcore.TransientError("refused")

    with (
        taskcore.testing.no_retry_waits(),
        pytest.raises(taskcore.DatabaseUnavailableError) as info,
    ):
        call_with_retries("op", down, RetryPolicy(attempts=4), _deadline())
    assert info.value.attempts == 4
    assert info.value.elapsed == 0.0  # waits switched off and the clock never moved
    assert info.value.__context__ is None


def test_deadline_stops_before_a_wait_would_cross_it() -> None:
    """No attempt starts after the deadline: the loop stops before a wait would cross it."""
    clock = FakeClock()

    def down() -> None:
        clock.now += 0.01  # each attempt takes 10 ms
        raise taskcore.TransientError("refused")

    policy = RetryPolicy(attempts=100, wait_initial=0.2, wait_max=0.2, wait_jitter=0)
    with pytest.raises(taskcore.DatabaseUnavailableError) as info:
        call_with_retries("op", down, policy, Deadline(0.5, clock), sleep=clock.sleep)
    # 10 ms + 200 ms + 10 ms + 200 ms + 10 ms = 430 ms; another 200 ms wait would pass 500 ms.
    assert info.value.attempts == 3
    assert info.value.reason == "deadline"
    assert clock.slept == [0.2, 0.2]
    assert info.value.elapsed == pytest.approx(0.43)


def test_conflicts_exhausted_stay_conflicts() -> None:
    """Serialization failures that never clear re-raise ConflictError, not 'unavailable'."""

    def conflicting() -> None:
        raise taskcore.ConflictError("40001", sqlstate="40001")

    with taskcore.testing.no_retry_waits(), pytest.raises(taskcore.ConflictError):
        call_with_retries("op", conflicting, RetryPolicy(attempts=3), _deadline())


def test_conflict_retries_do_not_spend_the_retry_budget() -> None:
    """Serialization conflicts on a healthy database never push a process into fail-fast."""
    from taskcore.budget import RetryBudget

    budget = RetryBudget(ratio=0.0, floor=0.0)  # no retry allowed for outages at all
    calls = []

    def contended() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise taskcore.ConflictError("40001", sqlstate="40001")
        return "done"

    with taskcore.testing.no_retry_waits():
        assert (
            call_with_retries("op", contended, RetryPolicy(attempts=5), _deadline(), budget=budget)
            == "done"
        )
    assert not budget.exhausted
