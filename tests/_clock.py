"""A fake monotonic clock for tests whose behaviour depends on time: they run exactly, instantly.

Pass it where taskcore takes a clock (``Deadline(seconds, clock)``, ``RetryBudget(clock=...)``)
and its ``sleep`` where taskcore takes a sleep (``call_with_retries(..., sleep=clock.sleep)``):
time moves only when a test (or a retry's wait) moves it.
"""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A monotonic clock that only moves when told to (``advance``) or when something sleeps."""

    def __init__(self, now: float = 0.0) -> None:
        """Start at ``now`` (seconds), with nothing slept."""
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        """The current fake time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """Record the wait and advance the clock instead of sleeping."""
        self.slept.append(seconds)
        self.advance(seconds)
