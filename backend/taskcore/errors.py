"""The exceptions taskcore raises: one small, sanitised hierarchy."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConflictError",
    "ConnectionRejectedError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "NotFoundError",
    "PoolExhaustedError",
    "TaskcoreError",
    "TransientError",
    "UsageError",
    "ValidationError",
]


class TaskcoreError(Exception):
    """Base class of every error taskcore raises.

    Messages, ``args`` and attributes never contain a password, a DSN, SQL text or a bound
    parameter value; the original driver exception is not chained (no ``__cause__`` and no
    ``__context__``), because its text carries exactly those.
    """

    #: Re-running the whole unit of work may succeed.
    retryable: bool = False
    #: False only when a COMMIT may or may not have been applied.
    outcome_known: bool = True

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r}, sqlstate={self.sqlstate!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable whatever a subclass's __init__ takes (worker frameworks ship errors
        # between processes): rebuilt from its message and attributes, __init__ not called.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[TaskcoreError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigurationError(TaskcoreError):
    """The settings are invalid (for example a malformed DATABASE_URL); nothing was contacted."""


class ValidationError(TaskcoreError, ValueError):
    """Input was refused before reaching the database; nothing was changed."""

    def __init__(self, message: str, *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class NotFoundError(TaskcoreError, LookupError):
    """The task does not exist, or belongs to another user."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


class UsageError(TaskcoreError, RuntimeError):
    """The API was used against its contract (re-entered unit of work, write in read-only mode)."""


class DatabaseError(TaskcoreError):
    """The database refused the work for a reason that retrying will not fix."""

    def __init__(
        self, message: str, *, sqlstate: str | None = None, driver_error: str | None = None
    ) -> None:
        super().__init__(message, sqlstate=sqlstate)
        #: Class name of the driver's exception (e.g. ``"UniqueViolation"``), never its text.
        self.driver_error = driver_error


class ConnectionRejectedError(DatabaseError):
    """The server refused the connection for a permanent reason; it was tried once.

    Wrong credentials, unknown database or host, disabled endpoint, exhausted quota.
    """


class TransientError(DatabaseError):
    """The work failed for a reason that may pass; re-running it whole is safe.

    Nothing was applied, except when ``maybe_applied`` is set (a keyed write whose reply was
    lost, which a re-run with the same key resolves).
    """

    retryable = True
    #: The server or pooler is shedding load (rate limit, no free slots): back off longer.
    backpressure: bool = False
    #: A keyed write whose reply was lost: it may have been applied, and re-running it (same
    #: key) finds out. If the retries give up, the outcome is unknown, not "not applied".
    maybe_applied: bool = False


class ConflictError(TransientError):
    """A serialization failure or deadlock (40001 / 40P01); re-running the whole unit is safe."""


class PoolExhaustedError(TransientError):
    """Back-pressure: every pooled connection stayed busy until the call's deadline.

    Nothing was sent. It is retryable: a later call (or the caller's own queue) may find a
    free connection; a bigger ``pool_size`` or fewer concurrent callers fixes it for good.
    """

    backpressure = True


class DatabaseUnavailableError(DatabaseError):
    """The database could not be reached before the retry policy gave up.

    ``reason`` says why it stopped: ``"attempts"``, ``"deadline"`` or ``"budget"``.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        elapsed: float,
        sqlstate: str | None = None,
        driver_error: str | None = None,
        reason: str = "attempts",
    ) -> None:
        super().__init__(message, sqlstate=sqlstate, driver_error=driver_error)
        self.attempts = attempts
        self.elapsed = elapsed
        self.reason = reason


class CommitOutcomeUnknownError(DatabaseError):
    """The connection failed while COMMIT was in flight: the work may or may not have been applied.

    It is never re-run automatically, since that could apply it twice.
    """

    outcome_known = False
