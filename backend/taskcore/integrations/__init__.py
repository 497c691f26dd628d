"""Job bodies of task queues (Celery, RQ) run as keyed, retried units of work.

The adapters (:mod:`taskcore.integrations.celery`, :mod:`taskcore.integrations.rq`) only add
what each framework lacks; this module holds what they share: :func:`run_once`, which claims
the job's delivery key inside the unit so that a redelivered job finds its first delivery's
effect, and :data:`RETRY_ON`, the errors a job hands back to its framework's own retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from taskcore import Database, default_database
from taskcore.errors import CommitOutcomeUnknownError, DatabaseUnavailableError, TransientError
from taskcore.unit_of_work import UnitOfWork

__all__ = ["RETRY_ON", "run_once"]

T = TypeVar("T")
_log = logging.getLogger("taskcore")

#: Errors after which the framework should run the job again later, with the same delivery
#: identity (so the same key): taskcore gave up retrying in-process (DatabaseUnavailableError,
#: or a TransientError such as PoolExhaustedError left over when the attempts ran out), or the
#: connection died while COMMIT was in flight (CommitOutcomeUnknownError). The re-run claims
#: the same key, so it either finds the first run's commit and does nothing, or applies once.
RETRY_ON: tuple[type[Exception], ...] = (
    TransientError,
    DatabaseUnavailableError,
    CommitOutcomeUnknownError,
)


def run_once(
    key: str,
    fn: Callable[[UnitOfWork], T],
    *,
    database: Database | None = None,
    name: str | None = None,
) -> T | None:
    """Run ``fn(uow)`` in a retried unit of work (``database.run``) that first claims ``key``.

    The claim commits with the unit: if a unit with the same key already committed (the job was
    delivered again after its first delivery committed but before the broker heard so), ``fn``
    is not run and None is returned; the first delivery's return value is not recorded.
    ``database`` defaults to taskcore's default handle; ``name`` (default: ``fn``'s qualified
    name) names the unit in retry events and logs.
    """

    def unit(uow: UnitOfWork) -> T | None:
        if not uow.claim(key):
            _log.info(
                "job already applied by an earlier delivery; skipped",
                extra={"taskcore_event": "job_already_applied"},
            )
            return None
        return fn(uow)

    unit.__qualname__ = name or str(getattr(fn, "__qualname__", "job"))
    return (database or default_database()).run(unit)
