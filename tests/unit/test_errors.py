"""Every taskcore error survives pickling (Celery, RQ and process pools ship them between processes)."""

from __future__ import annotations

import pickle

import pytest

from taskcore import errors

SAMPLES: list[errors.TaskcoreError] = [
    errors.ConfigurationError("bad url"),
    errors.ValidationError("invalid task: title is required", fields=("title",)),
    errors.NotFoundError(7),
    errors.UsageError("re-entered"),
    errors.DatabaseError("refused", sqlstate="23505", driver_error="UniqueViolation"),
    errors.ConnectionRejectedError("wrong password", sqlstate="28P01"),
    errors.TransientError("connection lost", driver_error="OperationalError"),
    errors.ConflictError("serialization failure", sqlstate="40001"),
    errors.PoolExhaustedError("pool exhausted"),
    errors.DatabaseUnavailableError(
        "database unavailable: gave up",
        attempts=3,
        elapsed=1.5,
        sqlstate="57P01",
        reason="deadline",
    ),
    errors.CommitOutcomeUnknownError("lost COMMIT reply", sqlstate="08006"),
]


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: type(e).__name__)
def test_errors_pickle_with_their_message_and_attributes(error: errors.TaskcoreError) -> None:
    error.maybe_applied = isinstance(error, errors.TransientError)  # type: ignore[attr-defined]
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 -- our own bytes, just made
    assert type(copy) is type(error)
    assert copy.args == error.args and str(copy) == str(error) and repr(copy) == repr(error)
    assert vars(copy) == vars(error)
    assert copy.retryable == error.retryable and copy.outcome_known == error.outcome_known
