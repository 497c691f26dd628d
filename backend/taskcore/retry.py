"""Retry policy: bounded, jittered, floored backoff with a deadline, on tenacity underneath."""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from taskcore import events
from taskcore._deadline import Deadline
from taskcore.budget import RetryBudget
from taskcore.config import Settings
from taskcore.errors import (
    CommitOutcomeUnknownError,
    ConflictError,
    DatabaseUnavailableError,
    PoolExhaustedError,
    TaskcoreError,
    TransientError,
)
from taskcore.events import EventHub

__all__ = ["RetryPolicy", "call_with_retries", "no_retry_waits"]

T = TypeVar("T")
_log = logging.getLogger("taskcore")

#: Back-pressure (rate limits, no free slots) waits this many times longer, and at least 1 s.
BACKPRESSURE_FACTOR = 4.0
BACKPRESSURE_FLOOR = 1.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: at most ``attempts`` tries, all within the call's deadline.

    The n-th wait is ``min(wait_max, wait_initial * 2**(n-1)) + uniform(0, wait_jitter)``:
    exponential with a floor (it never drops near zero, unlike "full jitter"), so a waking
    compute gets real time, and jittered so a fleet does not retry in lock-step. A wait that
    would end past the deadline is not started: the call gives up instead.
    """

    attempts: int = 10
    wait_initial: float = 0.1
    wait_max: float = 5.0
    wait_jitter: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy configured by TASKCORE_RETRY_* settings."""
        return cls(
            attempts=settings.retry_attempts,
            wait_initial=settings.retry_wait_initial,
            wait_max=settings.retry_wait_max,
            wait_jitter=settings.retry_wait_jitter,
        )

    def wait(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.wait_max, self.wait_initial * 2.0 ** min(attempt - 1, 64))
        if isinstance(error, TransientError) and error.backpressure:
            base = max(BACKPRESSURE_FLOOR, base * BACKPRESSURE_FACTOR)
        return base + random.uniform(0, self.wait_jitter)


_waits_enabled = True


@contextlib.contextmanager
def no_retry_waits() -> Iterator[None]:
    """Test switch: retries happen at once (attempt limits still apply, waits are skipped)."""
    global _waits_enabled  # noqa: PLW0603 - a process-wide switch, like stamina.set_testing
    previous, _waits_enabled = _waits_enabled, False
    try:
        yield
    finally:
        _waits_enabled = previous


def pause(seconds: float) -> None:
    """Sleep between attempts (skipped under :func:`no_retry_waits`)."""
    if _waits_enabled:
        time.sleep(seconds)


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, TaskcoreError) and error.retryable


def call_with_retries(
    operation: str,
    attempt: Callable[[], T],
    policy: RetryPolicy,
    deadline: Deadline,
    *,
    budget: RetryBudget | None = None,
    hub: EventHub = events.process,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Run ``attempt`` until it succeeds, fails permanently, or the policy or deadline stop it.

    This is the one retry loop of a public call. Only errors marked ``retryable`` are retried.
    What the caller gets when it stops is the outcome table in contracts/errors-and-retries.md:
    a write that may have been applied -> CommitOutcomeUnknownError; a conflict or an
    exhausted pool -> that error; otherwise DatabaseUnavailableError saying why it stopped.
    With a ``budget``, each retry spends from it, and once it is spent calls fail fast.
    """
    if budget is not None and budget.exhausted:
        _admit(operation, budget, hub)
    try:
        result = attempt()
    except TaskcoreError as exc:
        if not exc.retryable:
            raise
        first_failure: TaskcoreError = exc
    else:
        if budget is not None:
            budget.record_success()
        return result
    return _retry_after(
        operation, attempt, first_failure, policy, deadline, budget=budget, hub=hub, sleep=sleep
    )


def _admit(operation: str, budget: RetryBudget, hub: EventHub) -> None:
    """Fail fast (DatabaseUnavailableError) if the spent ``budget`` refuses a first attempt."""
    if budget.admit():
        return
    hub.emit(events.GaveUp(operation, 0, 0.0, "budget", None))
    raise DatabaseUnavailableError(
        f"database unavailable: {operation} failed fast; this process spent its retry "
        f"budget and is probing the database every {budget.probe_interval:g}s or so",
        attempts=0,
        elapsed=0.0,
        reason="budget",
    )


def _retry_after(
    operation: str,
    attempt: Callable[[], T],
    first_failure: TaskcoreError,
    policy: RetryPolicy,
    deadline: Deadline,
    *,
    budget: RetryBudget | None = None,
    hub: EventHub = events.process,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """The retries of a call whose first attempt failed with the retryable ``first_failure``.

    Almost every call succeeds first time, so the first attempt runs without any of this
    (:func:`call_with_retries`); tenacity's machinery is only built once an attempt has failed,
    and is handed that failure as its attempt 1.
    """
    refused_by_budget = False
    maybe_applied = isinstance(first_failure, TransientError) and first_failure.maybe_applied

    def tracked() -> T:
        nonlocal maybe_applied
        try:
            return attempt()
        except TransientError as exc:
            maybe_applied = maybe_applied or exc.maybe_applied
            raise

    replayed = False

    def replay_then_attempt() -> T:
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first_failure
        return tracked()

    def out_of_budget(state: tenacity.RetryCallState) -> bool:
        nonlocal refused_by_budget
        # The budget sheds load when the database is unreachable. A retry that resolves a
        # lost reply and a conflict retry (the database is up and answering) are not that.
        if budget is None or maybe_applied or isinstance(_outcome_error(state), ConflictError):
            return False
        if budget.spend():
            return False
        refused_by_budget = True
        hub.emit(events.BudgetExhausted(operation))
        return True

    def out_of_time(state: tenacity.RetryCallState) -> bool:
        return deadline.remaining() <= (state.upcoming_sleep or 0.0)

    retrying = tenacity.Retrying(
        stop=_Stop(policy.attempts, out_of_time, out_of_budget),
        wait=lambda state: policy.wait(state.attempt_number, _outcome_error(state)),
        retry=tenacity.retry_if_exception(_is_retryable),
        before_sleep=lambda state: _log_retry(operation, state, hub),
        sleep=sleep or pause,
        reraise=True,
    )
    try:
        result = retrying(replay_then_attempt)
    except TransientError as exc:
        last = exc
    else:
        if budget is not None:
            budget.record_success()
        return result
    attempts = int(retrying.statistics.get("attempt_number", 1))
    elapsed = deadline.elapsed()
    raise _gave_up(
        operation, last, attempts, elapsed, maybe_applied, refused_by_budget, policy, hub
    )


class _Stop(tenacity.stop.stop_base):
    """Stop after the policy's attempts, before a wait that would pass the deadline, or when
    the budget refuses (checked last, so it is only spent on a retry that will happen)."""

    def __init__(
        self,
        attempts: int,
        *checks: Callable[[tenacity.RetryCallState], bool],
    ) -> None:
        self._attempts = attempts
        self._checks = checks

    def __call__(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= self._attempts:
            return True
        return any(check(state) for check in self._checks)


def _gave_up(
    operation: str,
    last: TransientError,
    attempts: int,
    elapsed: float,
    maybe_applied: bool,
    refused_by_budget: bool,
    policy: RetryPolicy,
    hub: EventHub,
) -> TaskcoreError:
    """The error a call that stopped retrying raises (the outcome table's last column)."""
    error: TaskcoreError
    if maybe_applied:
        reason = "unknown"
        error = CommitOutcomeUnknownError(
            f"{operation}: a write's reply was lost and the retries that would have resolved "
            f"it failed; it may or may not have been applied: {last.args[0]}",
            sqlstate=last.sqlstate,
            driver_error=last.driver_error,
        )
    elif isinstance(last, ConflictError | PoolExhaustedError):
        reason = "conflict" if isinstance(last, ConflictError) else "pool"
        error = last
    else:
        reason = (
            "budget"
            if refused_by_budget
            else "attempts"
            if attempts >= policy.attempts
            else "deadline"
        )
        error = DatabaseUnavailableError(
            f"database unavailable: {operation} gave up ({reason}) after {attempts} "
            f"attempt(s) in {elapsed:.1f}s; last error: {last.args[0]}",
            attempts=attempts,
            elapsed=elapsed,
            sqlstate=last.sqlstate,
            driver_error=last.driver_error,
            reason=reason,
        )
    hub.emit(events.GaveUp(operation, attempts, elapsed, reason, last.sqlstate))
    _log.warning(
        "%s: gave up after %d attempt(s) in %.1fs (%s)",
        operation,
        attempts,
        elapsed,
        reason,
        extra={
            "taskcore_event": "retry_gave_up",
            "operation": operation,
            "attempts": attempts,
            "elapsed": elapsed,
            "reason": reason,
            "sqlstate": last.sqlstate,
        },
    )
    return error


def _outcome_error(state: tenacity.RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None


def _log_retry(operation: str, state: tenacity.RetryCallState, hub: EventHub) -> None:
    error = _outcome_error(state)
    wait = state.upcoming_sleep
    sqlstate = getattr(error, "sqlstate", None)
    driver = getattr(error, "driver_error", None)
    kind = type(error).__name__
    hub.emit(events.RetryScheduled(operation, state.attempt_number, wait, kind, sqlstate))
    # Only names and codes: never str(error) of a driver exception, never arguments.
    _log.warning(
        "%s: attempt %d failed with %s (%s, sqlstate %s); retrying in %.2fs",
        operation,
        state.attempt_number,
        kind,
        driver or "-",
        sqlstate or "none",
        wait,
        extra={
            "taskcore_event": "retry_scheduled",
            "operation": operation,
            "attempt": state.attempt_number,
            "wait": wait,
            "error": kind,
            "driver_error": driver,
            "sqlstate": sqlstate,
        },
    )
