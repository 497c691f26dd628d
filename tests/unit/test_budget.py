"""Retry budget: a floor, a share of successes, fail-fast with probes, recovery on success.

Every test drives the budget's injected clock (tests/_clock.py) and, where probes are jittered,
its jitter source, so each count and each probe time is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import cycle

from _clock import FakeClock
from taskcore.budget import RetryBudget

STEP = 1 / 8  # seconds; a power of two, so fake times add up exactly


def _draws(values: Iterable[float]) -> Callable[[], float]:
    """A jitter source returning ``values`` in turn, forever."""
    return cycle(values).__next__


def _admitted_times(budget: RetryBudget, clock: FakeClock, until: float) -> list[float]:
    """Call ``admit`` every STEP seconds up to ``until``; the times at which it said yes."""
    admitted = []
    while clock.now < until:
        if budget.admit():
            admitted.append(clock.now)
        clock.advance(STEP)
    return admitted


def test_floor_allows_a_few_retries_with_no_successes() -> None:
    """With no successes, floor * window retries are allowed, then the budget refuses."""
    budget = RetryBudget(ratio=0.2, floor=0.5, window=10.0, clock=FakeClock())
    assert [budget.spend() for _ in range(6)] == [True] * 5 + [False]
    assert budget.exhausted


def test_successes_buy_retries() -> None:
    """Each success adds ratio retries to the budget."""
    budget = RetryBudget(ratio=0.5, floor=0.0, window=10.0, clock=FakeClock())
    assert budget.spend() is False
    budget = RetryBudget(ratio=0.5, floor=0.0, window=10.0, clock=FakeClock())
    for _ in range(4):
        budget.record_success()
    assert [budget.spend() for _ in range(3)] == [True, True, False]


def test_retries_and_successes_older_than_the_window_no_longer_count() -> None:
    """Spent retries leave the window after `window` seconds, and so do the successes that bought them."""
    clock = FakeClock()
    budget = RetryBudget(ratio=1.0, floor=0.5, window=10.0, clock=clock)
    assert [budget.spend() for _ in range(5)] == [True] * 5  # the floor: 0.5 * 10
    clock.advance(10.0 + STEP)
    assert [budget.spend() for _ in range(5)] == [True] * 5  # the first five have aged out
    budget.record_success()  # +1 retry while it is in the window
    assert budget.spend() is True
    clock.advance(10.0 + STEP)
    assert [budget.spend() for _ in range(6)] == [True] * 5 + [False]  # the success aged out too


def test_exhausted_budget_fails_fast_and_probes_once_per_jittered_interval() -> None:
    """Once spent, calls are refused without trying, except one probe per 0.5-1 x probe interval."""
    clock = FakeClock()
    # Draws 0.0 and 0.5 place probes 0.5 s and 0.75 s after the previous one.
    budget = RetryBudget(
        ratio=0.0, floor=0.0, window=10.0, probe_interval=1.0, clock=clock, jitter=_draws([0, 0.5])
    )
    assert budget.spend() is False  # at t=0: exhausted, first probe due at 0.5
    assert budget.exhausted
    assert _admitted_times(budget, clock, until=4.0) == [0.5, 1.25, 1.75, 2.5, 3.0, 3.75]
    assert budget.exhausted  # probes that fail (no success recorded) keep it closed


def test_default_jitter_keeps_every_probe_gap_within_half_to_one_interval() -> None:
    """With the default jitter source, each probe comes 0.5-1 x probe interval after the last."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, floor=0.0, probe_interval=2.0, clock=clock)
    budget.spend()
    times = _admitted_times(budget, clock, until=400.0)
    gaps = [later - earlier for earlier, later in zip([0.0, *times], times, strict=False)]
    assert len(gaps) >= 200  # at most one probe per second over 400 s
    assert all(1.0 <= gap <= 2.0 + STEP for gap in gaps)  # STEP: admit is asked every STEP
    assert len(set(gaps)) > 1  # jittered, so a fleet does not probe in step


def test_a_success_closes_fail_fast_mode() -> None:
    """The first successful call ends fail-fast mode: every call is admitted again."""
    budget = RetryBudget(ratio=0.0, floor=0.0, probe_interval=60.0, clock=FakeClock())
    budget.spend()
    assert budget.admit() is False
    budget.record_success()
    assert not budget.exhausted
    assert all(budget.admit() for _ in range(100))
