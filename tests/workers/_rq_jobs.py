"""The RQ jobs the worker tests run: one that stores a task, with pause points, and a gate."""

from __future__ import annotations

from _worker_hooks import pause_first_delivery
from rq import Retry, get_current_job

from taskcore import TaskCreate, UnitOfWork
from taskcore.integrations.rq import unit_job

#: Immediate re-runs (no scheduler needed), enough to outlast the tests' outages.
RETRY = Retry(max=200, interval=0)


@unit_job(retry=RETRY)
def record(uow: UnitOfWork, owner: str, n: int, pause: str | None = None) -> int:
    """Store task ``job <n>`` for ``owner``; optionally stop before COMMIT."""
    uow.tasks.create(TaskCreate(title=f"job {n}"), user_id=owner)
    if pause == "before_commit":
        job = get_current_job()
        assert job is not None
        pause_first_delivery(pause, job.id)
    return n


def gate(name: str) -> None:
    """A job that touches no database: it waits at pause point ``name`` until released."""
    pause_first_delivery(name, name)
