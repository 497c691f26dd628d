"""Celery tasks whose body runs as a keyed, retried unit of work (``taskcore[celery]``).

::

    app = Celery("jobs", broker="amqp://guest:guest@127.0.0.1:5672//")

    @unit_task(app)
    def add_task(uow: UnitOfWork, user_id: str, title: str) -> int:
        return uow.tasks.create(TaskCreate(title=title), user_id=user_id).id

    add_task.delay("u1", "Buy milk")

Everything else is Celery's own machinery, configured on :class:`UnitTask`: the message is
acknowledged after the unit ran (``acks_late``) and given back to the broker when the worker
process dies mid-job (``reject_on_worker_lost``), so a killed job is redelivered; the errors in
:data:`~taskcore.integrations.RETRY_ON` go to Celery's ``autoretry_for`` (the retry keeps the
task id, hence the key); each worker process uses a pool of its own (signal handlers below).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import celery  # type: ignore[import-untyped]
from celery import signals

import taskcore
from taskcore.database import Database
from taskcore.integrations import RETRY_ON, run_once
from taskcore.unit_of_work import UnitOfWork

__all__ = ["UnitTask", "unit_task"]

P = ParamSpec("P")
T = TypeVar("T")

_handles: list[Database] = []  # the Database handles given to unit_task, disposed with the default


class UnitTask(celery.Task):  # type: ignore[misc]  # Celery ships no type information
    """Base class of the tasks :func:`unit_task` makes; each setting can be overridden per task."""

    #: Acknowledge after the job ran: a worker that dies mid-job leaves the message unacked.
    acks_late = True
    #: Requeue the message when the worker process was killed (SIGKILL, OOM) instead of failing
    #: the task; the redelivery claims the same key, so it cannot apply the job twice.
    reject_on_worker_lost = True
    #: taskcore gave up in-process, or the COMMIT outcome is unknown: Celery's retry, later.
    autoretry_for = RETRY_ON
    retry_backoff = True
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 10
    #: What runs the units (a ``taskcore.Database``); None: taskcore's default handle.
    database: Database | None = None

    def delivery_key(self) -> str:
        """The key of the job: the same for every delivery and every retry of one task id."""
        return f"celery:{self.name}:{self.request.id}"


def unit_task(
    app: Any, *, database: Database | None = None, **options: Any
) -> Callable[[Callable[Concatenate[UnitOfWork, P], T]], Any]:
    """Register ``fn(uow, *args, **kwargs)`` as a Celery task of ``app`` run by :func:`run_once`.

    ``options`` go to ``app.task`` (``base`` defaults to :class:`UnitTask`, ``bind`` is always
    True). Callers pass the arguments after ``uow``; a redelivery of a job whose unit already
    committed returns None.
    """
    _connect_worker_signals()
    if database is not None and database not in _handles:
        _handles.append(database)
    options.setdefault("base", UnitTask)

    def register(fn: Callable[Concatenate[UnitOfWork, P], T]) -> Any:
        @functools.wraps(fn)
        def run(self: UnitTask, *args: Any, **kwargs: Any) -> T | None:
            return run_once(
                self.delivery_key(),
                lambda uow: fn(uow, *args, **kwargs),
                database=self.database,
                name=self.name,
            )

        # Celery checks call arguments against this: the job's own, after `uow`.
        params = list(inspect.signature(fn).parameters.values())[1:]
        self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        run.__signature__ = inspect.Signature([self_param, *params])  # type: ignore[attr-defined]
        return app.task(bind=True, database=database, **options)(run)

    return register


def _dispose_pools(**_: Any) -> None:
    """Close this process's pooled connections (the default handle's and unit_task's)."""
    taskcore.dispose()
    for handle in _handles:
        handle.dispose()


def _connect_worker_signals() -> None:
    # worker_init: the main process closes its pool before it forks the pool processes (it
    # runs no job), so no pooled connection exists to cross the fork. worker_process_init:
    # each pool process starts with an empty pool of its own (taskcore also drops a pool
    # inherited through fork by itself, without closing the parent's sockets).
    # worker_process_shutdown: a process leaving (warm shutdown, max_tasks_per_child) closes
    # its connections properly instead of leaving the server to notice the dead socket.
    for signal in (
        signals.worker_init,
        signals.worker_process_init,
        signals.worker_process_shutdown,
    ):
        signal.connect(_dispose_pools, weak=False, dispatch_uid=f"taskcore.{signal.name}")
