"""The Celery app the worker tests run: one job that stores a task, with pause points.

Imported by the test (to send jobs and read results) and by the worker processes it starts
(``celery -A _celery_jobs worker``); everything comes from the environment the test sets.
"""

from __future__ import annotations

import os
from typing import Any

from _worker_hooks import count, pause_first_delivery
from celery import Celery, current_task, signals  # type: ignore[import-untyped]

from taskcore import TaskCreate, UnitOfWork
from taskcore.integrations.celery import unit_task

app = Celery(
    "taskcore_workers",
    broker=os.environ.get("WORKERS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("WORKERS_REDIS_URL", "redis://127.0.0.1:6379/0"),
)
app.conf.update(
    task_default_queue=os.environ.get("WORKERS_QUEUE", "taskcore-workers"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@unit_task(app, retry_backoff_max=1, max_retries=100)
def record(uow: UnitOfWork, owner: str, n: int, pause: str | None = None) -> int:
    """Store task ``job <n>`` for ``owner``; optionally stop at a pause point of its unit."""
    uow.tasks.create(TaskCreate(title=f"job {n}"), user_id=owner)
    job_id = current_task.request.id
    if pause == "before_commit":
        pause_first_delivery(pause, job_id)
    elif pause == "after_commit":
        # Runs after COMMIT succeeded, before the task returns (and so before the ack).
        uow.on_commit(lambda: pause_first_delivery("after_commit", job_id))
    return n


def _count_retry(reason: Any = None, **_: Any) -> None:
    """Count Celery retries by the error that caused them."""
    count(f"retry:{type(getattr(reason, 'exc', reason)).__name__}")


signals.task_retry.connect(_count_retry, weak=False)
