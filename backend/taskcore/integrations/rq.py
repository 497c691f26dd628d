"""RQ jobs whose body runs as a keyed, retried unit of work (``taskcore[rq]``, RQ >= 2.1).

::

    @unit_job
    def add_task(uow: UnitOfWork, user_id: str, title: str) -> int:
        return uow.tasks.create(TaskCreate(title=title), user_id=user_id).id

    Queue(connection=Redis()).enqueue(add_task, "u1", "Buy milk")

The key is the RQ job id, which RQ keeps when it retries or requeues the job. When taskcore
gives up (the errors in :data:`~taskcore.integrations.RETRY_ON`) the job returns ``retry``, an
``rq.Retry``, which makes RQ run it again under the same id (intervals need the scheduler:
``rq worker --with-scheduler``); once ``retry.max`` runs were used, the error is raised and the
job fails as usual. A work horse is a fork of the worker: taskcore drops any pool inherited
through the fork without closing the parent's sockets, and the horse opens its own connection.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from rq import Retry, get_current_job

from taskcore.database import Database
from taskcore.errors import UsageError
from taskcore.integrations import RETRY_ON, run_once
from taskcore.unit_of_work import UnitOfWork

__all__ = ["DEFAULT_RETRY", "delivery_key", "unit_job"]

P = ParamSpec("P")
T = TypeVar("T")
_log = logging.getLogger("taskcore")

#: Up to 6 more runs, 1 s to 60 s apart (about 2 minutes in all) before the job fails.
DEFAULT_RETRY = Retry(max=6, interval=[1, 5, 10, 20, 30, 60])


def delivery_key() -> str:
    """The key of the running RQ job: the same for every run of one job id."""
    job = get_current_job()
    if job is None:
        raise UsageError("delivery_key() is only available inside a running RQ job")
    return f"rq:{job.id}"


@overload
def unit_job(fn: Callable[Concatenate[UnitOfWork, P], T], /) -> Callable[P, Any]: ...


@overload
def unit_job(
    *, database: Database | None = None, retry: Retry | None = DEFAULT_RETRY
) -> Callable[[Callable[Concatenate[UnitOfWork, P], T]], Callable[P, Any]]: ...


def unit_job(
    fn: Callable[Concatenate[UnitOfWork, P], T] | None = None,
    /,
    *,
    database: Database | None = None,
    retry: Retry | None = DEFAULT_RETRY,
) -> Any:
    """Make ``fn(uow, *args, **kwargs)`` an RQ job function run by :func:`run_once`.

    Enqueue it with the arguments after ``uow``. ``retry=None`` raises taskcore's errors at
    once (RQ's own ``Retry`` given at enqueue time, if any, then applies to them as to any
    error). A redelivery of a job whose unit already committed returns None.
    """

    def decorate(fn: Callable[Concatenate[UnitOfWork, P], T]) -> Callable[P, Any]:
        name = f"{fn.__module__}.{fn.__qualname__}"

        @functools.wraps(fn)
        def job(*args: P.args, **kwargs: P.kwargs) -> Any:
            key = delivery_key()
            try:
                return run_once(
                    key, lambda uow: fn(uow, *args, **kwargs), database=database, name=name
                )
            except RETRY_ON as error:
                current = get_current_job()
                used = (current.number_of_retries or 0) if current is not None else 0
                if retry is None or used >= retry.max:
                    raise
                _log.warning(
                    "job handed back to RQ for a later retry",
                    extra={"taskcore_event": "job_retry_requested", "error": type(error).__name__},
                )
                return retry

        # What callers enqueue: the job's own arguments, after `uow`.
        params = list(inspect.signature(fn).parameters.values())[1:]
        job.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return job

    return decorate if fn is None else decorate(fn)
