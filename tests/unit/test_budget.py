"""Retry budget: a floor, a share of successes, fail-fast with probes, recovery on success."""

from __future__ import annotations

import time

from taskcore.budget import RetryBudget


def test_floor_allows_a_few_retries_with_no_successes() -> None:
    """With no successes, floor * window retries are allowed, then the budget refuses."""
    budget = RetryBudget(ratio=0.2, floor=0.5, window=10.0)
    assert [budget.spend() for _ in range(6)] == [True] * 5 + [False]
    assert budget.exhausted


def test_successes_buy_retries() -> None:
    """Each success adds ratio retries to the budget."""
    budget = RetryBudget(ratio=0.5, floor=0.0, window=10.0)
    assert budget.spend() is False
    budget = RetryBudget(ratio=0.5, floor=0.0, window=10.0)
    for _ in range(4):
        budget.record_success()
    assert [budget.spend() for _ in range(3)] == [True, True, False]


def test_exhausted_budget_fails_fast_and_probes_at_most_once_per_interval() -> None:
    """Once spent, calls are refused without trying, except one probe per probe interval."""
    budget = RetryBudget(ratio=0.0, floor=0.0, window=10.0, probe_interval=0.2)
    assert budget.spend() is False
    admitted = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        admitted += budget.admit()
    # probes come every 0.1-0.2 s (jittered): about 5-10 in one second, never a flood
    assert 4 <= admitted <= 11


def test_a_success_closes_fail_fast_mode() -> None:
    """The first successful call ends fail-fast mode: every call is admitted again."""
    budget = RetryBudget(ratio=0.0, floor=0.0, probe_interval=60.0)
    budget.spend()
    assert budget.admit() is False
    budget.record_success()
    assert not budget.exhausted
    assert all(budget.admit() for _ in range(100))
